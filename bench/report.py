"""Turn metrics into the Markdown report (``docs/benchmarks.md``) and the PNG chart.

The table is printed and written by the same function, so what the console shows is what the
docs say. The chart needs matplotlib (the ``bench`` extra); without it the report says so and
everything else is still produced.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cost import IdleCost
from bench.floor import COLD_THRESHOLD_S
from bench.metrics import CellMetrics
from bench.strategies import STRATEGIES
from bench.traces import BIG_MODEL, Trace

__all__ = ["Run", "chart", "machine", "markdown", "readme_table", "target_checks"]

RSS_TARGET_MB = 45.0
CPU_TARGET_PCT = 0.5


@dataclass(frozen=True)
class Run:
    """Everything one benchmark run produced, plus how it was run."""

    command: str
    seed: int
    scales: Mapping[str, float]
    jobs: int
    traces: tuple[Trace, ...]
    cells: Mapping[tuple[str, str], CellMetrics]
    costs: tuple[IdleCost, ...]
    wall_s: float
    cells_cpu_load: float
    """CPU the cells used, as a share of the whole machine while they ran."""


def machine() -> str:
    """Describe this machine: cores, CPU model, Python, OS."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores (nproc), {model}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def _s(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:.1f}"


def _reaction(m: CellMetrics) -> str:
    if not m.reactions_s:
        return "no losses"
    return (
        f"{_s(m.reaction_p50_s)} / {_s(m.reaction_p99_s)} "
        f"({m.reactions_on_target}/{len(m.reactions_s)} on target)"
    )


def _describe(trace: Trace) -> str:
    main = trace.main_requests
    other = trace.other_requests
    parts = [f"{d.kind} at {d.at_s / 3600:.2f} h ({d.length_s:.0f} s)" for d in trace.disruptions]
    if other:
        parts.append(
            f"another client's session with {BIG_MODEL} from {other[0].at_s / 3600:.2f} h "
            f"({len(other)} requests)"
        )
    return f"{len(main)} requests to {', '.join(trace.models)}; " + "; ".join(parts) + "."


_RESUME_NOTE = (
    "Only ollama-keepwarm is told about the resume (the bench calls `Keeper.note_resume()`, "
    "what logind's PrepareForSleep signal or its 1 s clock check triggers in real life); the "
    "others get what their real counterparts get: nothing for Ollama alone and for the "
    "preloads (`ExecStartPost=` does not run on resume), skipped ticks for cron."
)


