"""Wall-clock steps (issue 22 item 2): every held time re-anchored, old leases read corrected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
BACK = timedelta(hours=-1)


def row(expires_at: datetime) -> RunningModel:
    return RunningModel("llama3.1:8b", 1, 1, "d" * 64, expires_at, 4096)


def test_every_held_time_moves_but_the_operators_pause() -> None:
    """A step moves our own times; a pause's end is a wall time the operator chose."""
    st = plan.ModelState(
        last_warm_ok_at=NOW,
        backoff_until=NOW + timedelta(seconds=30),
        load_window=(NOW, None),
        strikes=(NOW,),
        last_row=row(NOW + timedelta(minutes=5)),
        paused_until=NOW + timedelta(hours=2),
    )
    moved = plan.shift_times(st, BACK)
    assert moved.last_warm_ok_at == NOW + BACK
    assert moved.backoff_until == NOW + timedelta(seconds=30) + BACK
    assert moved.load_window == (NOW + BACK, None)
    assert moved.strikes == (NOW + BACK,)
    assert moved.last_row is not None
    assert moved.last_row.expires_at == NOW + timedelta(minutes=5) + BACK
    assert moved.paused_until == NOW + timedelta(hours=2)


def test_a_lease_printed_before_the_step_is_read_corrected_until_it_moves() -> None:
    """Ollama's timer is monotonic: the lease printed before the step really ends a step
    earlier (in the new wall time). A lease set after the step is printed right."""
    printed = NOW + timedelta(minutes=5)
    known = plan.remember_leases({}, PsSnapshot(NOW, (row(printed),)), BACK)
    later = PsSnapshot(NOW + BACK + timedelta(seconds=5), (row(printed),))
    read, known = plan.remap_leases(later, known)
    assert read.models[0].expires_at == printed + BACK
    renewed = PsSnapshot(
        NOW + BACK + timedelta(seconds=10), (row(NOW + BACK + timedelta(minutes=5)),)
    )
    read, known = plan.remap_leases(renewed, known)
    assert read.models[0].expires_at == NOW + BACK + timedelta(minutes=5)
    assert known == {}


def test_two_steps_add_up() -> None:
    """A second step before the old lease moved corrects it by both."""
    printed = NOW + timedelta(minutes=5)
    known = plan.remember_leases({}, PsSnapshot(NOW, (row(printed),)), BACK)
    read, known = plan.remap_leases(PsSnapshot(NOW, (row(printed),)), known)
    known = plan.remember_leases(known, read, BACK)
    read, _ = plan.remap_leases(PsSnapshot(NOW, (row(printed),)), known)
    assert read.models[0].expires_at == printed + 2 * BACK


def test_a_step_is_told_from_a_suspend_and_from_slewing() -> None:
    assert plan.wall_step((0.0, 0.0), (-3600.0, 0.0)) == -3600.0
    assert plan.wall_step((0.0, 0.0), (0.5, 0.0)) is None  # NTP slewing
    assert plan.wall_step((0.0, 0.0), (-3600.0, 3600.0)) is None  # a suspend: resume rules
