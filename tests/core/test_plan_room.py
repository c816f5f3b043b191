"""The room a cold load of ours needs (core/plan/capacity.py): busy clients, holds tried again.

Chaos 0.32.15 seeds 339, 365 and 404: a cold load of ours sent while a client's runner was
loading (or serving the request that loaded it) waited in Ollama's queue, then evicted an
idle kept model of ours, busy clients being no victims (§4.5); the next re-warm evicted the
first again.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.plan.capacity import (
    hold_again,
    hold_below_higher,
    release_holds,
    room_full,
    wait_for_room,
)
from ollama_keepwarm.core.plan.model import is_held
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel
from ollama_keepwarm.core.runners import RunnerProcess, RunnerTable

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
TINY = ModelConfig(name="tiny", keep_alive_s=1800, priority=3)
SMALL = ModelConfig(name="llama3.2:3b", keep_alive_s=3600, priority=5)
BLOBS = {TINY.key: "sha256-ttt", SMALL.key: "sha256-sss", "qwen2.5-coder:7b": "sha256-qqq"}
LATER = NOW + timedelta(seconds=1)


def row(name: str, expires_at: datetime) -> RunningModel:
    return RunningModel(name, 1, 1, "d" * 64, expires_at, 4096)


def table(*blobs: str, visible: bool = True, age: float = 1.0) -> RunnerTable:
    runners = tuple(
        RunnerProcess(10 + i, blob, "llama-server", 1234, {}, 1000.0 - age)
        for i, blob in enumerate(blobs)
    )
    return RunnerTable(visible, "cgroup test", runners, 1000.0)


def snap(at: datetime, *rows: RunningModel) -> PsSnapshot:
    return PsSnapshot(taken_at=at, models=rows)


def kept_states(**changes: object) -> dict[str, plan.ModelState]:
    return {TINY.key: replace(plan.ModelState(), **changes), SMALL.key: plan.ModelState()}  # type: ignore[arg-type]


SMALL_ROW = row("llama3.2:3b", NOW + timedelta(hours=1))
QWEN_IDLE = row("qwen2.5-coder:7b", NOW + timedelta(minutes=20))


@pytest.mark.parametrize(
    ("previous", "current", "runners", "taken"),
    [
        # A runner no row lists, that no call of ours loads: a client's load.
        (None, snap(LATER, SMALL_ROW), table("sha256-sss", "sha256-qqq"), "loading"),
        # Listed now, its lease now + d at both looks: serving the request that loaded it.
        (
            snap(NOW, SMALL_ROW, row("qwen2.5-coder:7b", NOW + timedelta(minutes=30))),
            snap(LATER, SMALL_ROW, row("qwen2.5-coder:7b", LATER + timedelta(minutes=30))),
            table("sha256-sss", "sha256-qqq"),
            "busy",
        ),
        # First listed now, a client's: one look cannot tell, and loads serve a request.
        (
            snap(NOW, SMALL_ROW),
            snap(LATER, SMALL_ROW, QWEN_IDLE),
            table("sha256-sss", "sha256-qqq"),
            "just loaded",
        ),
        # Listed and idle: its lease stands still.
        (
            snap(NOW, SMALL_ROW, QWEN_IDLE),
            snap(LATER, SMALL_ROW, QWEN_IDLE),
            table("sha256-sss", "sha256-qqq"),
            None,
        ),
        # An unlisted runner older than Ollama's load timeout is no load: never waited on.
        (None, snap(LATER, SMALL_ROW), table("sha256-sss", "sha256-qqq", age=400.0), None),
        # Processes not visible: only the rows tell.
        (None, snap(LATER, SMALL_ROW), table("sha256-qqq", visible=False), None),
    ],
    ids=[
        "client loading",
        "serving its first request",
        "first listed",
        "idle",
        "stale runner",
        "not visible",
    ],
)
def test_what_of_a_clients_takes_room_now(
    previous: PsSnapshot | None, current: PsSnapshot, runners: RunnerTable, taken: str | None
) -> None:
    found = plan.room_taken([TINY, SMALL], kept_states(), previous, current, runners, BLOBS)
    if taken is None:
        assert found is None
    else:
        assert found is not None
        assert taken in found


def test_a_load_of_ours_in_flight_is_not_a_clients() -> None:
    """Our own cold load's runner, not yet listed, takes no room from us."""
    states = kept_states(in_flight_since=NOW)
    found = plan.room_taken([TINY, SMALL], states, None, snap(LATER), table("sha256-ttt"), BLOBS)
    assert found is None


