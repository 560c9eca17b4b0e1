"""The camelCase names of Stockings 1.2.3, kept in one place.

1.2.3 spelled some of its API in camelCase (``preWrite``, ``postRead``,
``writeDataQueued``, ``handshakeComplete``); 2.x spells it the Python way
and keeps the old names as aliases. Code written for 1.2.3 uses them every
way it can: it reads and calls them on a stocking, assigns
``handshakeComplete``, and overrides the hooks in a subclass under either
spelling, sometimes calling ``super()`` under the other one.

So an alias is not a method of its own that forwards the call, which a
subclass overriding the new name would bypass: both names of a class are
bound to the same object. :func:`install` gives
:class:`~stockings.Stocking` the old names once; :func:`follow_overrides`,
run for every subclass as it is made, keeps the two spellings of a hook in
step.
"""

from __future__ import annotations

from typing import Final

__all__ = ["RENAMED_ATTRIBUTES", "RENAMED_HOOKS", "follow_overrides", "install"]

#: Hooks 1.2.3 named in camelCase, and their names now. A subclass may
#: override either spelling; both then lead to the override.
RENAMED_HOOKS: Final = {
    "preWrite": "pre_write",
    "postRead": "post_read",
    "writeDataQueued": "write_data_queued",
}

#: Properties 1.2.3 named in camelCase (as plain attributes), and their names
#: now. The old name reads and sets what the new one does.
RENAMED_ATTRIBUTES: Final = {
    "handshakeComplete": "handshake_complete",
}


def install(base: type) -> None:
    """Give ``base`` (:class:`~stockings.Stocking`) every 1.2.3 name, as an alias of today's.

    Args:
        base: the class that has the new names (its own or inherited).
    """
    for old, new in RENAMED_HOOKS.items():
        setattr(base, old, getattr(base, new))
    for old, new in RENAMED_ATTRIBUTES.items():
        current: property = getattr(base, new)
        alias = property(current.fget, current.fset, doc=f"1.2.3 spelling of :attr:`{new}`.")
        setattr(base, old, alias)


def follow_overrides(cls: type) -> None:
    """Make a hook that ``cls`` overrides under one spelling answer to the other too.

    A subclass that defines only ``preWrite`` gets ``pre_write`` bound to the
    same function, and the other way round, so that both names reach the
    override and ``super()`` under either spelling reaches the parent's. A
    class that defines both spellings keeps both as they are.

    Args:
        cls: a subclass of :class:`~stockings.Stocking`, just made.
    """
    namespace = cls.__dict__
    for old, new in RENAMED_HOOKS.items():
        if old in namespace and new not in namespace:
            setattr(cls, new, namespace[old])
        elif new in namespace and old not in namespace:
            setattr(cls, old, namespace[new])
