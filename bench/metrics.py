"""Numbers from one cell's record: cold requests, waits, reloads, keeper traffic, reaction.

Pure functions over :class:`bench.cell.CellResult`, so the definitions can be read in one place.
A new metric is a field of :class:`CellMetrics` computed in :func:`measure` from the record.

* **cold**: a main-client request whose reply says it waited for a load (``load_duration``) longer
  than :data:`COLD_THRESHOLD_S` trace seconds, while a load of its model was in progress, or one
  that met Ollama down and had to be retried. (A reply can report a long ``load_duration`` with
  no load at all when the OS or the garbage collector stalls the fake for a few milliseconds,
  which the compressed clock magnifies: those are counted as ``stalls``, not as cold.) Every
  request of the trace is counted; the **floor** (:mod:`bench.floor`) is how many of them no
  keeper could have avoided.
* **cost to others**: the other client's cold requests, and how many of them found the 70B gone
  because a strategy's own warm (any load not asked for through ``/api/chat``) evicted it.
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
from bench.floor import COLD_THRESHOLD_S, floor
from bench.traces import Trace, load_seconds
from ollama_keepwarm.core.config import DaemonConfig

__all__ = ["COLD_THRESHOLD_S", "CellMetrics", "measure", "percentile"]

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
    """Main-client requests answered or given up on: every one of the trace, when all is well."""
    failed: int
    cold: int
    floor: int
    """Main-client requests no keeper could have served warm (the same for every strategy)."""
    floor_warm: int
    """Requests of the floor that came out warm anyway: should be 0, else the floor is wrong."""
    stalls: int
    cold_times_s: tuple[float, ...]
    wait_p50_s: float
    wait_p99_s: float
    keeper_reloads: int
    keeper_requests: int
    reactions_s: tuple[float, ...]
    reaction_targets_s: tuple[float, ...]
    other_requests: int
    other_cold: int
    other_cold_caused: int
    """The other client's cold requests whose model a strategy's own warm had evicted."""

    @property
    def avoidable(self) -> int:
        """Cold requests beyond the floor: what a perfect keeper would still have saved."""
        return self.cold - (self.floor - self.floor_warm)

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


def _is_cold(cell: CellResult, client: ClientResult) -> bool:
    if client.status != 200:
        return False
    if client.retried:
        return True
    return client.load_s > COLD_THRESHOLD_S and _load_during(cell, client)


def _caused_by_strategy(cell: CellResult, client: ClientResult) -> bool:
    """Tell whether ``client`` found its model gone because a strategy's warm evicted it."""
    evicted = [e for e in cell.evictions if e.victim == client.model and e.at_s <= client.at_s]
    if not evicted:
        return False
    last = max(evicted, key=lambda e: e.at_s)
    reloaded = any(
        s.model == client.model and s.ok and s.finished_s and last.at_s < s.finished_s < client.at_s
        for s in cell.loads
    )
    if reloaded:
        return False  # it came back after that eviction and left again some other way
    since = last.at_s - _TOLERANCE_S
    loads = [s for s in cell.loads if s.model == last.for_model and s.started_s >= since]
    culprit = min(loads, key=lambda s: s.started_s, default=None)
    return culprit is not None and culprit.requested_by != CLIENT_PATH


def measure(cell: CellResult, trace: Trace) -> CellMetrics:
    """Compute every metric of ``cell``, which replayed ``trace``."""
    main = [c for c in cell.clients if c.client == "main"]
    answered = [c for c in main if c.status == 200]
    slow = [c for c in answered if c.load_s > COLD_THRESHOLD_S or c.retried]
    cold = [c for c in main if _is_cold(cell, c)]
    cold_keys = {(c.at_s, c.model) for c in cold}
    unavoidable = floor(trace)
    others = [c for c in cell.clients if c.client == "other"]
    others_cold = [c for c in others if _is_cold(cell, c)]
    waits = [c.wait_s for c in answered]
    reloads = sum(1 for s in cell.loads if s.reason == "reload" and s.requested_by != CLIENT_PATH)
    return CellMetrics(
        trace=cell.trace,
        strategy=cell.strategy,
        requests=len(main),
        failed=len(main) - len(answered),
        cold=len(cold),
        floor=len(unavoidable),
        floor_warm=sum(1 for r in unavoidable if (r.at_s, r.model) not in cold_keys),
        stalls=len(slow) - len(cold),
        cold_times_s=tuple(c.at_s for c in cold),
        wait_p50_s=percentile(waits, 50),
        wait_p99_s=percentile(waits, 99),
        keeper_reloads=reloads,
        keeper_requests=cell.keeper_requests,
        reactions_s=tuple(_reaction_s(cell, loss) for loss in cell.losses),
        reaction_targets_s=tuple(_target_s(loss, trace.models) for loss in cell.losses),
        other_requests=len(others),
        other_cold=len(others_cold),
        other_cold_caused=sum(1 for c in others_cold if _caused_by_strategy(cell, c)),
    )
