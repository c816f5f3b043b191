"""A smoke run of the benchmark harness on a tiny trace (the full bench is ``python -m bench.run``).

It runs on the fake's time scale: the 12-minute trace takes 36 s, every cell in one event loop.
The tiny trace is built so each outcome has seconds of trace time (a fifth of a second and
more in real time) of margin, so the counts are certain: 3 of its 7 requests are in the floor,
no keeper meets two more cold models (an idle gap past 5 m, a restart), ollama-keepwarm meets
none beyond the floor. No keeper and ollama-keepwarm run twice to check the counts repeat.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math

import structlog
from bench.cell import run_cell
from bench.floor import floor
from bench.metrics import CellMetrics, measure
from bench.report import Run, markdown, readme_table
from bench.strategies import STRATEGIES
from bench.traces import tiny

SEED = 7
SCALE = 20.0
"""12 trace minutes in 36 s. The tightest outcome is the first request's: sent about 1 s of
trace time after cron's warm starts, before the 4.9 s load ends, so it is cold (the floor).
At x60 that margin was 65 ms real, and with both cores busy and twelve chaos schedules beside
it a stalled loop let cron's load finish first ("cron: a floor request was warm", once); at
x20 it is 0.2 s."""


async def _run_all() -> tuple[dict[str, CellMetrics], dict[str, CellMetrics]]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    trace = tiny(SEED)
    names = [*STRATEGIES, "none", "keepwarm"]
    # What ran before this test must not matter (issue 23: "cron: a floor request was warm"
    # in 6 of 13 random orders): a collection of the heap other tests left behind, or one
    # cell's setup, stalling the loop in the first ~80 ms lets cron's t=0 load finish before
    # the first request is sent. So the cells start their clocks together, after every
    # setup, and the heap left by earlier tests is frozen out of the collector's way.
    gc.collect()
    gc.freeze()
    try:
        barrier = asyncio.Barrier(len(names))
        cells = await asyncio.gather(*(run_cell(trace, n, SCALE, barrier.wait) for n in names))
    finally:
        gc.unfreeze()
    metrics = [measure(cell, trace) for cell in cells]
    first = {m.strategy: m for m in metrics[: len(STRATEGIES)]}
    again = {m.strategy: m for m in metrics[len(STRATEGIES) :]}
    return first, again


async def test_every_request_is_counted_and_no_strategy_beats_the_floor() -> None:
    """Same tiny trace, same seed: every request counted, the floor under every cold count."""
    trace = tiny(SEED)
    first, again = await _run_all()

    assert len(floor(trace)) == 3
    for m in first.values():
        assert (m.strategy, m.requests, m.failed) == (m.strategy, len(trace.main_requests), 0)
        assert m.floor == 3
        assert m.floor_warm == 0, f"{m.strategy}: a floor request was warm"
        assert m.cold >= m.floor
        assert m.other_requests == 1
        assert m.other_cold == 1  # the 70B's first load, cold for everyone
        assert m.other_cold_caused == 0
    assert first["none"].cold == 5
    assert first["keepwarm"].cold == first["keepwarm"].floor
    assert first["keepwarm"].avoidable == 0 < first["none"].avoidable
    for name, m in again.items():
        assert (m.cold, m.floor_warm) == (first[name].cold, first[name].floor_warm)

    keep = first["keepwarm"]
    assert keep.keeper_reloads == 0
    assert first["none"].keeper_requests == 0 < keep.keeper_requests
    assert len(keep.reactions_s) == 3  # two restarts and the eviction
    # Each loss was loaded again. How fast is the benchmark's to say ("N of 3 on target"), not
    # this test's: its targets leave a quarter of a real second at x20, and a clean-clone CI
    # run once saw one reaction miss its target (2 == 3) where the counts above all held.
    assert all(math.isfinite(r) for r in keep.reactions_s)

    cells = {(trace.name, name): m for name, m in first.items()}
    run = Run("python -m bench.run", SEED, {"tiny": SCALE}, 1, (trace,), cells, (), 3.0, 0.1)
    report = markdown(run, "_no chart_")
    assert "| ollama-keepwarm (defaults) | 3 (42.9 %) | 3 | 0 |" in report
    assert "floor 3" in readme_table(run)
