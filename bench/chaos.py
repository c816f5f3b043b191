"""The client-harm oracle (issue 23): random schedules against the real keeper, checked.

    python -m bench.chaos                       # 20 seeds per rule set, the table
    python -m bench.chaos --seeds 500 --out docs   # the long run; writes docs/chaos.md
    python -m bench.chaos --seed 3 --version 0.24.0 --shrink   # one schedule, shrunk if it fails
    python -m bench.chaos --seed 3 --version 0.24.0 --events 4,9,12   # replay a shrunk one
    python -m bench.chaos --day                  # one compressed day per rule set (invariant 5)

from the repository root, in the project's virtualenv. Each schedule
(``bench/chaos_schedule.py``) runs the daemon's own ``Keeper`` against a fresh fake Ollama on a
compressed clock (``bench/chaos_run.py``), then the invariants are checked from the fake's
records of who caused what and from the keeper's logs (``bench/chaos_check.py``). A failing
schedule prints its seed and a one-line replay command; with ``--shrink`` it is first reduced
by delta debugging over its event list to the fewest events that still break the same
invariant (at most ``--budget`` re-runs). Schedules run ``--jobs`` at a time, each in its own
process.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chaos_check import Verdict, Violation, check
from bench.chaos_explain import timeline
from bench.chaos_run import Outcome, run_schedule
from bench.chaos_schedule import Schedule, generate

__all__ = ["Result", "main", "run_many", "run_one", "shrink"]

VERSIONS = ("0.24.0", "0.32.15")
DAY_LENGTH_S = 1440.0
"""A compressed day: 24 real minutes at one fake minute per real second."""
HANG_MIN_S = 180.0
HANG_FACTOR = 4.0
"""A schedule that has not finished after ``max(HANG_MIN_S, HANG_FACTOR * run_s)`` real
seconds is hung (a 12 s schedule takes 15-20 s, a few times that on a busy box): it is
reported as a failure with where its tasks were stuck, instead of holding a worker forever."""
CANCEL_GRACE_S = 10.0


@dataclass(frozen=True)
class Result:
    """One schedule run and checked (picklable, so workers can send it back)."""

    schedule: Schedule
    verdict: Verdict
    events_by_kind: dict[str, int]
    resources: tuple[tuple[float, int, int, int], ...]
    real_s: float
    timeline: tuple[str, ...] = ()
    """The run's own timeline, kept only when it failed: a replay runs with other timings and
    often passes (``--out`` writes it beside the table)."""


def run_one(
    seed: int, version: str, length: float = 12.0, events: Sequence[int] | None = None
) -> Result:
    """Generate (or replay a subset of) one schedule, run it, check it."""
    schedule = generate(seed, version, length)
    if events is not None:
        schedule = schedule.only(events)
    return run_schedule_checked(schedule)


def run_schedule_checked(
    schedule: Schedule,
    run: Callable[[Schedule], Awaitable[Outcome]] = run_schedule,
    hang_s: float | None = None,
) -> Result:
    """Run one schedule in a fresh event loop and check it; a hung one is a violation."""
    started = time.monotonic()
    bound = hang_s if hang_s is not None else max(HANG_MIN_S, HANG_FACTOR * schedule.run_s)
    kinds = dict(Counter(e.kind for _, e in schedule.active))
    loop = asyncio.new_event_loop()
    try:
        outcome = loop.run_until_complete(_bounded(run(schedule), bound))
    finally:
        _close(loop)
    if isinstance(outcome, str):
        what = f"the schedule did not finish within {bound:g}s (harness or keeper hung): {outcome}"
        hung = Verdict((Violation(4, what, bound),), 0, 0)
        return Result(schedule, hung, kinds, (), time.monotonic() - started)
    verdict = check(outcome)
    lines = tuple(timeline(outcome)) if verdict.violations else ()
    return Result(
        schedule, verdict, kinds, tuple(outcome.resources), time.monotonic() - started, lines
    )


async def _bounded(work: Awaitable[Outcome], bound: float) -> Outcome | str:
    """``work``'s outcome, or, after ``bound`` seconds, where every task was stuck."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=bound)
    if done:
        return task.result()
    stuck = _stuck_tasks()
    task.cancel()
    await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
    return stuck


