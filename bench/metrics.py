"""Numbers from one cell's record: cold requests, waits, reloads, keeper traffic, reaction.

Pure functions over :class:`bench.cell.CellResult`, so the definitions can be read in one place:

* **cold**: a main-client request whose reply says it waited for a load (``load_duration``) longer
  than :data:`COLD_THRESHOLD_S` trace seconds, while a load of its model was in progress. (A
  reply can report a long ``load_duration`` with no load at all when the OS or the garbage
  collector stalls the fake for a few milliseconds, which the compressed clock magnifies: those
  are counted as ``stalls``, not as cold.) The trace keeps every main request out of the
  windows where a cold start is unavoidable (see :mod:`bench.traces`), so each one counted here
  was avoidable.
* **keeper-caused reloads**: loads with reason ``reload`` (an already-loaded model loaded again,
  e.g. because options differed) requested through a keeper's endpoint (not ``/api/chat``).
* **loss -> warm**: for each kept model that was warm before a restart, suspend or eviction, the
  time until a load of it succeeded again; ``inf`` when it never did before the trace ended.
  Its target is ``poll interval + the loads it had to wait for`` (the big model's, for an
  eviction, then the kept models ranked before it, then its own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.cell import CLIENT_PATH, CellResult, ClientResult, Loss
from bench.traces import load_seconds
from ollama_keepwarm.core.config import DaemonConfig

__all__ = ["COLD_THRESHOLD_S", "CellMetrics", "measure", "percentile"]

COLD_THRESHOLD_S = 1.5
"""A request is cold when it waited longer than this (trace seconds) for a load. The smallest
kept model loads in 2.0 s; a warm reply reports ~0.01 s, but an OS scheduling stall inside the
fake's handler counts too, and 10 ms of real time is 1.2 trace seconds at x120."""

_POLL_S = DaemonConfig().poll_interval_s
_TOLERANCE_S = 0.5


def percentile(values: Sequence[float], pct: float) -> float:
    """Return the nearest-rank percentile (``inf`` values sort last); ``nan`` when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class CellMetrics:
    """The benchmark's numbers for one (trace, strategy) cell; times in trace seconds."""

    trace: str
    strategy: str
    requests: int
    failed: int
    cold: int
    stalls: int
    cold_times_s: tuple[float, ...]
    wait_p50_s: float
    wait_p99_s: float
    keeper_reloads: int
    keeper_requests: int
    reactions_s: tuple[float, ...]
    reaction_targets_s: tuple[float, ...]

    @property
    def cold_pct(self) -> float:
        """Cold requests as a percentage of all main-client requests."""
        return 100.0 * self.cold / self.requests if self.requests else 0.0

    @property
    def reaction_p50_s(self) -> float:
        """Median loss -> warm time."""
        return percentile(self.reactions_s, 50)

    @property
    def reaction_p99_s(self) -> float:
        """99th percentile loss -> warm time (the maximum, with this few losses)."""
        return percentile(self.reactions_s, 99)

    @property
    def reactions_on_target(self) -> int:
        """How many losses were warm again within poll interval + the loads they waited for."""
        return sum(
            1 for r, t in zip(self.reactions_s, self.reaction_targets_s, strict=True) if r <= t
        )


def _target_s(loss: Loss, ranked: Sequence[str]) -> float:
    before = ranked[: ranked.index(loss.model) + 1] if loss.model in ranked else [loss.model]
    return _POLL_S + loss.wait_for_s + sum(load_seconds(m) for m in before) + _TOLERANCE_S


def _reaction_s(cell: CellResult, loss: Loss) -> float:
    finished = [
        span.finished_s
        for span in cell.loads
        if span.model == loss.model
        and span.ok
        and span.finished_s is not None
        and span.started_s >= loss.at_s - _TOLERANCE_S
    ]
    return min(finished) - loss.at_s if finished else math.inf


def _load_during(cell: CellResult, client: ClientResult) -> bool:
    """Tell whether a load of the client's model ran while the client waited."""
    end = client.at_s + client.wait_s
    return any(
        span.model == client.model
        and span.started_s < end
        and (span.finished_s is None or span.finished_s > client.at_s)
        for span in cell.loads
    )


def measure(cell: CellResult, models: Sequence[str]) -> CellMetrics:
    """Compute every metric of ``cell``; ``models`` are the kept models in rank order."""
    main = [c for c in cell.clients if c.client == "main"]
    answered = [c for c in main if c.status == 200]
    slow = [c for c in answered if c.load_s > COLD_THRESHOLD_S]
    cold = [c for c in slow if _load_during(cell, c)]
    waits = [c.wait_s for c in answered]
    reloads = sum(1 for s in cell.loads if s.reason == "reload" and s.requested_by != CLIENT_PATH)
    return CellMetrics(
        trace=cell.trace,
        strategy=cell.strategy,
        requests=len(main),
        failed=len(main) - len(answered),
        cold=len(cold),
        stalls=len(slow) - len(cold),
        cold_times_s=tuple(c.at_s for c in cold),
        wait_p50_s=percentile(waits, 50),
        wait_p99_s=percentile(waits, 99),
        keeper_reloads=reloads,
        keeper_requests=cell.keeper_requests,
        reactions_s=tuple(_reaction_s(cell, loss) for loss in cell.losses),
        reaction_targets_s=tuple(_target_s(loss, models) for loss in cell.losses),
    )
