"""The gateway's session counts: caps, users, other processes, a full table, a dead holder."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from sluice.proxy.slots import SessionSlots, SlotsUnavailable

FORK = multiprocessing.get_context("fork")


def test_sessions_are_counted_in_up_to_the_cap_and_out_again() -> None:
    slots = SessionSlots()
    assert [slots.try_enter(2) for _ in range(3)] == [True, True, False]
    assert slots.sessions == 2
    slots.leave()
    assert slots.try_enter(2)
    assert not slots.try_enter(2)
    assert slots.try_enter(3)  # a reloaded, higher cap applies at once


def test_each_user_has_their_own_count() -> None:
    slots = SessionSlots()
    assert [slots.try_enter_user("alice", 2) for _ in range(3)] == [True, True, False]
    assert slots.try_enter_user("bob", 2)
    assert slots.user_sessions("alice") == 2
    assert slots.user_sessions("bob") == 1
    assert slots.user_sessions("carol") == 0
    slots.leave_user("alice")
    assert slots.try_enter_user("alice", 2)
    assert not slots.try_enter_user("dave", 0)


def _enter_in_child(
    slots: SessionSlots, user: str, times: int, results: multiprocessing.Queue[list[bool]]
) -> None:
    results.put([slots.try_enter_user(user, 3) and slots.try_enter(4) for _ in range(times)])


def test_workers_forked_from_one_gateway_share_the_counts() -> None:
    slots = SessionSlots()
    assert slots.try_enter_user("alice", 3)
    assert slots.try_enter(4)
    results: multiprocessing.Queue[list[bool]] = FORK.Queue()
    child = FORK.Process(target=_enter_in_child, args=(slots, "alice", 3, results))
    child.start()
    child.join(10)
    assert results.get(timeout=5) == [True, True, False]  # the parent's session counts
    assert slots.user_sessions("alice") == 3
    assert slots.sessions == 3
    assert not slots.try_enter_user("alice", 3)


def test_users_whose_sessions_ended_make_room_for_new_ones() -> None:
    slots = SessionSlots(table_slots=8)
    for n in range(50):  # far more users over time than the table has entries
        user = f"user-{n}"
        assert slots.try_enter_user(user, 1)
        slots.leave_user(user)
    assert all(slots.try_enter_user(f"live-{n}", 1) for n in range(4))
    # Half the table holds users with sessions: a fifth is refused, never miscounted.
    assert not slots.try_enter_user("live-4", 1)
    assert [slots.user_sessions(f"live-{n}") for n in range(4)] == [1, 1, 1, 1]
    slots.leave_user("live-0")
    assert slots.try_enter_user("live-4", 1)


def _die_holding_the_lock(slots: SessionSlots) -> None:
    slots._lock.acquire()
    os._exit(0)


def test_a_lock_left_held_by_a_dead_worker_refuses_instead_of_hanging() -> None:
    slots = SessionSlots(lock_timeout=0.2)
    child = FORK.Process(target=_die_holding_the_lock, args=(slots,))
    child.start()
    child.join(10)
    with pytest.raises(SlotsUnavailable, match="stayed locked"):
        slots.try_enter(10)
    with pytest.raises(SlotsUnavailable):
        slots.try_enter_user("alice", 10)


def test_table_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        SessionSlots(table_slots=12)
