"""Overlap producing batches with sending them.

Without this, the gRPC thread asks DuckDB for a batch, waits while it is produced,
sends it, and only then asks for the next: production and the network take turns.
`Prefetcher` runs the producer on its own thread, so DuckDB works on batch n+1 while
batch n is on the wire. The producer starts a batch only when fewer than `depth`
produced batches wait to be taken, so a stream holds at most `depth` + 1 batches (the
ones waiting, and the one being sent): with depth 1, two. pyarrow releases
the GIL while DuckDB produces, so the two threads really run at once.

The first `inline` items are produced on the consumer's thread, and the producer
thread (and its queue and locks) is made only when a stream goes on past them: most
agent queries are a batch or two, and starting a thread costs more than they do (about
2 ms under load, measured per point query), while a long stream loses nothing by
overlapping from its third batch on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class Prefetcher(Generic[T]):
    """Iterate `produce()` results (until it raises StopIteration) from a thread."""

    def __init__(
        self,
        produce: Callable[[], T],
        *,
        depth: int = 1,
        name: str = "prefetch",
        inline: int = 2,
    ) -> None:
        self._produce: Callable[[], object] = produce
        self._depth = max(1, depth)
        self._name = name
        self._inline = inline
        self._ended = False
        self._stopped = False
        # Made when the stream goes on past its inline items (see `_start`).
        self._queue: queue.Queue[object] | None = None
        self._slots: threading.Semaphore | None = None
        self._thread: threading.Thread | None = None

    def _start(self) -> queue.Queue[object]:
        self._queue = queue.Queue()
        self._slots = threading.Semaphore(self._depth)
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self._queue

    def _run(self) -> None:
        assert self._queue is not None
        try:
            while self._take_slot():
                try:
                    item: object = self._produce()
                except StopIteration:
                    item = _END
                except BaseException as e:  # handed to the consumer, raised there
                    item = _Failure(e)
                self._queue.put(item)
                if item is _END or isinstance(item, _Failure):
                    return
        finally:
            self._produce = _exhausted  # drop references to the producer's resources

    def _take_slot(self) -> bool:
        """Wait until fewer than `depth` batches wait to be taken; False once closed."""
        assert self._slots is not None
        while not self._stopped:
            if self._slots.acquire(timeout=0.05):
                return not self._stopped
        return False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        if self._inline > 0:
            self._inline -= 1
            try:
                return self._produce()  # type: ignore[return-value]
            except BaseException:
                self._ended = True
                self._produce = _exhausted
                raise
        waiting = self._queue
        if waiting is None:  # past the inline items: overlap from here on
            if self._stopped:
                raise StopIteration
            waiting = self._start()
        item = waiting.get()
        assert self._slots is not None
        self._slots.release()  # taken: the producer may start the next one
        if item is _END:
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.error
        return item  # type: ignore[return-value]

    def close(self, timeout: float = 5.0) -> None:
        """Stop the producer thread (after its current batch) and wait for it."""
        self._stopped = True
        thread = self._thread
        if thread is None:
            self._produce = _exhausted
        elif threading.current_thread() is not thread:
            thread.join(timeout)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _exhausted() -> object:
    raise StopIteration
