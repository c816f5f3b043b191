"""A smoke run of the benchmark harness on a tiny trace (the full bench is ``python -m bench.run``).

The tiny trace is built so the outcome is certain: without a keeper every request meets a cold
model (first use, an idle gap past 5 m, a restart, an eviction by a 70B model); with
ollama-keepwarm none does. Each strategy runs twice on the same seed to check that the counts
repeat.
"""

from __future__ import annotations

import asyncio
import logging

import structlog
from bench.cell import run_cell
from bench.metrics import measure
from bench.traces import tiny

SEED = 7
SCALE = 120.0  # 20 trace minutes in 10 s


async def test_keepwarm_has_no_cold_requests_where_no_keeper_has_them_all() -> None:
    """Same tiny trace, same seed: no keeper is cold every time, ollama-keepwarm never."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    trace = tiny(SEED)
    strategies = ("none", "keepwarm", "none", "keepwarm")
    cells = await asyncio.gather(*(run_cell(trace, name, SCALE) for name in strategies))
    none, keep, none_again, keep_again = (measure(cell, trace.models) for cell in cells)

    assert none.requests == len(trace.main_requests) == 4
    assert none.failed == keep.failed == 0
    assert none.cold == none.requests
    assert keep.cold == 0
    assert (none_again.cold, keep_again.cold) == (none.cold, keep.cold)
    assert keep.keeper_reloads == 0
    assert none.keeper_requests == 0 < keep.keeper_requests
    assert len(keep.reactions_s) == 2  # the restart and the eviction
    assert keep.reactions_on_target == 2