def _stuck_tasks() -> str:
    """Each other task's innermost awaiting frame (down its ``await`` chain): where it waits."""
    places = []
    for other in asyncio.all_tasks():
        if other is asyncio.current_task():
            continue
        coro: Any = other.get_coro()
        outer = getattr(coro, "__qualname__", "?")
        while (
            inner := getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        ) and (hasattr(inner, "cr_frame") or hasattr(inner, "gi_frame")):
            coro = inner
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        where = "no frame"
        if frame is not None:
            where = (
                f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} in {frame.f_code.co_name}"
            )
        places.append(f"{other.get_name()} ({outer}) at {where}")
    return "; ".join(sorted(places)) or "no task left"


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Close ``loop`` as ``asyncio.run`` does, but never wait forever on a task that hangs."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=CANCEL_GRACE_S))
        for shutdown in (loop.shutdown_asyncgens(), loop.shutdown_default_executor()):
            loop.run_until_complete(asyncio.wait_for(shutdown, timeout=CANCEL_GRACE_S))
    except (TimeoutError, RuntimeError):
        pass
    finally:
        loop.close()


def run_many(
    jobs: Sequence[tuple[int, str, float]], workers: int, on_result: Callable[[Result], None]
) -> list[Result]:
    """Run (seed, version, length) schedules, ``workers`` processes at a time."""
    context = multiprocessing.get_context("spawn")
    results = []
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(run_one, seed, version, length) for seed, version, length in jobs]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            on_result(result)
            results.append(result)
    return sorted(results, key=lambda r: (r.schedule.version, r.schedule.seed))


