"""Invariant 3 of the oracle (``bench/chaos_check.py``) on hand-made outcomes, as a table.

A kept model evicted by our own load must be asked for again within a poll (plus the loads
that came first). Time a fault holds our call is not the keeper's: seed 14 on 0.24.0 had a
``slow_generate`` fault begin after the loss and hold our re-warm 4 s inside the fake, and
was reported as a keeper 4 s late.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from bench.chaos_check import check
from bench.chaos_run import Outcome
from bench.chaos_schedule import Event, Kept, Schedule

from ollama_keepwarm.fake.records import (
    EvictionRecord,
    LoadRecord,
    Records,
    Touch,
    UnloadRecord,
    WaitRecord,
)

T0 = 1_800_000_000.0
KEEPER = "ollama-keepwarm/test"
BLOB = "sha256-small"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=UTC)


def _outcome(
    asked_at: float, windows: list[tuple[float, float, str, str]], wait_s: float = 0.5
) -> Outcome:
    """``small`` loaded at 0-0.5, evicted by our load of another model at 1.0 (which ends at
    once), asked for again (our call reaches the fake's queue) at ``asked_at``; ``windows``
    (faults) in seconds from the start."""
    schedule = Schedule(
        seed=0,
        version="0.24.0",
        max_loaded=1,
        memory_gb=16,
        kept=(Kept("small", "10m", 1),),
        events=(),
        duration_s=12.0,
    )
    records = Records(
        unloads=[UnloadRecord("small:latest", _at(1.0), "evicted", KEEPER, KEEPER)],
        waits=[
            WaitRecord(
                "small:latest", KEEPER, "/api/generate", _at(asked_at), _at(asked_at + wait_s), True
            )
        ],
    )
    loads = [
        LoadRecord(
            "small:latest", "cold", "/api/generate", _at(0.0), _at(0.5), ok=True, caller=KEEPER
        ),
        LoadRecord(
            "other:latest", "cold", "/api/generate", _at(1.0), _at(1.0), ok=True, caller=KEEPER
        ),
    ]
    return Outcome(
        schedule=schedule,
        started=T0,
        ended=T0 + 15.0,
        kept_keys={"small": BLOB},
        blobs={"small": BLOB, "small:latest": BLOB, "other:latest": "sha256-other"},
        loads=loads,
        evictions=[],
        records=records,
        requests=[],
        logs=[],
        clients=[],
        statuses=[],
        lags=[],
        windows=[(T0 + start, T0 + stop, kind, about) for start, stop, kind, about in windows],
    )


SLOW_GENERATE = (1.1, 5.6, "delay /api/generate", "")


@pytest.mark.parametrize(
    ("asked_at", "windows", "late"),
    [
        pytest.param(1.1, [], False, id="asked-at-once"),
        pytest.param(5.1, [], True, id="asked-4s-late"),
        pytest.param(5.1, [SLOW_GENERATE], False, id="held-4s-by-a-later-fault"),
        pytest.param(5.1, [(1.1, 5.1, "crash", "another")], True, id="another-models-fault"),
        pytest.param(9.1, [SLOW_GENERATE], True, id="late-after-the-fault-too"),
    ],
)
def test_time_a_later_fault_holds_our_call_is_not_the_keepers(
    asked_at: float, windows: list[tuple[float, float, str, str]], late: bool
) -> None:
    verdict = check(_outcome(asked_at, windows))
    assert (3 in verdict.invariants) is late, [v.describe() for v in verdict.violations]


@pytest.mark.parametrize(
    ("asked_at", "wait_s", "late"),
    [
        pytest.param(0.8, 4.2, False, id="our-call-queued-across-the-loss"),
        pytest.param(0.8, 0.1, True, id="our-call-ended-before-the-loss"),
    ],
)
def test_a_call_of_ours_in_flight_at_the_loss_has_asked_already(
    asked_at: float, wait_s: float, late: bool
) -> None:
    """Chaos seed 259 on 0.24.0: our load of ``tiny`` waited in the fake's queue from 1.45 s
    (both slots busy with clients' requests), a client loaded and evicted ``tiny`` at 2.95 s
    meanwhile, and our call was served at 4.88 s. The keeper had asked before the loss and
    kept asking: a second load of it would be two loads of one model in flight (inv 4)."""
    verdict = check(_outcome(asked_at, [], wait_s))
    assert (3 in verdict.invariants) is late, [v.describe() for v in verdict.violations]


@pytest.mark.parametrize(
    ("unloads", "late"),
    [
        pytest.param([], False, id="resident-under-our-lease"),
        pytest.param([(3.0, "expired", "chaos-client/1")], True, id="a-clients-lease-lapsed"),
    ],
)
def test_a_window_that_reopens_on_a_resident_model_needs_no_call(
    unloads: list[tuple[float, str, str]], late: bool
) -> None:
    """Chaos seed 451 on 0.32.15: ``qwen2.5-coder:7b`` (``after_window = "expire"``) stayed
    resident under the 1 h lease we had set when its window closed, and a wall-clock step
    back reopened the window 0.9 s later. It was warm all along and nothing of ours was due;
    the check wanted a call within a poll. A model resident at the opening needs none; a
    client's lease that lapses there (the keeper should have claimed it) is still late."""
    base = _outcome(20.0, [])  # our only wait for small lies past the end: no call of ours
    schedule = replace(
        base.schedule,
        events=(
            Event(1.0, "window_close", {"model": "small", "after": "expire"}),
            Event(2.0, "step_back", {"seconds": -3600.0}),
        ),
    )
    records = Records(
        unloads=[UnloadRecord("small:latest", _at(at), cause, by, by) for at, cause, by in unloads],
        waits=[],
    )
    outcome = replace(base, schedule=schedule, loads=base.loads[:1], records=records)
    verdict = check(outcome)
    assert (3 in verdict.invariants) is late, [v.describe() for v in verdict.violations]


def _self_fights(loaded_by: str, events: tuple[Event, ...] = ()) -> list[str]:
    """Invariant 4's self-fight verdicts when our loads of ``big`` evict a runner of kept
    ``small`` (loaded by ``loaded_by``) at 2, 4 and 6 s, in a schedule of ``events``."""
    outcome = _outcome(1.1, [])
    outcome = replace(outcome, schedule=replace(outcome.schedule, events=events))
    outcome.evictions.extend(
        EvictionRecord("small:latest", "big:latest", _at(t), "count", KEEPER) for t in (2, 4, 6)
    )
    outcome.records.unloads.extend(
        UnloadRecord("small:latest", _at(t + 0.1), "evicted", KEEPER, loaded_by) for t in (2, 4, 6)
    )
    outcome.kept_keys["big"] = "sha256-big"
    outcome.blobs.update({"big": "sha256-big", "big:latest": "sha256-big"})
    return [v.what for v in check(outcome).violations if "evicted kept" in v.what]


@pytest.mark.parametrize(
    ("loaded_by", "fight"),
    [
        pytest.param(KEEPER, True, id="our-runner-evicted-three-times"),
        pytest.param("chaos-client/1", False, id="a-clients-runner-of-a-held-model"),
    ],
)
def test_a_self_fight_is_our_loads_evicting_our_own_runners(loaded_by: str, fight: bool) -> None:
    """Invariant 4's self-fight counts runners we loaded. Seed 7 on 0.24.0: our re-warms of
    a kept model evicted a client's runner of another kept model (one we held) three times:
    a keeper-client conflict, bounded by the loss rules' back-off, not a fight with itself."""
    assert bool(_self_fights(loaded_by)) is fight


@pytest.mark.parametrize(
    ("refresh_at", "fight"),
    [
        pytest.param(None, True, id="three-evictions"),
        pytest.param(3.0, False, id="refreshed-after-the-first-two"),
        pytest.param(7.0, True, id="refreshed-after-all-three"),
    ],
)
def test_an_operators_refresh_counts_the_evictions_after_it_afresh(
    refresh_at: float | None, fight: bool
) -> None:
    """0.32.15 seed 690: ``refresh`` of a held model orders it tried again; the settle that
    follows (it evicts a higher model, whose re-warm evicts it) is the operator's order, not
    the keeper fighting itself. Evictions before the refresh, or without one, still count."""
    events = () if refresh_at is None else (Event(refresh_at, "refresh", {"model": "small"}),)
    assert bool(_self_fights(KEEPER, events)) is fight


@pytest.mark.parametrize(
    ("kind", "alone", "harm"),
    [
        pytest.param("revived", False, True, id="a-keep-alive-revived-the-victim"),
        pytest.param("busy", True, True, id="our-ping-alone-held-the-victim"),
        pytest.param("busy", False, False, id="our-ping-beside-a-clients-generation"),
    ],
)
def test_a_wait_is_on_us_when_our_call_revived_or_alone_held_the_runner(
    kind: str, alone: bool, harm: bool
) -> None:
    """Invariant 2. Seed 4 on 0.24.0: our one ping reached a runner draining for a client's
    reload while other clients' generations held it anyway; it delayed nothing."""
    outcome = _outcome(1.1, [])
    touch = Touch("small:latest", kind, KEEPER, _at(3.0), alone=alone)  # type: ignore[arg-type]
    outcome.records.waits.append(
        WaitRecord(
            "other:latest", "chaos-client/0", "/api/generate", _at(2), _at(8), True, (touch,)
        )
    )
    assert (2 in check(outcome).invariants) is harm


@pytest.mark.parametrize(
    ("asked_at", "runners_seen", "late"),
    [
        pytest.param(1.7, True, False, id="within-a-poll-after-the-settle"),
        pytest.param(1.7, False, True, id="no-settle-where-runners-are-hidden"),
        pytest.param(2.0, True, True, id="late-after-the-settle-too"),
    ],
)
def test_the_keepers_queue_settle_is_part_of_the_loads_that_came_first(
    asked_at: float, runners_seen: bool, late: bool
) -> None:
    """Where the keeper sees runners, a cold load of its goes out QUEUE_SETTLE_S (0.2 s) after
    the last load, call or runner exit (``plan.queue_settles_at``: a client's load queued
    behind them shows first, invariant 1). The 500-seed run of 6b27ec2 flagged that wait
    as a slow first load at start (0.32.15 seeds 59, 66); it is counted like loading."""
    watch = [{"event": "crash_watch_started", "t": T0}] if runners_seen else []
    verdict = check(replace(_outcome(asked_at, []), logs=watch))
    assert (3 in verdict.invariants) is late, [v.describe() for v in verdict.violations]
