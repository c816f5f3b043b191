"""The floor: the cold requests of a trace that no keeper could have avoided.

Pure functions of the trace alone, so the floor is the same number for every strategy and can
be checked by hand. A request is *unavoidably cold* when it arrived after something no keeper
controls took its model away (Ollama's start, a restart, a suspend, the other client's first
load of the 70B model) and before the earliest moment any keeper could have had the model
loaded again, less the cold threshold:

    loss + fastest detection + loads that must come first + its own load - COLD_THRESHOLD_S

*Fastest detection* is 0 s for every kind: an ``ExecStartPost=`` runs as Ollama starts,
logind announces a resume, a watcher could see an eviction at once. The loads that must come
first are the 70B's, for the other client's load, and the kept models loaded before this one:
Ollama loads one model at a time (§4.3 of the reference), so after each loss the kept models
come back one after the other, and the floor takes whichever order leaves the fewest cold
requests in that window. These choices make the floor as low as it can honestly be, so
``cold >= floor`` for every strategy, and ``cold - floor`` is what a strategy could still have
saved.

A request that arrives while Ollama is down is always in the floor (the bench's client retries
it until Ollama answers, and counts it cold: its user waited for a start-up).

Later 70B loads by the other client are not in the floor: whether the 70B is still loaded then,
and whether it evicts a kept model, depends on what the strategies did meanwhile (the "cost to
others" column counts that side).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.traces import BIG_MODEL, Disruption, DisruptionKind, Request, Trace, load_seconds

__all__ = ["COLD_THRESHOLD_S", "DETECTION_S", "LOSS_RULES", "Window", "floor", "windows"]

COLD_THRESHOLD_S = 1.5
"""A request is cold when it waited longer than this (trace seconds) for a load. The smallest
kept model loads in 2.0 s; a warm reply reports ~0.01 s, but an OS scheduling stall inside the
fake's handler counts too, and 10 ms of real time is 1.2 trace seconds at x120."""

_MAX_PERMUTED = 6

DETECTION_S: Mapping[str, float] = {"start": 0.0, "restart": 0.0, "suspend": 0.0, "eviction": 0.0}
"""The fastest any keeper could notice each kind of loss, in trace seconds (see above)."""


@dataclass(frozen=True, slots=True)
class Window:
    """From ``opens_s`` on, requests for ``models`` meet a loss that happens at ``lost_s``.

    ``ahead_s`` is load time that must pass before any kept model can load again; ``down``
    says Ollama refuses connections from ``opens_s`` to ``lost_s``.
    """

    kind: str
    opens_s: float
    lost_s: float
    models: tuple[str, ...]
    ahead_s: float = 0.0
    down: bool = False

    def closes_s(self, model: str, order: Sequence[str] | None = None) -> float:
        """Return when a request for ``model`` can first be warm (within the threshold).

        ``order`` is the order the kept models are loaded again in (default: ``models``).
        """
        order = self.models if order is None else order
        loads = sum(load_seconds(m) for m in order[: order.index(model) + 1])
        ready = self.lost_s + DETECTION_S[self.kind] + self.ahead_s + loads
        closes = ready - COLD_THRESHOLD_S
        return max(closes, self.lost_s) if self.down else closes

    def holds(self, request: Request, order: Sequence[str] | None = None) -> bool:
        """Tell whether ``request`` is unavoidably cold here, with models loaded in ``order``."""
        return request.model in self.models and self.opens_s <= request.at_s < self.closes_s(
            request.model, order
        )

    def unavoidable(self, requests: Sequence[Request]) -> tuple[Request, ...]:
        """Return the requests cold here whatever order a keeper loads its models in."""
        if len(self.models) > _MAX_PERMUTED:  # too many orders: each model as if loaded first
            return tuple(r for r in requests if self.holds(r, (r.model,)))
        options = [
            tuple(r for r in requests if self.holds(r, order))
            for order in itertools.permutations(self.models)
        ]
        return min(options, key=len)


def _restart(d: Disruption, models: tuple[str, ...]) -> Window:
    return Window("restart", d.at_s, d.end_s, models, down=True)


def _suspend(d: Disruption, models: tuple[str, ...]) -> Window:
    """The runners are broken from the sleep on; requests made asleep are answered at resume."""
    return Window("suspend", d.at_s, d.end_s, models)


LOSS_RULES: Mapping[DisruptionKind, Callable[[Disruption, tuple[str, ...]], Window]] = {
    "restart": _restart,
    "suspend": _suspend,
}
"""How each disruption kind takes the kept models away (one rule per kind)."""


def windows(trace: Trace) -> tuple[Window, ...]:
    """Return every window of unavoidable loss in ``trace``, in time order."""
    found = [Window("start", 0.0, 0.0, trace.models)]
    found += [LOSS_RULES[d.kind](d, trace.models) for d in trace.disruptions]
    resets = sorted([0.0, *(d.at_s for d in trace.disruptions)])
    seen: set[float] = set()
    for request in trace.other_requests:
        if request.model != BIG_MODEL:
            continue
        since = max(r for r in resets if r <= request.at_s)
        if since in seen:
            continue  # the 70B may still be loaded: not certain, so not in the floor
        seen.add(since)
        found.append(
            Window("eviction", request.at_s, request.at_s, trace.models, load_seconds(BIG_MODEL))
        )
    return tuple(sorted(found, key=lambda w: w.opens_s))


def floor(trace: Trace) -> tuple[Request, ...]:
    """Return the main requests of ``trace`` that no keeper could have served warm."""
    main = trace.main_requests
    held = {id(r) for w in windows(trace) for r in w.unavoidable(main)}
    return tuple(r for r in main if id(r) in held)
