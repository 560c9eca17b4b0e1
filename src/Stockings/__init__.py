"""The Stockings 1.2.3 module name: ``import Stockings`` keeps working.

Every name here is the very object ``stockings`` exports, so classes,
exceptions and ``isinstance`` checks agree whichever name code imports.
"""

from stockings import *
from stockings import __all__, __version__
