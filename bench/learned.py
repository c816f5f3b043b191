"""Learned hours against the alternatives, on seeded multi-week traces (issue 25).

Weeks cannot run in real time, and the fake's compressed clock would still need hours per
trace, so this benchmark **simulates in virtual time**: one model, its residency, and each
policy's decisions, stepped minute by minute and at every request, with the keeper's own pure
functions deciding (``core/windows.evaluate`` for written windows; ``core/learned.record`` and
``core/learned.judge`` for learned hours, fed every client request as the use the keeper
would see: each one loads the model or moves its lease). Nothing else of the daemon runs.

The model of Ollama and of the clients:

* one 8B model, 4.92 GB, all in VRAM; a load takes ``LOAD_SECONDS_PER_GB`` x size = 4.9 s (the
  main bench's fake); a request generates for 2 s;
* a request that finds the model unloaded loads it and is **cold**; one that arrives during a
  load waits for the rest of it and is cold when that is over ``COLD_THRESHOLD_S`` (1.5 s);
* a client request sets the lease to its end + 5 min (Ollama's default; ``-1`` for the
  ``OLLAMA_KEEP_ALIVE=-1`` policy); while a keeper keeps the model it renews its own lease, so
  the model stays; when a window or the learned hours end the keeper unloads it at once
  (``after_window = "unload"``); the keeper looks every minute (the daemon: every 5 s, plus
  cron jobs at each boundary), and its lead is the derived one (``windows.derived_lead_s``);
* VRAM GB-hours count the time the model is loaded or loading.

The policies: no keeper (Ollama's 5 min), ``OLLAMA_KEEP_ALIVE=-1``, ollama-keepwarm always on,
the windows a user would write for the trace, and learned hours at the three named thresholds.
The floor (cold requests no policy could avoid) is 0 on these traces: the first request of each
comes well after the start, when an always-on keeper has the model loaded.

Run: ``python -m bench.learned [--seed 7] [--weeks 8] [--out docs]`` (about a minute).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.floor import COLD_THRESHOLD_S
from bench.traces import load_seconds
from ollama_keepwarm.core import learned, windows

MODEL = "llama3.1:8b"
GB = 4.920753328
LOAD_S = load_seconds(MODEL)
GENERATE_S = 2.0
CLIENT_LEASE_S = 300.0
TICK_S = 60.0
WEEK_S = 7 * 86400.0
ZONE = ZoneInfo("Europe/Berlin")
START = datetime(2026, 3, 2, tzinfo=ZONE)  # a Monday; Berlin's clocks go forward on 03-29
SECTION = "<!-- bench.learned -->"
CHART = "learned.png"


@dataclass(frozen=True)
class Trace:
    """Request times (seconds after ``START``) of one model's clients, and how they read."""

    name: str
    title: str
    about: str
    windows: tuple[str, ...]  # what a user would write for it
    requests: tuple[float, ...]
    weeks: int


def _at(day: int, hour: float) -> float:
    """Seconds after START of local ``hour`` on ``day`` (wall time: DST moves the offset)."""
    local = (START + timedelta(days=day)).replace(tzinfo=None) + timedelta(hours=hour)
    return (local.replace(tzinfo=ZONE) - START).total_seconds()


def _session(rng: random.Random, start: float, end: float, gap_s: float) -> list[float]:
    times, t = [], start
    while t < end:
        times.append(t)
        t += rng.expovariate(1 / gap_s)
    return times


