"""The watchdog fires each callback at its deadline, wakes only when it must, and
does not keep what was cancelled."""

from __future__ import annotations

import functools
import threading

from agentdata.deadlines import Watchdog


def test_a_nearer_deadline_added_later_still_fires_first() -> None:
    dog = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    try:

        def near() -> None:
            fired.append("near")
            done.set()

        dog.schedule(30.0, lambda: fired.append("far"))
        dog.schedule(0.05, near)
        assert done.wait(10), "the nearer deadline did not wake the watchdog"
        assert fired == ["near"]
    finally:
        dog.stop()


def test_a_later_deadline_does_not_delay_an_earlier_one() -> None:
    dog = Watchdog()
    done = threading.Event()
    try:
        dog.schedule(0.05, done.set)
        dog.schedule(30.0, lambda: None)  # no wake-up needed: the thread waits less already
        assert done.wait(10)
    finally:
        dog.stop()


def test_cancelled_callbacks_never_fire_and_do_not_pile_up() -> None:
    dog = Watchdog()
    fired: list[int] = []
    try:
        handles = [dog.schedule(300.0, functools.partial(fired.append, i)) for i in range(5000)]
        for h in handles:
            dog.cancel(h)
        assert len(dog._heap) <= 2 * len(dog._callbacks) + 1024

        # Cancelled ones due before a sentinel: had they been kept, they would fire first.
        def early() -> None:
            fired.append(-1)

        soon = [dog.schedule(0.01, early) for _ in range(10)]
        for h in soon:
            dog.cancel(h)
        done = threading.Event()
        dog.schedule(0.05, done.set)
        assert done.wait(10)
        assert fired == []
    finally:
        dog.stop()
