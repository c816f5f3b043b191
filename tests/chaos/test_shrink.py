"""The oracle's own machinery, without running a keeper: schedules replay, shrinking works."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.chaos import Result, run_schedule_checked, shrink, write_timelines
from bench.chaos_check import Verdict, Violation
from bench.chaos_run import LOWEST_PORT, Outcome, start_outside_ephemeral
from bench.chaos_schedule import Schedule, generate

from ollama_keepwarm.fake import FakeOllama


def test_a_schedule_is_the_same_for_the_same_seed_and_differs_by_rule_set() -> None:
    assert generate(5, "0.24.0") == generate(5, "0.24.0")
    assert generate(5, "0.24.0").events != generate(5, "0.32.15").events
    subset = generate(5, "0.24.0").only([2, 0])
    assert [i for i, _ in subset.active] == [0, 2]
    assert subset.replay().endswith("--events 0,2")
    assert "--events" not in generate(5, "0.24.0").replay()


def test_shrinking_keeps_only_the_events_that_still_fail() -> None:
    """ddmin down to the two events that together break invariant 2, in few re-runs."""
    schedule = generate(11, "0.32.15")
    assert len(schedule.events) > 20
    culprits = {3, 17}
    runs: list[int] = []

    def run(candidate: Schedule) -> Result:
        kept = {i for i, _ in candidate.active}
        runs.append(len(kept))
        broken = (Violation(2, "waited on a revived runner", 1.0),) if culprits <= kept else ()
        return Result(candidate, Verdict(broken, 0, 0), {}, (), 0.0)

    small = shrink(schedule, budget=60, log=lambda _line: None, run=run)
    assert set(small.kept_events or ()) == culprits
    assert len(runs) < 60


def test_a_schedule_that_passes_is_not_shrunk() -> None:
    schedule = generate(2, "0.24.0")

    def run(candidate: Schedule) -> Result:
        return Result(candidate, Verdict((), 0, 0), {}, (), 0.0)

    assert shrink(schedule, log=lambda _line: None, run=run) is schedule


def test_a_hung_schedule_is_reported_with_where_it_waits_and_frees_its_worker() -> None:
    """A schedule that never ends fails invariant 4 after its bound, naming the stuck await."""

    async def never_ending_wait_for_a_reply(_schedule: Schedule) -> Outcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    result = run_schedule_checked(
        generate(2, "0.24.0"), run=never_ending_wait_for_a_reply, hang_s=0.2
    )
    (violation,) = result.verdict.violations
    assert violation.invariant == 4
    assert "did not finish within 0.2s" in violation.what
    assert "never_ending_wait_for_a_reply) at locks.py:" in violation.what
    assert violation.what.endswith("in wait")


async def test_the_fake_listens_below_the_ephemeral_range() -> None:
    """A restarting fake gives its port up while down: in the ephemeral range, another
    schedule's client socket could take it (0.24.0 seeds 110 and 493 at 14 jobs)."""
    fake = FakeOllama()
    await start_outside_ephemeral(fake)
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        assert LOWEST_PORT <= fake.port < low
        await fake.restart(down_s=0.0)
        assert fake.port < low
    finally:
        await fake.stop()


def test_a_failing_runs_own_timeline_is_written_beside_the_table(tmp_path: Path) -> None:
    """A replay runs with other timings and often passes: the run that failed keeps its own
    timeline; one that passed keeps none."""
    schedule = generate(3, "0.32.15", 3.0)
    broken = Verdict((Violation(4, "evicted three times", 1.0),), 0, 0)
    failed = Result(schedule, broken, {}, (), 1.0, ("  0.01 LOG     ollama_up",))
    passed = Result(generate(4, "0.32.15", 3.0), Verdict((), 0, 0), {}, (), 1.0)
    [path] = write_timelines(tmp_path, [failed, passed])
    assert path.name == "timeline-0.32.15-seed3.txt"
    text = path.read_text()
    assert "ollama_up" in text
    assert "inv 4" in text
    assert "evicted three times" in text
