"""The unread-byte count of an inbox, kept from its deliveries (``_unread``), with no sockets."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from stockings._received import MESSAGE_OVERHEAD as W
from stockings._unread import MAX_SPAN, MIN_SPAN, UnreadCount, newest_within, weight_of


class Message:
    """A message as the count sees it: a length (computed in Python, as an ``Assembly``'s)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


class Inbox:
    """An inbox reduced to what the count sees: messages in, oldest out."""

    def __init__(self, low_water: int = 0) -> None:
        self.count = UnreadCount(low_water)
        self.sizes: deque[Message] = deque()
        self.messages = 0
        self.total = 0

    def deliver(self, sizes: list[int]) -> None:
        # As the inbox does: each message weighs its size and the overhead.
        self.sizes.extend(map(Message, sizes))
        self.messages += len(sizes)
        self.total += sum(sizes) + W * len(sizes)
        if self.total >= self.count.due:
            self.count.mark(self.messages, self.total)

    def read(self, n: int) -> None:
        for _ in range(n):
            self.sizes.popleft()

    def bound(self) -> int:
        return self.count.bound(self.messages, self.total, len(self.sizes))

    def exact(self) -> int:
        self.bound()
        return self.count.count(self.sizes, self.messages, self.total)


def test_deliveries_read_whole_are_counted_exactly() -> None:
    inbox = Inbox()
    inbox.deliver([MIN_SPAN])
    inbox.deliver([MIN_SPAN, 100])
    inbox.deliver([7])
    assert inbox.bound() == 2 * MIN_SPAN + 107 + 4 * W
    inbox.read(1)
    assert inbox.bound() == MIN_SPAN + 107 + 3 * W
    inbox.read(2)
    assert inbox.bound() == 7 + W
    inbox.read(1)
    assert inbox.bound() == 0


def test_a_delivery_read_in_part_counts_as_unread_until_an_exact_count_settles_it() -> None:
    inbox = Inbox()
    inbox.deliver([1000] * 10)
    inbox.read(4)
    assert inbox.bound() == 10 * (1000 + W)
    inbox.count.settle(inbox.total, 6 * (1000 + W))
    assert inbox.bound() == 6 * (1000 + W)
    # A count older than what the marks know changes nothing.
    inbox.read(6)
    inbox.count.settle(inbox.total, 6 * (1000 + W))
    assert inbox.bound() == 0


def test_small_deliveries_are_marked_now_and_then_so_marks_stay_few() -> None:
    inbox = Inbox(low_water=1024 * 1024)
    for _ in range(100_000):
        inbox.deliver([10])
    # A mark each MAX_SPAN (a quarter of the low mark is more).
    assert len(inbox.count._marks) <= inbox.total // MAX_SPAN + 1
    inbox.read(100_000 - 1)
    assert 10 + W <= inbox.bound() <= MAX_SPAN + 10 + W


def test_a_low_water_mark_of_zero_stillspans_minspan() -> None:
    inbox = Inbox(low_water=0)
    for _ in range(10_000):
        inbox.deliver([1])
    assert len(inbox.count._marks) <= inbox.total // MIN_SPAN + 1


@given(
    low_water=st.integers(0, 1 << 20),
    steps=st.lists(
        st.one_of(
            st.lists(st.integers(0, 70_000), min_size=1, max_size=8),
            st.integers(0, 20),
        ),
        max_size=60,
    ),
)
def test_the_bound_is_never_below_the_unread_bytes_nor_above_by_more_than_a_mark(
    low_water: int, steps: list[list[int] | int]
) -> None:
    inbox = Inbox(low_water)
    largest = 0
    for step in steps:
        if isinstance(step, list):
            inbox.deliver(step)
            largest = max(largest, sum(step) + W * len(step))
        else:
            inbox.read(min(step, len(inbox.sizes)))
        unread = weight_of(inbox.sizes)
        bound = inbox.bound()
        assert unread <= bound <= unread + inbox.count.span + largest
        if not inbox.sizes:
            assert bound == 0
        if step == 0:
            # Counted exactly, and known so until more is read.
            assert inbox.exact() == unread
            assert inbox.bound() == unread


def test_an_exact_count_counts_only_the_oldest_mark_one_by_one() -> None:
    inbox = Inbox()
    for _ in range(4):
        inbox.deliver([1000] * 100)
    inbox.read(150)
    assert inbox.bound() == 300 * (1000 + W)
    counted: list[int] = []
    original = Message.__len__

    def counting(self: Message) -> int:
        counted.append(1)
        return original(self)

    Message.__len__ = counting  # type: ignore[method-assign]
    try:
        assert inbox.exact() == 250 * (1000 + W)
    finally:
        Message.__len__ = original  # type: ignore[method-assign]
    assert len(counted) == 50
    assert inbox.bound() == 250 * (1000 + W)


def test_a_reader_taking_a_message_during_an_exact_count_gets_a_count_of_a_copy() -> None:
    inbox = Inbox()
    inbox.deliver([1000] * 10)
    inbox.read(3)

    class Taking(Message):
        __slots__ = ()

        def __len__(self) -> int:
            if inbox.sizes and inbox.sizes[0] is self:
                inbox.sizes.popleft()  # as a racing reader would
            return self.size

    inbox.sizes[0] = Taking(1000)
    assert inbox.count.count(inbox.sizes, inbox.messages, inbox.total) == 6 * (1000 + W)


@given(
    sizes=st.lists(st.sampled_from([0, 1, 16, 100, 4096]), max_size=2000),
    limit=st.integers(0, 300_000),
)
def test_newest_within_finds_the_most_newest_messages_that_fit(
    sizes: list[int], limit: int
) -> None:
    # Over 512 sizes, some lists cross the step the sums are taken in.
    inbox = deque(bytes(size) for size in sizes)
    within, weight = newest_within(inbox, limit)
    newest = sizes[len(sizes) - within :]
    assert weight == sum(newest) + W * within <= limit
    assert within == len(sizes) or sum(sizes[len(sizes) - within - 1 :]) + W * (within + 1) > limit
    assert len(inbox) == len(sizes), "the inbox itself was changed"


def test_newest_within_counts_messages_whose_length_runs_python_code() -> None:
    inbox = deque(Message(100) for _ in range(1000))
    assert newest_within(inbox, 10 * (100 + W)) == (10, 10 * (100 + W))
    assert newest_within(inbox, 10 * (100 + W) - 1) == (9, 9 * (100 + W))
    assert newest_within(inbox, 10**9)[0] == 1000


def test_newest_within_crosses_the_steps_it_sums_in() -> None:
    inbox = deque(bytes(100) for _ in range(1500))
    weight = 100 + W
    assert newest_within(inbox, 512 * weight)[0] == 512
    assert newest_within(inbox, 512 * weight - 1)[0] == 511
    assert newest_within(inbox, 700 * weight + 50)[0] == 700
    assert newest_within(inbox, 1500 * weight)[0] == 1500


def test_newest_within_looks_at_a_copy_when_a_reader_takes_a_message_meanwhile() -> None:
    inbox: deque[Message] = deque()

    class Taking(Message):
        __slots__ = ()

        def __len__(self) -> int:
            if len(inbox) > 5:
                inbox.popleft()  # as a racing reader would
            return self.size

    inbox.extend(Taking(100) for _ in range(10))
    assert newest_within(inbox, 3 * (100 + W)) == (3, 3 * (100 + W))
