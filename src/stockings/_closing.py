"""The ``with`` support shared by everything that has a ``close()``."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

__all__ = ["ClosesOnExit"]

_T = TypeVar("_T", bound="ClosesOnExit")


class ClosesOnExit:
    """Makes ``with obj:`` call ``obj.close()`` on the way out, however it leaves."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