def shrink(
    schedule: Schedule,
    budget: int = 40,
    log: Callable[[str], None] = print,
    run: Callable[[Schedule], Result] | None = None,
    broke: frozenset[int] | None = None,
) -> Schedule:
    """Delta debugging (ddmin, by complements) over the events: the fewest that still fail.

    A run is timing-dependent, so "still fails" means it broke at least one of the invariants
    the full schedule broke (``broke``, else found by running it); at most ``budget`` re-runs.
    """
    run = run or run_schedule_checked
    first = broke if broke is not None else run(schedule).verdict.invariants
    if not first:
        return schedule
    runs = 0

    def fails(indices: Sequence[int]) -> bool:
        nonlocal runs
        runs += 1
        found = run(schedule.only(indices)).verdict.invariants
        log(f"  shrink run {runs}: {len(indices)} events -> invariants {sorted(found)}")
        return bool(found & first)

    current = [i for i, _ in schedule.active]
    chunks = 2
    while len(current) >= 2 and runs < budget:
        size = max(1, len(current) // chunks)
        pieces = [current[i : i + size] for i in range(0, len(current), size)]
        for piece in pieces:
            rest = [i for i in current if i not in piece]
            if runs < budget and fails(rest):
                current, chunks = rest, max(chunks - 1, 2)
                break
        else:
            if size == 1:
                break
            chunks = min(len(current), chunks * 2)
    if len(current) == 1 and runs < budget and fails([]):
        current = []
    return schedule.only(current)


def table(results: Sequence[Result], rss: tuple[int, int]) -> str:
    """The Markdown report: schedules, events by kind, requests, harms, violations, RSS."""
    lines = ["| rule set | schedules | failing | client requests | harmed | inv 1 | inv 2 |"]
    lines[0] += " inv 3 | inv 4 | inv 5 |"
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for version in sorted({r.schedule.version for r in results}):
        mine = [r for r in results if r.schedule.version == version]
        by_inv = Counter(v.invariant for r in mine for v in r.verdict.violations)
        failing = sum(1 for r in mine if r.verdict.violations)
        requests = sum(r.verdict.client_requests for r in mine)
        harmed = sum(r.verdict.harmed_requests for r in mine)
        lines.append(
            f"| {version} | {len(mine)} | {failing} | {requests} | {harmed} | "
            + " | ".join(str(by_inv.get(i, 0)) for i in range(1, 6))
            + " |"
        )
    kinds = Counter[str]()
    for r in results:
        kinds.update(r.events_by_kind)
    lines += ["", "Events by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))]
    lines.append(
        f"RSS of the runner process: {rss[0] // 1024} MiB at start, {rss[1] // 1024} MiB at end"
    )
    failing_runs = [r for r in results if r.verdict.violations]
    if failing_runs:
        lines += ["", "Failing schedules (seed: invariants -> replay):", ""]
        for r in failing_runs:
            invs = ",".join(map(str, sorted(r.verdict.invariants)))
            lines.append(
                f"- {r.schedule.version} seed {r.schedule.seed}: inv {invs} -> "
                f"`{r.schedule.replay()}`"
            )
    return "\n".join(lines)


def write_timelines(out: Path, results: Sequence[Result]) -> list[Path]:
    """Write each failing run's own timeline (as ``--explain`` prints one) into ``out``."""
    written = []
    for r in results:
        if not r.timeline:
            continue
        s = r.schedule
        path = out / f"timeline-{s.version}-seed{s.seed}.txt"
        head = f"# {s.version} seed {s.seed}: {s.kept}, max_loaded {s.max_loaded}\n"
        tail = "".join(v.describe() + "\n" for v in r.verdict.violations)
        path.write_text(head + "\n".join(r.timeline) + "\n" + tail)
        written.append(path)
    return written


def _print_result(result: Result) -> None:
    s, v = result.schedule, result.verdict
    mark = "FAIL" if v.violations else "ok  "
    print(
        f"{mark} {s.version:8} seed {s.seed:4}: {len(s.active):3} events, "
        f"{v.client_requests:3} client requests, {v.harmed_requests} harmed, "
        f"{result.real_s:5.1f}s",
        flush=True,
    )
    for violation in v.violations[:6]:
        print(f"       {violation.describe()}")
    if len(v.violations) > 6:
        more = Counter(x.invariant for x in v.violations[6:])
        left = ", ".join(f"{n} more of inv {i}" for i, n in sorted(more.items()))
        print(f"       ... and {left}")
    if v.violations:
        print(f"       replay: {s.replay()}", flush=True)


def _rss_max_kib(results: Sequence[Result]) -> tuple[int, int]:
    starts = [r.resources[0][1] for r in results if r.resources]
    ends = [r.resources[-1][1] for r in results if r.resources]
    return (min(starts, default=0), max(ends, default=0))


def _commit() -> str:
    """The commit the run tested (and whether the tree had changes), for the report."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet"], check=False).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def _events(text: str | None) -> list[int] | None:
    if text is None:
        return None
    return [] if text == "none" else [int(i) for i in text.split(",")]


def _explain(seed: int, versions: Sequence[str], length: float, events: str | None) -> int:
    """Run one schedule in this process and print its timeline and verdict."""
    broke = False
    for version in versions:
        schedule = generate(seed, version, length)
        chosen = _events(events)
        if chosen is not None:
            schedule = schedule.only(chosen)
        outcome = asyncio.run(run_schedule(schedule))
        print(
            f"# {version} seed {seed}: {schedule.kept}, max_loaded {schedule.max_loaded}, "
            f"{schedule.memory_gb} GB"
        )
        print("\n".join(timeline(outcome)))
        verdict = check(outcome)
        for violation in verdict.violations:
            print(violation.describe())
        broke |= bool(verdict.violations)
    return 1 if broke else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run schedules, print each verdict and the table; exit 1 when any invariant broke."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, help="run this one seed (default: --seeds of them)")
    parser.add_argument("--seeds", type=int, default=20, help="seeds 1..N per rule set")
    parser.add_argument("--first", type=int, default=1, help="the first seed of --seeds")
    parser.add_argument("--version", choices=VERSIONS, help="one rule set (default: both)")
    parser.add_argument("--length", type=float, default=12.0, help="seconds of events")
    parser.add_argument("--events", help="replay only these event indices (comma list)")
    parser.add_argument("--shrink", action="store_true", help="shrink failing schedules")
    parser.add_argument("--budget", type=int, default=40, help="re-runs a shrink may use")
    parser.add_argument("--jobs", type=int, default=2, help="schedules at once")
    parser.add_argument("--day", action="store_true", help="one compressed day per rule set")
    parser.add_argument("--out", type=Path, help="write the table to OUT/chaos.md")
    parser.add_argument("--explain", action="store_true", help="print --seed's timeline")
    args = parser.parse_args(argv)
    versions = [args.version] if args.version else list(VERSIONS)
    if args.day:
        args.length, args.seeds = DAY_LENGTH_S, 1
    if args.seed is not None and args.explain:
        return _explain(args.seed, versions, args.length, args.events)
    if args.seed is not None:
        events = None
        if args.events is not None:
            events = [] if args.events == "none" else [int(i) for i in args.events.split(",")]
        results = []
        for version in versions:
            result = run_one(args.seed, version, args.length, events)
            _print_result(result)
            results.append(result)
            if args.shrink and result.verdict.violations:
                small = shrink(result.schedule, args.budget, broke=result.verdict.invariants)
                print(f"shrunk to {len(small.active)} events:")
                for _, event in small.active:
                    print(f"  {event.describe()}")
                print(f"replay: {small.replay()}")
    else:
        jobs = [
            (seed, version, args.length)
            for seed in range(args.first, args.first + args.seeds)
            for version in versions
        ]
        results = run_many(jobs, args.jobs, _print_result)
    report = table(results, _rss_max_kib(results))
    print()
    print(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        command = "python -m bench.chaos " + " ".join(sys.argv[1:] if argv is None else argv)
        text = (
            f"# Client-harm oracle\n\nMade by `{command.strip()}` on commit {_commit()}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n{report}\n"
        )
        (args.out / "chaos.md").write_text(text)
        write_timelines(args.out, results)
    return 1 if any(r.verdict.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
