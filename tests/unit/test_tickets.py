"""Tickets: bound to their token, unique, and expired from the front of the store."""

from __future__ import annotations

import time

import pytest

from agentdata.errors import NotFound, PermissionDenied
from agentdata.tokens import Principal, Role
from flight_server.tickets import PREFIX, TicketStore

ALICE = Principal("alice", "alice", Role.READER)
BOB = Principal("bob", "bob", Role.READER)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "monotonic", fake)
    return fake


def test_a_ticket_is_redeemed_only_by_its_token(clock: Clock) -> None:
    store = TicketStore(ttl_s=60)
    entry = store.issue(ALICE, "SELECT 1")
    assert store.redeem(ALICE, entry.ticket).sql == "SELECT 1"
    with pytest.raises(PermissionDenied):
        store.redeem(BOB, entry.ticket)
    with pytest.raises(NotFound):
        store.redeem(ALICE, PREFIX + b"not-issued")


def test_tickets_are_distinct_and_shaped_alike() -> None:
    store = TicketStore(ttl_s=60)
    issued = {store.issue(ALICE, "SELECT 1").ticket for _ in range(1000)}
    assert len(issued) == 1000
    assert {len(t) for t in issued} == {len(PREFIX) + 27}
    assert all(t.startswith(PREFIX) for t in issued)


def test_expired_tickets_leave_the_store_as_new_ones_come(clock: Clock) -> None:
    store = TicketStore(ttl_s=60)
    old = [store.issue(ALICE, f"SELECT {i}") for i in range(100)]
    clock.now += 30
    young = [store.issue(ALICE, f"SELECT {i}") for i in range(100)]
    assert len(store) == 200
    clock.now += 31  # the first 100 are past their TTL, the next 100 are not
    with pytest.raises(NotFound, match="expired"):
        store.redeem(ALICE, old[0].ticket)
    store.issue(ALICE, "SELECT 'new'")
    assert len(store) == 101
    assert store.redeem(ALICE, young[0].ticket).sql == "SELECT 0"