def _trace_table(
    trace: Trace, cells: Mapping[tuple[str, str], CellMetrics], scale: float
) -> list[str]:
    rows = [cells[(trace.name, name)] for name in STRATEGIES if (trace.name, name) in cells]
    floor = rows[0].floor if rows else 0
    lines = [
        f"### {trace.title}",
        "",
        f"Time scale ×{scale:g}. {_describe(trace)} Every request is counted; **{floor}** of "
        "them arrived before any keeper could have had their model loaded (the floor).",
        "",
        "| Strategy | Cold requests | Floor | Avoidable cold | Client wait p50 / p99 (s) "
        "| Other client: cold (by this strategy's warms) | Keeper-caused reloads "
        "| Requests the keeper sent | Loss → warm p50 / p99 (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for m in rows:
        notes = f" ({m.failed} failed)" if m.failed else ""
        notes += f" (+{m.stalls} stalls)" if m.stalls else ""
        floor_note = f" ({m.floor_warm} warm!)" if m.floor_warm else ""
        lines.append(
            f"| {STRATEGIES[m.strategy].label} | {m.cold} ({m.cold_pct:.1f} %){notes} "
            f"| {m.floor}{floor_note} | {m.avoidable} "
            f"| {_s(m.wait_p50_s)} / {_s(m.wait_p99_s)} "
            f"| {m.other_cold} of {m.other_requests} ({m.other_cold_caused}) "
            f"| {m.keeper_reloads} | {m.keeper_requests} | {_reaction(m)} |"
        )
    return [*lines, "", _RESUME_NOTE, ""]


def readme_table(run: Run) -> str:
    """Return the README's benchmark table: cold requests against the floor, per trace."""
    traces = run.traces
    header = "| strategy | " + " | ".join(
        f"cold requests, {t.title.split(' (')[0]} ({len(t.main_requests)} in "
        f"{t.duration_s / 3600:.0f} h, floor {_floor(run, t)})"
        for t in traces
    )
    lines = [
        header + " | loss → warm again, p99 | other client's cold requests caused |",
        "|---|" + "---:|" * len(traces) + "---:|---:|",
    ]
    for name, strategy in STRATEGIES.items():
        cells = [run.cells.get((t.name, name)) for t in traces]
        if any(c is None for c in cells):
            continue
        got = [c for c in cells if c is not None]
        label = f"**{strategy.label}**" if name == "keepwarm" else strategy.label
        counts = [f"**{c.cold}**" if name == "keepwarm" else str(c.cold) for c in got]
        reaction = " / ".join(f"{_s(c.reaction_p99_s)} s" for c in got)
        caused = " / ".join(str(c.other_cold_caused) for c in got)
        lines.append(f"| {label} | " + " | ".join(counts) + f" | {reaction} | {caused} |")
    return "\n".join(lines) + "\n"


def _floor(run: Run, trace: Trace) -> int:
    return next((m.floor for (t, _), m in run.cells.items() if t == trace.name), 0)


def _cost_table(costs: Sequence[IdleCost]) -> list[str]:
    lines = [
        "| Window | Real time (s) | CPU (s) | CPU, % of one core | Requests to Ollama "
        "| RSS / peak (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in costs:
        window = (
            f"{c.trace_s / 3600:.0f} h idle, compressed ×{c.scale:g}"
            if c.scale != 1
            else f"{c.trace_s:.0f} s idle, real time"
        )
        lines.append(
            f"| {window} | {c.real_s:.1f} | {c.cpu_s:.2f} | {c.cpu_pct:.2f} % | {c.requests} "
            f"| {c.rss_mb:.1f} / {c.peak_rss_mb:.1f} |"
        )
    compressed = [c for c in costs if c.scale != 1]
    if compressed:
        c = compressed[0]
        lines += [
            "",
            f"The compressed hour does an hour's polls and refreshes in {c.real_s:.0f} s, so its "
            f"percentage is ~{c.scale:g}× the real one: spread over a real hour, its "
            f"{c.cpu_s:.2f} CPU-seconds are {100 * c.cpu_s / c.trace_s:.3f} % of one core.",
        ]
    return lines


def target_checks(run: Run) -> list[tuple[str, bool, str]]:
    """Check the targets of issue 7, worded for users: (promise, kept, what was measured)."""
    checks: list[tuple[str, bool, str]] = []
    for trace in run.traces:
        keep = run.cells.get((trace.name, "keepwarm"))
        if keep is None:
            continue
        others = [m for (t, s), m in run.cells.items() if t == trace.name and s != "keepwarm"]
        title = trace.title.split(" (")[0]
        checks.append(
            (
                f"{title}: your client meets a cold model only when nothing could have "
                "prevented it",
                keep.avoidable == 0 and keep.floor_warm == 0,
                f"{keep.cold} cold requests of {keep.requests}, all {keep.floor} of the floor "
                "(right after Ollama started, restarted or woke up, or behind another user's "
                f"70B load) and {keep.avoidable} more; the other recipes had "
                + ", ".join(f"{m.avoidable} more ({m.strategy})" for m in others),
            )
        )
        checks.append(
            (
                f"{title}: after a loss your models are warm again within one poll (5 s) plus "
                "the loads they must wait for",
                bool(keep.reactions_s) and keep.reactions_on_target == len(keep.reactions_s),
                f"{keep.reactions_on_target} of {len(keep.reactions_s)} losses, the slowest "
                f"{_s(keep.reaction_p99_s)} s",
            )
        )
        checks.append(
            (
                f"{title}: it never makes Ollama reload a model your clients have loaded",
                keep.keeper_reloads == 0,
                f"{keep.keeper_reloads} reloads",
            )
        )
        checks.append(
            (
                f"{title}: it does not push out another user's model",
                keep.other_cold_caused == 0,
                f"{keep.other_cold_caused} of the other user's {keep.other_requests} requests "
                f"were cold because its warms evicted the 70B ({keep.other_cold} cold in all)",
            )
        )
    if run.costs:
        peak = max(c.peak_rss_mb for c in run.costs)
        checks.append(
            (
                f"it stays small: at most {RSS_TARGET_MB:g} MB of memory with 10 models",
                peak <= RSS_TARGET_MB,
                f"{peak:.1f} MB at peak",
            )
        )
        real = [c for c in run.costs if c.scale == 1]
        if real:
            checks.append(
                (
                    f"it stays idle: at most {CPU_TARGET_PCT:g} % of one core with 10 models",
                    real[0].cpu_pct <= CPU_TARGET_PCT,
                    f"{real[0].cpu_pct:.2f} % over {real[0].real_s:.0f} s of real time",
                )
            )
    return checks


def markdown(run: Run, chart_note: str) -> str:
    """Render the whole report."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by the bench harness; do not edit by hand. Regenerate this file from a "
        "checkout with (`--out` defaults to a scratch folder, so a plain run leaves it alone):",
        "",
        "```",
        run.command,
        "```",
        "",
        f"- **Seed** {run.seed}; **time scale** "
        + ", ".join(f"×{scale:g} ({name})" for name, scale in run.scales.items())
        + " (at ×240 one real second is 4 trace minutes; every time below is in trace seconds "
        "unless it says real).",
        f"- **Machine**: {machine()}.",
        f"- **Run**: {run.jobs} cells at a time, each in its own process, using "
        f"{100 * run.cells_cpu_load:.0f} % of the machine's CPU on average; "
        f"{run.wall_s / 60:.1f} min wall clock in all.",
        f"- **Cold** = the reply's `load_duration` > {COLD_THRESHOLD_S:g} s, or Ollama was down "
        "and the request had to be retried. **Floor** = the cold requests no keeper could have "
        "avoided (see the method below). The main clients' waits include 1-6 s of generation "
        "(one token per second).",
        "",
        "## Results",
        "",
    ]
    for trace in run.traces:
        lines += _trace_table(trace, run.cells, run.scales[trace.name])
    lines += ["![Cold requests over each trace](benchmarks.png)", ""] if not chart_note else []
    lines += [chart_note, ""] if chart_note else []
    if run.costs:
        lines += ["## The daemon's own cost (10 kept models, idle)", "", *_cost_table(run.costs)]
        lines.append("")
    lines += [
        "## Against the project's promises",
        "",
        "What the run above means if you run ollama-keepwarm with its default configuration "
        "(✅ kept, ❌ not kept):",
        "",
    ]
    for target, met, measured in target_checks(run):
        lines.append(f"- {'✅' if met else '❌'} **{target}.** Measured: {measured}.")
    lines += ["", _METHOD]
    return "\n".join(lines) + "\n"


_METHOD = """## How it is measured

Each (trace, strategy) cell replays the trace against its own fake Ollama
(`ollama_keepwarm.fake`: the real scheduler's keep-alive, FIFO loads and eviction rules) with
`max_loaded` 3 and 48 GiB of VRAM, loads at 1 s per GB (llama3.1:8b 4.9 s, llama3.3:70b 42.5 s),
on a compressed clock. Clients use `/api/chat` with no `keep_alive` and fixed arrival times (open
loop), so every strategy sees the same requests at the same moments.

- **Traces.** Plain seeded arrival processes: bursts and idle gaps (Slack bot), sessions and
  coffee breaks (agent loop). Nothing is dropped around a disruption and nothing is moved off a
  lease boundary; the only quiet times are the scenario's own (lunch, coffee breaks), and the
  suspends fall inside them. A request made while Ollama is down is retried every second until
  it answers (a bot with a retry wrapper) and counts as cold; one made while the machine sleeps
  is answered after the resume. Another user runs a session of 3-6 questions on a 70B model.
- **Strategies.** (1) nothing, Ollama's default 5 m lease; (2) `OLLAMA_KEEP_ALIVE=-1`;
  (3) `ollama-keepwarm warm` after every server start (the shipped `ExecStartPost=`, lease 1 h;
  not after a suspend or a crash); (4) (2) and (3) together, the preload asking for `-1` too;
  (5) cron every 4 min: `/api/generate` with only the model, as the usual curl recipe; ticks
  during a suspend are skipped; (6) the daemon with its default config, every duration it
  waits for itself divided by the time scale (`keep_alive` stays 1 h: the fake scales the waits
  it does itself).
- **The resume.** The daemon's suspend detector compares CLOCK_BOOTTIME with CLOCK_MONOTONIC,
  which a simulated suspend cannot move, so at resume the bench calls `Keeper.note_resume()`,
  what logind's PrepareForSleep signal does (or the detector's 1 s tick, where there is no
  system bus). No other strategy is told anything, as in real life: `ExecStartPost=` does not
  run on resume, and cron just skips the ticks that fell during the sleep.
- **Disruptions.** A restart drops everything. A suspend freezes Ollama's timers and, on resume,
  leaves every runner listed but broken until its next request (the NVIDIA case of the
  reference, §7.7). The 70B model fits only alone, so its load evicts the kept models; they fit
  beside it once it is loaded.
- **Floor.** A main request is *unavoidably cold* when it arrived after something no keeper
  controls took its model away (Ollama's start, a restart, a suspend, the other user's first
  70B load) and before loss + fastest detection (0 s: an `ExecStartPost=`, logind, a watcher
  that never sleeps) + the loads that must come first (the 70B's) + its own load − 1.5 s. The
  floor ignores the other kept models' loads, so it is a lower bound: no strategy can go under
  it, and *avoidable cold* = cold requests outside the floor. A floor request that came out warm
  would be shown as "(N warm!)": the floor would then be wrong.
- **Other client.** Its cold requests (same definition), and in brackets those whose 70B had
  been evicted by the strategy's own warm (a load not asked for through `/api/chat`): the cost
  a strategy puts on other users of the same Ollama.
- **Stalls** (shown as "+N stalls"): replies whose `load_duration` passed the threshold while no
  load of that model ran. The fake measures `load_duration` in real time, so a few milliseconds
  of OS or garbage-collector stall, times the scale, can look like a load. Not counted as cold.
- **Loss → warm**: for each kept model that was warm at a restart, suspend or eviction, the time
  from Ollama answering again (restart), the resume (suspend) or the eviction until a load of it
  succeeded; *on target* when within poll interval (5 s) + the loads it had to wait for (the big
  model's, the kept models ranked before it, its own) + 0.5 s. *never* = not before the trace ended.
- **Requests the keeper sent** are all requests Ollama received other than the clients' chats
  (ps, version, show, generate), during the whole trace.
- **Keeper-caused reloads** are loads of an already-loaded model (reason `reload`) requested by a
  keeper, from the fake's load log.
- **What can vary between runs with the same seed.** The traces are the same; the outcome of a
  request that lands within a fraction of a trace second of a lease's end, or of the cold
  threshold, hangs on scheduling jitter magnified by the time scale.
"""


def _mark_events(axis: Any, trace: Trace) -> None:
    """Shade the suspends, and draw a line at each restart and at the 70B's first load."""
    for d in trace.disruptions:
        if d.kind == "suspend":
            axis.axvspan(d.at_s / 3600, d.end_s / 3600, color="grey", alpha=0.2, label="suspend")
        else:
            axis.axvline(d.at_s / 3600, color="red", linestyle=":", label="restart")
    if trace.other_requests:
        at = trace.other_requests[0].at_s / 3600
        axis.axvline(at, color="purple", linestyle="--", label=f"{BIG_MODEL} loaded")


def chart(run: Run, path: Path) -> str:
    """Draw cumulative cold requests per strategy over each trace; return a note if skipped."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return (
            "_Chart skipped: matplotlib is not installed "
            "(`pip install -e '.[bench]'` and rerun to draw it)._"
        )
    figure, axes = plt.subplots(
        1, len(run.traces), figsize=(7 * len(run.traces), 4.5), squeeze=False
    )
    for axis, trace in zip(axes[0], run.traces, strict=True):
        _mark_events(axis, trace)
        floor = 0
        for name, strategy in STRATEGIES.items():
            m = run.cells.get((trace.name, name))
            if m is None:
                continue
            floor = m.floor
            hours = [0.0, *(t / 3600 for t in m.cold_times_s), trace.duration_s / 3600]
            counts = [0, *range(1, m.cold + 1), m.cold]
            axis.step(hours, counts, where="post", label=strategy.label.replace("`", ""))
        axis.axhline(floor, color="black", linewidth=0.8, label=f"floor ({floor})")
        axis.set_title(trace.title)
        axis.set_xlabel("trace time (h)")
        axis.set_ylabel("cold requests (cumulative)")
        axis.set_xlim(0, trace.duration_s / 3600)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        axis.legend(unique.values(), unique.keys(), fontsize="x-small", loc="upper left")
    figure.suptitle(f"Cold requests per strategy over each trace (seed {run.seed})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"chart written to {path}", file=sys.stderr)
    return ""