@pytest.mark.parametrize(
    ("full_beside", "occupied", "taken", "waits"),
    [
        (2, 2, "a client's runner is loading", True),  # full, and what fills it is busy
        (2, 2, None, False),  # full, but idle: Ollama picks a victim as for anyone
        (2, 1, "a client's runner is loading", False),  # room left: nothing to wait for
        (0, 3, "a client's runner is loading", False),  # never evicted: no evidence of a cap
    ],
    ids=["full and busy", "full and idle", "room left", "no evidence"],
)
def test_a_cold_load_waits_only_for_a_full_room_a_busy_client_holds(
    full_beside: int, occupied: int, taken: str | None, waits: bool
) -> None:
    st = plan.ModelState(full_beside=full_beside, last_warm_ok_at=NOW - timedelta(minutes=1))
    room = plan.Room(taken, occupied)
    assert (wait_for_room(st, room) is not None) is waits
    decision = plan.decide([TINY], DaemonConfig(), snap(NOW), {TINY.key: st}, NOW, room=room)[0]
    assert decision.action is (plan.Action.WAIT if waits else plan.Action.WARM)
    if waits:
        # Said as a capacity conflict: status shows why the kept model is cold.
        assert plan.describe_state(decision) == "conflict"


def test_an_eviction_remembers_how_many_runners_filled_the_room() -> None:
    """Evicted by a load: the runners listed with it were as many as fit."""
    previous = snap(NOW, row("tiny", NOW + timedelta(minutes=30)), SMALL_ROW)
    current = snap(LATER, SMALL_ROW)
    states = kept_states(last_warm_ok_at=NOW - timedelta(minutes=1))
    seen = plan.observe([TINY, SMALL], DaemonConfig(), previous, current, states)
    assert seen.states[TINY.key].full_beside == 2
    again = plan.observe(
        [TINY, SMALL], DaemonConfig(), current, snap(LATER, SMALL_ROW, previous.models[0]), states
    )
    assert again.states[TINY.key].full_beside == 0  # listed again: forgotten


def test_a_retry_remembers_its_hold_and_the_room_it_had() -> None:
    """A capacity retry is sent on evidence of room; it keeps what the hold said."""
    held = plan.ModelState(
        held_since=NOW, held_reason=f"{plan.CAPACITY}: x", held_room=2, last_warm_ok_at=NOW
    )
    states = {TINY.key: held, SMALL.key: plan.ModelState()}
    seen = plan.observe(
        [TINY, SMALL], DaemonConfig(), snap(NOW, SMALL_ROW), snap(LATER, SMALL_ROW), states
    )
    assert [e.name for e in seen.events] == ["capacity_retry"]
    assert seen.states[TINY.key].retried_hold == f"{plan.CAPACITY}: x"
    assert seen.states[TINY.key].full_beside == 2


@pytest.mark.parametrize(
    ("occupied", "in_flight", "held"),
    [(2, False, True), (1, False, False), (2, True, False)],
    ids=["room taken again", "room still there", "our load is out"],
)
def test_a_retry_whose_room_was_taken_first_is_held_again(
    occupied: int, in_flight: bool, held: bool
) -> None:
    st = plan.ModelState(
        full_beside=2,
        retried_hold=f"{plan.CAPACITY}: x",
        in_flight_since=NOW if in_flight else None,
    )
    states = {TINY.key: st, SMALL.key: plan.ModelState()}
    events = hold_again(
        [TINY, SMALL],
        states,
        {TINY.key: None, SMALL.key: SMALL_ROW},
        plan.Room(None, occupied),
        NOW,
    )
    assert is_held(states[TINY.key]) is held
    assert bool(events) is held
    if held:
        assert states[TINY.key].held_room == 2
        assert states[TINY.key].held_reason == f"{plan.CAPACITY}: x"