def workday(rng: random.Random, weeks: int) -> Trace:
    """A team's bot: weekdays 08:30-18:00 with drift, a quiet lunch, holidays, late nights."""
    holidays = set(rng.sample([d for d in range(7, 7 * weeks) if d % 7 < 5], 3))
    times: list[float] = []
    for day in range(7 * weeks):
        weekday = day % 7
        if weekday < 5 and day not in holidays:
            start = 8.5 + rng.gauss(0, 0.25)
            end = 18.0 + rng.gauss(0, 0.33)
            times += _session(rng, _at(day, start), _at(day, 12.0), 8 * 60)
            times += _session(rng, _at(day, 12.0), _at(day, 13.0), 30 * 60)
            times += _session(rng, _at(day, 13.0), _at(day, end), 8 * 60)
            if rng.random() < 0.1:  # a late night
                night = _at(day, rng.uniform(20.5, 22.5))
                times += _session(rng, night, night + rng.uniform(20, 60) * 60, 10 * 60)
        elif weekday >= 5 and rng.random() < 0.05:
            noon = _at(day, rng.uniform(11, 15))
            times += _session(rng, noon, noon + 1800, 10 * 60)
    return Trace(
        "workday",
        "Workday team bot",
        "weekdays from about 08:30 (±15 min) to 18:00 (±20 min), a request every 8 min on "
        "average, one every 30 min at lunch; 3 holidays; a late session (20:30-23:30) on 1 "
        "weekday in 10; a short weekend visit on 1 weekend day in 20",
        ("mon-fri 08:00-19:00",),
        tuple(sorted(times)),
        weeks,
    )


def hobbyist(rng: random.Random, weeks: int) -> Trace:
    """Evenings on 60 % of weekdays, long weekend afternoons on 70 % of weekend days."""
    times: list[float] = []
    for day in range(7 * weeks):
        if day % 7 < 5 and rng.random() < 0.6:
            start = 19.5 + rng.gauss(0, 0.5)
            times += _session(rng, _at(day, start), _at(day, start + rng.uniform(1, 3)), 6 * 60)
        elif day % 7 >= 5 and rng.random() < 0.7:
            start = rng.uniform(10, 15)
            times += _session(rng, _at(day, start), _at(day, start + rng.uniform(2, 5)), 8 * 60)
    return Trace(
        "hobbyist",
        "Evening hobbyist",
        "on 60 % of weekdays a session from about 19:30 (±30 min) for 1-3 h, a request every "
        "6 min; on 70 % of weekend days one from 10:00-15:00 for 2-5 h, every 8 min",
        ("mon-fri 19:00-23:00", "sat-sun 10:00-20:00"),
        tuple(sorted(times)),
        weeks,
    )


def batch(rng: random.Random, weeks: int) -> Trace:
    """A nightly job on a third of the nights, and a few ad-hoc requests at any hour."""
    times: list[float] = []
    for day in range(7 * weeks):
        if rng.random() < 0.35:
            start = _at(day, 2.0 + rng.gauss(0, 1 / 6))
            times += _session(rng, start, start + rng.uniform(20, 40) * 60, 30)
    for _ in range(3 * weeks):
        times.append(rng.uniform(3600, 7 * weeks * 86400 - 3600))
    return Trace(
        "batch",
        "Sporadic batch job",
        "a job at about 02:00 (±10 min) on 35 % of nights, 20-40 min with a request every "
        "30 s; 3 ad-hoc requests a week at any hour",
        ("daily 01:45-03:00",),
        tuple(sorted(times)),
        weeks,
    )


TRACES: dict[str, Callable[[random.Random, int], Trace]] = {
    "workday": workday,
    "hobbyist": hobbyist,
    "batch": batch,
}

# -- policies ---------------------------------------------------------------------------------


@dataclass
class Policy:
    """One way of keeping the model: a keeper's verdict (or none) and the clients' lease."""

    name: str
    label: str
    kept: Callable[[float], bool] | None = None  # None: no keeper
    client_lease_s: float = CLIENT_LEASE_S
    on_use: Callable[[float, bool], None] = lambda _t, _cold: None
    extra: dict[str, object] = field(default_factory=dict)


def _lead_min() -> int:
    return windows.lead_minutes(windows.derived_lead_s(LOAD_S))


def _moment(t: float) -> datetime:
    return (START + timedelta(seconds=t)).astimezone(ZONE)


