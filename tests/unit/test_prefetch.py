"""The prefetcher: same items, same order, errors raised where they are consumed, bounded."""

from __future__ import annotations

import time

import pytest

from agentdata.prefetch import Prefetcher


def _producer(items: list[int], fail_at: int | None = None):
    it = iter(items)
    produced: list[int] = []

    def produce() -> int:
        value = next(it)
        if fail_at is not None and value == fail_at:
            raise ValueError(f"failed at {value}")
        produced.append(value)
        return value

    return produce, produced


def test_yields_every_item_in_order() -> None:
    produce, _ = _producer(list(range(100)))
    assert list(Prefetcher(produce, depth=3)) == list(range(100))


def test_an_error_reaches_the_consumer_after_the_items_before_it() -> None:
    produce, _ = _producer(list(range(10)), fail_at=5)
    got: list[int] = []
    with pytest.raises(ValueError, match="failed at 5"):
        for item in Prefetcher(produce):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_runs_ahead_but_never_more_than_depth_and_close_stops_the_thread() -> None:
    produce, produced = _producer(list(range(1000)))
    p = Prefetcher(produce, depth=2, inline=0)
    assert next(p) == 0
    assert p._queue is not None and p._thread is not None  # made once the stream went on
    deadline = time.monotonic() + 5
    while p._queue.qsize() < 2 and time.monotonic() < deadline:
        time.sleep(0.005)  # polling: the producer runs ahead on its own thread
    assert p._queue.qsize() == 2, "the producer did not run ahead of the consumer"
    # Taken (1) + waiting (2): it starts nothing more until one is taken.
    assert len(produced) == 3
    p.close()
    assert not p._thread.is_alive()


def test_a_short_stream_never_starts_the_thread() -> None:
    """The first items are produced on the consumer's thread: a one-batch result costs
    no thread; a longer one overlaps from the item after them."""
    produce, _ = _producer([7])
    p = Prefetcher(produce, inline=2)
    assert list(p) == [7]
    assert p._thread is None
    p.close()  # closing an unstarted prefetcher is fine
    produce, _ = _producer(list(range(5)))
    p = Prefetcher(produce, inline=2)
    assert [next(p), next(p)] == [0, 1]
    assert p._thread is None
    assert list(p) == [2, 3, 4]
    assert p._thread is not None
    p.close()


def test_an_error_in_an_inline_item_ends_the_stream() -> None:
    produce, _ = _producer(list(range(10)), fail_at=1)
    p = Prefetcher(produce, inline=2)
    assert next(p) == 0
    with pytest.raises(ValueError, match="failed at 1"):
        next(p)
    with pytest.raises(StopIteration):
        next(p)
    assert p._thread is None


def test_close_before_the_thread_starts_ends_the_stream() -> None:
    produce, _ = _producer(list(range(10)))
    p = Prefetcher(produce, inline=1)
    assert next(p) == 0
    p.close()
    with pytest.raises(StopIteration):
        next(p)