@pytest.mark.parametrize(
    ("st", "room", "started", "withdrawn"),
    [
        (plan.ModelState(full_beside=2), plan.Room("a client's runner is loading", 2), False, True),
        (plan.ModelState(full_beside=2), plan.Room("a client's runner is loading", 2), True, False),
        (plan.ModelState(full_beside=2), plan.Room(None, 2), False, False),
        (plan.ModelState(full_beside=2, retried_hold="x"), plan.Room(None, 2), False, True),
        (plan.ModelState(full_beside=2, retried_hold="x"), plan.Room(None, 1), False, False),
    ],
    ids=[
        "queued behind a busy client",
        "our runner started",
        "client idle",
        "retry's room taken",
        "retry's room still there",
    ],
)
def test_a_queued_cold_load_is_withdrawn_once_its_room_is_gone(
    st: plan.ModelState, room: plan.Room, started: bool, withdrawn: bool
) -> None:
    decision = plan.Decision(TINY, plan.Action.WARM, "vanished (evicted)")
    assert plan.withdraw(decision, st, NOW, room=room, started=started) is withdrawn


def test_room_full_needs_evidence() -> None:
    assert not room_full(plan.ModelState(), plan.Room(None, 5))
    assert room_full(plan.ModelState(full_beside=2), plan.Room(None, 2))


BIG = ModelConfig(name="llama3.1:8b", keep_alive_s=3600, priority=9)
CODER = ModelConfig(name="qwen2.5-coder:7b", keep_alive_s=3600, priority=8)
LOW = ModelConfig(name="tiny", keep_alive_s=1800, priority=4)


@pytest.mark.parametrize(
    ("low_listed", "held"),
    [(False, CODER), (True, LOW)],
    ids=["lowest takes no room: the pair's lower one", "lowest is resident: the lowest"],
)
def test_a_conflict_holds_the_lowest_ranked_model_in_the_way(
    low_listed: bool, held: ModelConfig
) -> None:
    """Chaos 0.24.0 seed 227: the first pass loads by rank; the second 8 GB model's load
    evicted the first. Holding ``tiny``, not loaded yet, freed nothing: the pair went on
    evicting each other. The model held is the lowest-ranked one that takes room."""
    ours = [BIG, CODER, LOW]
    big_row = row(BIG.name, NOW + timedelta(hours=1))
    low_row = row(LOW.name, NOW + timedelta(minutes=30))
    before = snap(NOW, big_row, *([low_row] if low_listed else []))
    after = snap(LATER, *([low_row] if low_listed else []))
    states = {
        BIG.key: plan.ModelState(last_warm_ok_at=NOW - timedelta(seconds=2)),
        CODER.key: plan.ModelState(in_flight_since=NOW - timedelta(seconds=1)),
        LOW.key: plan.ModelState(last_warm_ok_at=NOW) if low_listed else plan.ModelState(),
    }
    seen = plan.observe(
        ours,
        DaemonConfig(),
        before,
        after,
        states,
        processes_visible=True,
        evicted_by_ours={BIG.key: CODER.key},
    )
    conflicts = [e for e in seen.events if e.name == "capacity_conflict"]
    assert [e.model for e in conflicts] == [held.name]
    assert [m.name for m in ours if is_held(seen.states[m.key])] == [held.name]


@pytest.mark.parametrize(
    ("resident", "occupied", "held"),
    [
        ((BIG,), 2, True),
        ((BIG, LOW), 2, False),
        ((), 2, False),
        ((BIG,), 1, False),
    ],
    ids=[
        "a higher one of ours may be the victim",
        "a lower one of ours is resident: it gives way",
        "only a client's runners: the load goes out",
        "room not full",
    ],
)
def test_a_lost_model_whose_load_may_evict_a_higher_one_is_held(
    resident: tuple[ModelConfig, ...], occupied: int, held: bool
) -> None:
    """Chaos 0.32.15 seed 206: two slots, a client's 30-minute model in one, ``tiny`` (ranked
    above) in the other; ``llama3.2:3b``'s re-warm evicted ``tiny`` (Ollama's victim is the
    idle runner with the shortest keep-alive, then by name, §4.5), whose re-warm evicted it
    back. Where every kept model of ours resident ranks above it, the lost model is held."""
    lost = ModelConfig(name="llama3.2:3b", keep_alive_s=600, priority=6)
    ours = [BIG, CODER, lost, LOW]
    states = {m.key: plan.ModelState(last_warm_ok_at=NOW) for m in ours}
    states[lost.key] = plan.ModelState(last_warm_ok_at=NOW, full_beside=2)
    rows = {m.key: (row(m.name, NOW + timedelta(hours=1)) if m in resident else None) for m in ours}
    events = hold_below_higher(ours, states, rows, occupied, NOW)
    assert is_held(states[lost.key]) is held
    assert [e.name for e in events] == (["capacity_conflict"] if held else [])
    if held:
        assert states[lost.key].held_room == 2
        decision = plan.decide(ours, DaemonConfig(), snap(NOW), states, NOW)[2]
        assert decision.model == lost
        assert decision.action is plan.Action.HOLD
        assert plan.describe_state(decision) == "conflict"