class Verdicts:
    """``windows.evaluate`` asked again only when its answer can change: at the next opening,
    closing or warm-up start it named, or when the intervals change (as the keeper's cron jobs
    and rescheduling make it look then). The answer is the same; it is only not recomputed."""

    def __init__(self) -> None:
        self._intervals: tuple[windows.Interval, ...] | None = None
        self._kept = False
        self._until = -math.inf

    def kept(self, intervals: tuple[windows.Interval, ...], t: float) -> bool:
        if intervals != self._intervals or t >= self._until:
            now = _moment(t)
            verdict = windows.evaluate(intervals, ZONE, _lead_min(), now)
            times = [x for x in (verdict.until, verdict.warm_from, verdict.opens) if x]
            later = [(x - now).total_seconds() for x in times if x > now]
            self._intervals, self._kept = intervals, verdict.kept
            self._until = t + min(later) if later else math.inf
        return self._kept


def window_policy(trace: Trace) -> Policy:
    intervals = windows.parse_windows(trace.windows)
    verdicts = Verdicts()
    return Policy(
        "windows",
        f"windows {', '.join(trace.windows)}",
        kept=lambda t: verdicts.kept(intervals, t),
    )


def learned_policy(level: str) -> Policy:
    threshold = learned.LEVELS[level]
    state = {"profile": learned.Profile(since=START)}
    cache: dict[tuple[int, int, int], learned.LearnedHours] = {}
    verdicts = Verdicts()

    def kept(t: float) -> bool:
        now = _moment(t)
        profile = state["profile"]
        week, slot = learned.slot_of(now, ZONE)
        key = (week, slot, profile.uses)
        if key not in cache:  # as the daemon's store: derived again at most once a slot
            cache.clear()
            cache[key] = learned.hours(profile, ZONE, now, threshold)
        hours = cache[key]
        if hours.learning:
            return learned.judge(hours, ZONE, _lead_min(), now).kept
        return verdicts.kept(hours.intervals, t) if hours.intervals else False

    def on_use(t: float, cold: bool) -> None:
        state["profile"] = learned.record(state["profile"], _moment(t), ZONE, cold=cold)

    policy = Policy(f"learned-{level}", f"learned ({level})", kept=kept, on_use=on_use)
    policy.extra["profile"] = state
    return policy


def policies(trace: Trace) -> list[Policy]:
    return [
        Policy("none", "no keeper (keep_alive 5m)"),
        Policy("keepalive-1", "OLLAMA_KEEP_ALIVE=-1", client_lease_s=math.inf),
        Policy("always", "ollama-keepwarm always on", kept=lambda _t: True),
        window_policy(trace),
        *(learned_policy(level) for level in learned.LEVELS),
    ]


# -- the simulation ---------------------------------------------------------------------------


@dataclass
class Result:
    """What one policy cost on one trace."""

    policy: str
    label: str
    requests: int
    cold: int
    gb_hours: float = 0.0
    hours: str = ""
    late: tuple[int, int, float] = (0, 0, 0.0)
    """After the first week: requests, cold requests, GB-hours."""


class Residency:
    """The model in Ollama under one policy: loaded or not, its lease, the VRAM it held."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.loaded_at: float | None = None  # when the current residency (or load) began
        self.ready_at = math.inf  # when the current load finishes
        self.expires = -math.inf  # a client's end + keep_alive; +inf while a keeper holds it
        self.kept = False
        self.held_s = 0.0
        self.cold = 0
        self.held_late_s = 0.0  # after the first week (learned hours' learning week)
        self.cold_late = 0

    def load(self, at: float) -> None:
        if self.loaded_at is None:
            self.loaded_at, self.ready_at = at, at + LOAD_S

    def unload(self, at: float) -> None:
        if self.loaded_at is not None:
            self.held_s += at - self.loaded_at
            self.held_late_s += max(0.0, at - max(self.loaded_at, WEEK_S))
        self.loaded_at, self.ready_at = None, math.inf

    def expire(self, now: float) -> None:
        """A lease that ran out while no keeper held the model: Ollama unloaded it then."""
        if self.loaded_at is not None and not self.kept and self.expires < now:
            self.unload(max(self.expires, self.loaded_at))

    def look(self, t: float) -> None:
        """The keeper's look: warm when kept, unload when its hours end (after_window unload)."""
        if self.policy.kept is None:
            return
        kept = self.policy.kept(t)
        if kept:
            self.load(t)
            self.expires = math.inf  # renewed for as long as it is kept
        elif self.kept:
            self.unload(t)
            self.expires = t
        self.kept = kept

    def request(self, t: float) -> None:
        """A client's request: cold if it had to load or wait for a load; it moves the lease."""
        self.load(t)
        is_cold = max(0.0, self.ready_at - t) > COLD_THRESHOLD_S
        self.cold += is_cold
        self.cold_late += is_cold and t >= WEEK_S
        self.policy.on_use(t, is_cold)
        done = max(t, self.ready_at) + GENERATE_S
        self.expires = max(self.expires, done + self.policy.client_lease_s)
        self.look(t)  # a use may change learned hours at once


