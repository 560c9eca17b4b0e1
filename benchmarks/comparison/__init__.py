"""The comparison benchmark: stockings against its peers, in one run, one table.

Run it as ``python benchmarks/compare.py``; :mod:`comparison.report` is the
command, the other modules its parts.
"""
