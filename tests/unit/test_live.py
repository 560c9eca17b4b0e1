"""LiveSet: the live members, held weakly, without running Python code when one dies."""

from __future__ import annotations

import gc
import sys
import threading
from types import FrameType
from typing import Any

from stockings._live import _PRUNE_FLOOR, LiveSet


class Member:
    """A weakly referenceable object with no finaliser of its own."""


def test_lists_only_the_members_alive() -> None:
    live: LiveSet[Member] = LiveSet()
    kept = [Member() for _ in range(3)]
    for member in kept:
        live.add(member)
    dropped = Member()
    live.add(dropped)
    del dropped
    assert sorted(map(id, live)) == sorted(map(id, kept))


def test_dead_members_are_pruned_as_it_grows() -> None:
    live: LiveSet[Member] = LiveSet()
    for _ in range(100 * _PRUNE_FLOOR):
        live.add(Member())  # each dies at once
    assert list(live) == []
    assert len(live._refs) <= 2 * _PRUNE_FLOOR


def test_a_member_dies_without_a_python_callback() -> None:
    """What a WeakSet does not offer: a Ctrl-C then cannot land in library code and be lost."""
    live: LiveSet[Member] = LiveSet()
    member = Member()
    live.add(member)
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            calls.append(frame.f_code.co_name)

    gc.disable()
    sys.setprofile(profile)
    try:
        del member
    finally:
        sys.setprofile(None)
        gc.enable()
    assert calls == []


def test_threads_adding_at_once_lose_no_live_member() -> None:
    live: LiveSet[Member] = LiveSet()
    kept: list[list[Member]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def add_many(mine: list[Member]) -> None:
        try:
            for n in range(5000):
                member = Member()
                live.add(member)
                if n % 10 == 0:
                    mine.append(member)
                if n % 100 == 0:
                    # Listing while others add, as a fork or exit would.
                    assert len(list(live)) >= len(mine)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=add_many, args=(mine,), name=f"test-adder-{k}")
        for k, mine in enumerate(kept)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    expected = {id(member) for mine in kept for member in mine}
    assert expected <= {id(member) for member in live}