def simulate(trace: Trace, policy: Policy) -> Result:
    """Step the model's residency through the trace under ``policy``; count cold and GB-hours.

    Keeper looks happen at minute ticks and at each request; the model is held from a load's
    start to its unload.
    """
    end = 7 * trace.weeks * 86400.0
    model = Residency(policy)
    requests = [*trace.requests, math.inf]
    tick, index = 0.0, 0
    while min(tick, requests[index]) <= end:
        t = min(tick, requests[index])
        model.expire(t)
        if t == requests[index]:
            index += 1
            model.request(t)
        else:
            tick += TICK_S
            model.look(t)
    model.expire(end)
    model.unload(end)
    result = Result(policy.name, policy.label, len(trace.requests), model.cold)
    result.gb_hours = model.held_s / 3600 * GB
    result.late = (
        sum(r >= WEEK_S for r in trace.requests),
        model.cold_late,
        model.held_late_s / 3600 * GB,
    )
    if "profile" in policy.extra:
        profile = policy.extra["profile"]["profile"]  # type: ignore[index]
        name = policy.name.removeprefix("learned-")
        result.hours = learned.hours(profile, ZONE, _moment(end), learned.LEVELS[name]).text
    return result


# -- the report -------------------------------------------------------------------------------


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def section(
    seed: int, weeks: int, results: dict[str, list[Result]], traces: Sequence[Trace], chart: str
) -> str:
    lines = [
        SECTION,
        "",
        "## Learned hours against fixed windows and always-on (issue 25)",
        "",
        f"`python -m bench.learned --seed {seed} --weeks {weeks} --out docs`. **Simulated in "
        "virtual time**, not run on the fake: weeks cannot run in real time. One 8B model "
        f"({GB:.2f} GB of VRAM, a load takes {LOAD_S:.1f} s: the main bench's "
        "1 s per GB), stepped minute by minute and at each request; the keeper's decisions "
        "come from its own pure functions (`core/windows.py`; `core/learned.py` fed each "
        "request as the use the keeper sees). A request that finds the model unloaded, or "
        f"waits over {COLD_THRESHOLD_S} s for a load, is cold; clients' requests set a 5 min "
        "lease; keepers give the model back at the end of their hours (`after_window = "
        '"unload"`). The floor is 0 on every trace. Learned hours start from nothing: the '
        "first week is learning (kept always), and it is in the totals. "
        "Times are Europe/Berlin, from Monday 2026-03-02 (a DST change on 03-29).",
        "",
    ]
    for trace in traces:
        rows = results[trace.name]
        always = next(r for r in rows if r.policy == "always")
        lines += [
            f"### {trace.title} ({trace.weeks} weeks, {len(trace.requests)} requests)",
            "",
            f"{trace.about[0].upper()}{trace.about[1:]}. "
            f"Written windows: `{', '.join(trace.windows)}`.",
            "",
            "| Policy | Cold requests | VRAM GB-hours | of always-on's "
            "| After the first week: cold | GB-hours, of always-on's |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            late, late_cold, late_gbh = r.late
            lines.append(
                f"| {r.label} | {r.cold} ({_pct(r.cold, r.requests)}) | {r.gb_hours:.0f} "
                f"| {_pct(r.gb_hours, always.gb_hours)} | {late_cold} ({_pct(late_cold, late)}) "
                f"| {_pct(late_gbh, always.late[2])} |"
            )
        learned_rows = [r for r in rows if r.hours]
        lines.append("")
        lines += [f"- {r.label}, at the end: {r.hours}." for r in learned_rows]
        lines.append("")
    work = results.get("workday")
    if work:
        always = next(r for r in work if r.policy == "always")
        balanced = next(r for r in work if r.policy == "learned-balanced")
        gap = 100 * (balanced.cold - always.cold) / balanced.requests
        ok_cold = gap <= 1.0
        ok_vram = balanced.gb_hours <= always.gb_hours / 2
        lines += [
            "**The goal on the workday trace** (learned within 1 % of always-on's cold requests "
            "at no more than half its VRAM GB-hours), with the default threshold (balanced): "
            f"{balanced.cold - always.cold} more cold requests than always-on, "
            f"{gap:.2f} % of the requests ({'met' if ok_cold else 'missed'}); "
            f"{_pct(balanced.gb_hours, always.gb_hours)} of its GB-hours "
            f"({'met' if ok_vram else 'missed'}).",
            "",
        ]
    if chart:
        lines += [f"![Cold requests against VRAM held, per policy]({chart})", ""]
    return "\n".join(lines)


def draw(results: dict[str, list[Result]], traces: Sequence[Trace], path: Path) -> str:
    """A Pareto chart per trace: cold requests against VRAM GB-hours (as ``bench/report.py``
    draws: matplotlib's Agg backend, or a note when it is not installed)."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    figure, axes = plt.subplots(1, len(traces), figsize=(6 * len(traces), 4.8), squeeze=False)
    markers = {"none": "v", "keepalive-1": "^", "always": "s", "windows": "D"}
    for axis, trace in zip(axes[0], traces, strict=True):
        for i, r in enumerate(results[trace.name]):
            axis.scatter(
                r.gb_hours,
                100 * r.cold / r.requests,
                marker=markers.get(r.policy, "o"),
                s=55,
                color=f"C{i}",
                label=r.label if r.policy != "windows" else "hand-written windows",
                zorder=3,
            )
        axis.set_title(f"{trace.title} ({trace.weeks} weeks)")
        axis.set_xlabel("VRAM held (GB-hours)")
        axis.set_ylabel("cold requests (% of requests, symlog)")
        axis.set_yscale("symlog", linthresh=1.0)
        axis.set_xlim(left=0)
        axis.set_ylim(bottom=-0.1)
        axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small")
    figure.suptitle("Cold requests against VRAM held (lower left is better; simulated)")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"chart written to {path}", file=sys.stderr)
    return path.name


def write_section(target: Path, text: str) -> None:
    """Put this benchmark's section into ``benchmarks.md``: in place of the last run's (up to
    the next section marker), else at the end (``bench.run`` keeps what follows its own)."""
    old = target.read_text() if target.exists() else ""
    if SECTION in old:
        head, rest = old.split(SECTION, 1)
        tail = rest.split("\n<!-- ", 1)
        after = f"\n<!-- {tail[1]}" if len(tail) > 1 else ""
        target.write_text(head + text.rstrip("\n") + "\n" + after)
    else:
        target.write_text(old.rstrip("\n") + "\n\n" + text if old else text)


def run(seed: int, weeks: int) -> tuple[list[Trace], dict[str, list[Result]]]:
    traces = [make(random.Random(f"{seed}-{name}"), weeks) for name, make in TRACES.items()]
    results = {t.name: [simulate(t, p) for p in policies(t)] for t in traces}
    return traces, results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="write into DIR/benchmarks.md")
    args = parser.parse_args(argv)
    traces, results = run(args.seed, args.weeks)
    chart = draw(results, traces, args.out / CHART) if args.out else ""
    text = section(args.seed, args.weeks, results, traces, chart)
    print(text)
    if args.out is not None:
        write_section(args.out / "benchmarks.md", text)


if __name__ == "__main__":
    main()
