"""The type parameters of :class:`~stockings.Stocking`, and what ``write`` takes.

A stocking is generic in what ``read`` returns and in what ``write`` takes,
because ``post_read`` and ``pre_write`` may change both. Type checkers see
defaults (PEP 696) so that a plain ``Stocking`` reads ``str | bytes`` and
writes one ``str`` or bytes-like message. The interpreter needs no defaults
(the class fills in the second parameter itself) and no package beyond the
standard library: ``typing_extensions`` is imported for type checkers only.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic

from ._framing import Message

__all__ = ["Outgoing", "ReadT", "WriteP", "variadic_signature", "with_default_write_params"]

_F = typing.TypeVar("_F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from typing import TypeAlias

    from typing_extensions import Buffer, ParamSpec, TypeVar

    #: What a plain stocking's ``write`` sends: ``str`` or any bytes-like object.
    Outgoing: TypeAlias = str | Buffer
    #: What ``read`` returns: what ``post_read`` makes of a message.
    ReadT = TypeVar("ReadT", covariant=True, default=Message)
    #: The arguments of ``write``: those ``pre_write`` takes.
    WriteP = ParamSpec("WriteP", default=[Outgoing])
else:
    from typing import ParamSpec, TypeVar

    if sys.version_info >= (3, 12):
        from collections.abc import Buffer

        Outgoing = str | Buffer
    else:
        Outgoing = str | bytes | bytearray | memoryview
    ReadT = TypeVar("ReadT", covariant=True)
    WriteP = ParamSpec("WriteP")


def with_default_write_params(cls: type, params: Any) -> Any:
    """``Stocking[X]`` as ``Stocking[X, ...]``: a ``__class_getitem__`` for the interpreter.

    Type checkers know the default of the second parameter; the interpreter
    (before 3.13) does not, and would refuse one parameter of two.
    """
    if not isinstance(params, tuple):
        params = (params,)
    if len(params) == 1 and len(getattr(cls, "__parameters__", ())) == 2:
        params = (params[0], ...)
    return Generic.__dict__["__class_getitem__"].__get__(None, cls)(params)


def variadic_signature(method: _F) -> _F:
    """Show ``method`` (``help()``, the API docs) as taking ``(self, *args, **kwargs)``.

    For a method that takes its first argument apart, for speed, while its
    documented signature is the variadic one that type checkers see.
    """
    kind = inspect.Parameter
    method.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            kind("self", kind.POSITIONAL_OR_KEYWORD),
            kind("args", kind.VAR_POSITIONAL),
            kind("kwargs", kind.VAR_KEYWORD),
        ],
        return_annotation=None,
    )
    return method
