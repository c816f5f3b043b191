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

from bench.cost import IdleCost
from bench.metrics import COLD_THRESHOLD_S, CellMetrics
from bench.strategies import STRATEGIES
from bench.traces import Trace

__all__ = ["Run", "chart", "machine", "markdown", "target_checks"]

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


def _trace_table(
    trace: Trace, cells: Mapping[tuple[str, str], CellMetrics], scale: float
) -> list[str]:
    lines = [
        f"### {trace.title}",
        "",
        f"Time scale ×{scale:g}. {len(trace.main_requests)} requests to {', '.join(trace.models)}; "
        + "; ".join(
            f"{d.kind} at {d.at_s / 3600:.2f} h ({d.length_s:.0f} s)" for d in trace.disruptions
        )
        + f"; {next(r.model for r in trace.requests if r.client == 'other')} loaded by another "
        f"client at {next(r.at_s for r in trace.requests if r.client == 'other') / 3600:.2f} h.",
        "",
        "| Strategy | Cold requests | Client wait p50 / p99 (s) | Keeper-caused reloads "
        "| Requests the keeper sent | Loss → warm p50 / p99 (s) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, strategy in STRATEGIES.items():
        m = cells.get((trace.name, name))
        if m is None:
            continue
        failed = f" ({m.failed} failed)" if m.failed else ""
        failed += f" (+{m.stalls} stalls)" if m.stalls else ""
        lines.append(
            f"| {strategy.label} | {m.cold} ({m.cold_pct:.1f} %){failed} "
            f"| {_s(m.wait_p50_s)} / {_s(m.wait_p99_s)} | {m.keeper_reloads} "
            f"| {m.keeper_requests} | {_reaction(m)} |"
        )
    return [*lines, ""]


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
    """Check the issue's targets: (target, met, what was measured)."""
    checks: list[tuple[str, bool, str]] = []
    for trace in run.traces:
        keep = run.cells.get((trace.name, "keepwarm"))
        others = [m for (t, s), m in run.cells.items() if t == trace.name and s != "keepwarm"]
        if keep is None:
            continue
        checks.append(
            (
                f"{trace.name}: 0 avoidable cold requests for ollama-keepwarm, some for every "
                "other strategy",
                keep.cold == 0 and all(m.cold > 0 for m in others),
                f"keepwarm {keep.cold}; others "
                + ", ".join(f"{m.strategy} {m.cold}" for m in others),
            )
        )
        checks.append(
            (
                f"{trace.name}: reaction p99 ≤ poll interval + load time",
                keep.reactions_on_target == len(keep.reactions_s),
                f"{keep.reactions_on_target}/{len(keep.reactions_s)} losses on target, "
                f"p99 {_s(keep.reaction_p99_s)} s",
            )
        )
        checks.append(
            (
                f"{trace.name}: 0 keeper-caused reloads",
                keep.keeper_reloads == 0,
                str(keep.keeper_reloads),
            )
        )
    if run.costs:
        peak = max(c.peak_rss_mb for c in run.costs)
        checks.append(
            (f"RSS ≤ {RSS_TARGET_MB:g} MB with 10 models", peak <= RSS_TARGET_MB, f"{peak:.1f} MB")
        )
        real = [c for c in run.costs if c.scale == 1]
        if real:
            checks.append(
                (
                    f"idle CPU ≤ {CPU_TARGET_PCT:g} % with 10 models (real-time window)",
                    real[0].cpu_pct <= CPU_TARGET_PCT,
                    f"{real[0].cpu_pct:.2f} %",
                )
            )
    return checks


def markdown(run: Run, chart_note: str) -> str:
    """Render the whole report."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by the bench harness; do not edit by hand. Rerun from a checkout with:",
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
        f"- **Cold** = the reply's `load_duration` > {COLD_THRESHOLD_S:g} s. Client wait includes"
        " 1-6 s of generation (one token per second).",
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
    lines += ["## Against the targets of issue 7", ""]
    for target, met, measured in target_checks(run):
        lines.append(f"- {'✅' if met else '❌'} {target}: {measured}")
    lines += ["", _METHOD]
    return "\n".join(lines) + "\n"


_METHOD = """## How it is measured

Each (trace, strategy) cell replays the trace against its own fake Ollama
(`ollama_keepwarm.fake`: the real scheduler's keep-alive, FIFO loads and eviction rules) with
`max_loaded` 3 and 48 GiB of VRAM, loads at 1 s per GB (llama3.1:8b 4.9 s, llama3.3:70b 42.5 s),
on a compressed clock. Clients use `/api/chat` with no `keep_alive` and fixed arrival times (open
loop), so every strategy sees the same requests at the same moments.

- **Strategies.** (1) nothing, Ollama's default 5 m lease; (2) `OLLAMA_KEEP_ALIVE=-1`;
  (3) `ollama-keepwarm warm` after every server start (the shipped `ExecStartPost=`; not after a
  suspend or a crash); (4) cron every 4 min: `/api/generate` with only the model, as the usual
  curl recipe; ticks during a suspend are skipped; (5) the daemon with its default config,
  every duration it waits for itself divided by the time scale (`keep_alive` stays 1 h: the fake
  scales the waits it does itself). The daemon's suspend detector compares CLOCK_BOOTTIME with
  CLOCK_MONOTONIC, which a simulated suspend cannot move, so at resume the bench calls
  `Keeper.note_resume()`, which is what the detector's 1 s tick would do.
- **Disruptions.** A restart drops everything. A suspend freezes Ollama's timers and, on resume,
  leaves every runner listed but broken until its next request (the NVIDIA case of the
  reference, §7.7). The big model fits only alone, so its load evicts the kept models.
- **Avoidable.** No main request is placed while Ollama is down or asleep, nor within poll interval
  + the loads in the way + 10 s after a disruption (cold there for any strategy), nor within 15 s
  of a lease boundary (5 m or 1 h idle, a cron tick), where the outcome would hang on scheduling
  jitter. So every cold request counted was avoidable.
- **What can vary between runs with the same seed.** A request that arrives while another
  request's load is under way waits for the rest of it; when that rest lands within a
  millisecond (real) of the threshold it can count either way. Over three runs on the machine
  above, the agent loop's counts for no keeper, OLLAMA_KEEP_ALIVE=-1 and cron moved by one
  request; the Slack bot's counts and ollama-keepwarm's 0 never moved. Waits and loss → warm
  times vary by tenths of a second.
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
"""


def chart(run: Run, path: Path) -> str:
    """Draw cumulative cold requests per strategy over each trace; return a note if skipped."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (
            "_Chart skipped: matplotlib is not installed "
            "(`pip install -e '.[bench]'` and rerun to draw it)._"
        )
    figure, axes = plt.subplots(1, len(run.traces), figsize=(6 * len(run.traces), 4), squeeze=False)
    for axis, trace in zip(axes[0], run.traces, strict=True):
        for name, strategy in STRATEGIES.items():
            m = run.cells.get((trace.name, name))
            if m is None:
                continue
            hours = [0.0, *(t / 3600 for t in m.cold_times_s), trace.duration_s / 3600]
            counts = [0, *range(1, m.cold + 1), m.cold]
            axis.step(hours, counts, where="post", label=strategy.label)
        axis.set_title(trace.title)
        axis.set_xlabel("trace time (h)")
        axis.set_ylabel("cold requests (cumulative)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    figure.suptitle(f"Cold requests per strategy over each trace (seed {run.seed})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"chart written to {path}", file=sys.stderr)
    return ""