def test_a_hold_an_operator_ends_is_tried_even_where_the_room_was_full() -> None:
    """``refresh`` of a held model tries it again (README): the room rule must not hold it
    again at once because the room looked full when it was evicted."""
    lost = ModelConfig(name="llama3.2:3b", keep_alive_s=600, priority=6)
    ours = [BIG, lost]
    held = plan.ModelState(
        last_warm_ok_at=NOW, full_beside=1, held_since=NOW, held_reason=f"{plan.CAPACITY}: x"
    )
    states = release_holds({BIG.key: plan.ModelState(last_warm_ok_at=NOW), lost.key: held})
    rows = {BIG.key: row(BIG.name, NOW + timedelta(hours=1)), lost.key: None}
    assert hold_below_higher(ours, states, rows, 1, LATER) == []
    assert not is_held(states[lost.key])


def test_a_lost_model_loaded_again_is_not_held_by_its_own_runner() -> None:
    """Beside a CPU hog (test_a_normal_unload_is_no_crash_and_checks_no_other_model): an
    ``ollama stop``, our re-warm ended, the look after it not yet listing the model; its own
    runner, no row listing it, counted in the room, which looked full: held, a conflict
    where none was."""
    lost = ModelConfig(name="llama3.2:3b", keep_alive_s=600, priority=6)
    ours = [BIG, lost]
    back = plan.ModelState(last_vanished_at=NOW, last_warm_ok_at=LATER, full_beside=2)
    states = {BIG.key: plan.ModelState(last_warm_ok_at=NOW), lost.key: back}
    rows = {BIG.key: row(BIG.name, NOW + timedelta(hours=1)), lost.key: None}
    assert hold_below_higher(ours, states, rows, 2, LATER) == []
    states[lost.key] = replace(back, last_warm_ok_at=NOW - timedelta(seconds=1))
    assert [e.name for e in hold_below_higher(ours, states, rows, 2, LATER)] == [
        "capacity_conflict"
    ]


def test_a_lost_models_own_unlisted_runner_does_not_fill_its_room() -> None:
    """Beside a CPU hog (test_a_normal_unload_is_no_crash_and_checks_no_other_model, again):
    ``ollama stop`` took the model out of ps before its runner's exit was seen; that runner,
    no row listing it, counted as loading and filled the room: a conflict where none was.
    The room rule counts what ps lists."""
    lost = ModelConfig(name="qwen2.5-coder:7b", keep_alive_s=3600, priority=5)
    ours = [BIG, lost]
    previous = snap(
        NOW, row(BIG.name, NOW + timedelta(hours=1)), row(lost.name, NOW + timedelta(minutes=30))
    )
    current = snap(LATER, row(BIG.name, NOW + timedelta(hours=1)))
    states = {
        BIG.key: plan.ModelState(last_warm_ok_at=NOW - timedelta(minutes=1)),
        lost.key: plan.ModelState(last_warm_ok_at=NOW - timedelta(minutes=1)),
    }
    seen = plan.observe(
        ours, DaemonConfig(), previous, current, states, processes_visible=True, loading_count=1
    )
    assert seen.states[lost.key].full_beside == 2
    assert not is_held(seen.states[lost.key])
    assert not [e for e in seen.events if e.name == "capacity_conflict"]
