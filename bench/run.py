"""Run the whole benchmark in one command and write the report (+ chart) to ``--out``.

    python -m bench.run               # into a fresh scratch folder (printed at the end)
    python -m bench.run --out docs    # regenerate the tracked docs/benchmarks.md, deliberately

from the repository root, in the project's virtualenv. It replays both traces (Slack bot, agent
loop) against all six strategies, one fresh fake Ollama per cell, then measures the daemon's
own idle cost with 10 models, prints the Markdown report and writes ``benchmarks.md``
and ``benchmarks.png`` (the chart needs matplotlib: ``pip install -e '.[bench]'``) to
``--out``, and prints the README's table last. About 5 minutes on 2 cores. Options:
``--seed`` (7), ``--scale`` (one time scale for every trace instead of the defaults below),
``--jobs`` (cells at once, each in its own process), ``--no-cost``, ``--dump DIR`` (pickle the
raw records, to dig into one).

Why these time scales. Each cell is one event loop holding a fake Ollama, its clients and the
strategy; a millisecond of real scheduling delay is ``scale`` milliseconds of trace time. The
Slack bot is light (~100 requests a day), so x240 (9 h in 135 s) is fine five cells at a time.
The agent loop sends ~3300 requests in 3 h at ~3 ms of CPU each: at x240 five cells at a time
saturated both cores, replies queued behind each other and the counts changed (measured: 50 cold
requests for "no keeper" instead of 22, waits p99 146 s instead of 7). At x120 five at a time
give the same counts and waits (p99 within 1 s) as one cell alone, at ~30 % of the machine.
The cells run longest first, so the six Slack cells run together, then the six agent cells.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import structlog

from bench.cell import CellResult, run_cell
from bench.cost import IdleCost, measure_idle
from bench.crash import keep_section
from bench.metrics import measure
from bench.report import Run, chart, markdown, readme_table
from bench.strategies import STRATEGIES
from bench.traces import TRACES, Trace

__all__ = ["main", "run_cells"]

DEFAULT_SEED = 7
DEFAULT_SCALES = {"slack": 240.0, "agent": 120.0}
COST_SCALE = 240.0
DEFAULT_JOBS = 6
COST_REALTIME_S = 30.0


def _quiet() -> None:
    """Silence the in-process daemon's logs: the bench reports numbers, not events."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)


def _cell(trace_name: str, seed: int, strategy: str, scale: float) -> CellResult:
    """Run one cell in a worker process (the trace is rebuilt from its seed there)."""
    _quiet()
    return asyncio.run(run_cell(TRACES[trace_name](seed), strategy, scale))


def run_cells(
    traces: list[Trace], seed: int, scales: dict[str, float], jobs: int
) -> dict[tuple[str, str], CellResult]:
    """Run every (trace, strategy) cell, ``jobs`` processes at a time, longest first."""
    cells = sorted(
        ((t.name, s) for t in traces for s in STRATEGIES),
        key=lambda cell: -next(t.duration_s / scales[t.name] for t in traces if t.name == cell[0]),
    )
    context = multiprocessing.get_context("spawn")
    results: dict[tuple[str, str], CellResult] = {}
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, max_tasks_per_child=1
    ) as pool:
        futures = {pool.submit(_cell, t, seed, s, scales[t]): (t, s) for t, s in cells}
        for future in concurrent.futures.as_completed(futures):
            key = futures[future]
            cell = results[key] = future.result()
            print(
                f"  {key[0]:>6} / {key[1]:<9} {cell.real_s:5.1f} s, CPU {cell.cpu_s:4.1f} s",
                file=sys.stderr,
            )
    return results


def _costs() -> tuple[IdleCost, ...]:
    compressed = asyncio.run(measure_idle(COST_SCALE, 3600.0))
    realtime = asyncio.run(measure_idle(1.0, COST_REALTIME_S))
    return compressed, realtime


def _command(args: argparse.Namespace) -> str:
    parts = ["python -m bench.run"]
    if args.seed != DEFAULT_SEED:
        parts.append(f"--seed {args.seed}")
    if args.scale is not None:
        parts.append(f"--scale {args.scale:g}")
    if args.jobs != DEFAULT_JOBS:
        parts.append(f"--jobs {args.jobs}")
    if args.traces != ",".join(TRACES):
        parts.append(f"--traces {args.traces}")
    if args.out is not None:
        parts.append(f"--out {args.out}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the report and write it under ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--scale", type=float, help="one time scale for every trace")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    parser.add_argument("--traces", default=",".join(TRACES), help="comma-separated")
    parser.add_argument("--no-cost", action="store_true", help="skip the idle-cost measurement")
    parser.add_argument(
        "--out", type=Path, help="where to write the report (default: a new scratch folder)"
    )
    parser.add_argument("--dump", type=Path, help="also pickle every cell's raw record here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    traces = [TRACES[name](args.seed) for name in args.traces.split(",")]
    scales = {t.name: args.scale or DEFAULT_SCALES[t.name] for t in traces}
    print(f"running {len(traces) * len(STRATEGIES)} cells, {args.jobs} at a time", file=sys.stderr)
    results = run_cells(traces, args.seed, scales, args.jobs)
    cells_wall_s = time.monotonic() - started
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        for (trace, strategy), cell in results.items():
            (args.dump / f"{trace}-{strategy}.pickle").write_bytes(pickle.dumps(cell))
    by_name = {t.name: t for t in traces}
    metrics = {key: measure(cell, by_name[key[0]]) for key, cell in results.items()}
    costs: tuple[IdleCost, ...] = ()
    if not args.no_cost:
        print("measuring the daemon's idle cost", file=sys.stderr)
        costs = _costs()
    load = sum(c.cpu_s for c in results.values()) / (cells_wall_s * (os.cpu_count() or 1))
    run = Run(
        command=_command(args),
        seed=args.seed,
        scales=scales,
        jobs=args.jobs,
        traces=tuple(traces),
        cells=metrics,
        costs=costs,
        wall_s=time.monotonic() - started,
        cells_cpu_load=load,
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="okw-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(run, chart(run, out / "benchmarks.png"))
    target = out / "benchmarks.md"
    # bench.crash writes its own section; a regeneration keeps it.
    report = keep_section(target.read_text() if target.exists() else "", report)
    target.write_text(report)
    print(report)
    print("The README's table:\n\n" + readme_table(run))
    print(f"report written to {out}/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
