"""What to warm, when, and what is unsafe: the keeper's whole judgement, as pure code.

Everything here is a function of plain data: the configured models, the last ``/api/ps``
snapshot, the per-model :class:`ModelState` the keeper carries between looks, and ``now``. No
I/O, no clocks, no asyncio: the keeper (``host.py``) observes, calls these, and acts.

The rules, and the Ollama facts behind them (``ollama-behavior.md``):

* **Absent** and no warm of ours in flight: warm now. A model that is loading is invisible in
  ``/api/ps`` (§3.5), so an absent model with our warm in flight is *loading*, not gone.
* **Present**: refresh ``refresh_before`` ahead of ``expires_at`` (never later than half the
  lease), and at least every ``health_interval``: a crashed runner stays listed until the next
  request for it, which is what makes Ollama notice and reload it (§4.8).
* **Frozen lease**: while a client's request is in flight, ``expires_at`` does not move, and after
  a suspend it lies in the past while the model is still loaded (§1.5, §7.7). A refresh then
  cannot move it, so after one refresh we wait a whole ``stale_interval`` before the next: at
  most one refresh per interval, never a storm.
* **Never fight**: Ollama evicts the model with the shortest keep-alive *setting* (§4.5), so two
  kept models that do not fit together evict each other forever if re-warmed blindly. When our
  load of one evicted the other twice, the lower-ranked of the pair is held back and reported.
  Models evicted by other clients are re-warmed at once, but with growing delays if it keeps
  happening, so a user's own big model is not thrashed out every minute.
* **Errors** back a model off exponentially with jitter; the other models carry on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.names import match_key
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

__all__ = [
    "Action",
    "Decision",
    "Event",
    "ModelState",
    "Observation",
    "backoff_delay_s",
    "classify_error",
    "decide",
    "describe_state",
    "match_rows",
    "observe",
    "ranked",
    "record_warm_failed",
    "record_warm_finished",
    "record_warm_started",
    "summarize",
]

CONFLICT_STRIKES = 2
"""How many times our load of one kept model may evict another before the pair is a conflict."""

SUSPECT_RELOAD_FRACTION = 0.5
"""A refresh of a listed model taking this share of its cold load time probably reloaded it."""

SUSPECT_RELOAD_FLOOR_S = 0.1
"""...and at least this long: a refresh of a loaded model answers in ~10-20 ms (§9)."""

EXPIRY_TOLERANCE = timedelta(seconds=1)
SUMMARY_NAMES = 2
"""Up to this many models of one state are named in the STATUS line."""

RESUMED = "resumed from suspend"
"""The reason given to refreshes after a resume (the keeper verifies those when asked to)."""


class Action(StrEnum):
    """What the keeper should do about one model now."""

    WARM = "warm"  # not loaded: load it
    REFRESH = "refresh"  # loaded: renew its lease (cheap; also a health ping)
    WAIT = "wait"  # nothing to do before `at` (or before an in-flight call ends)
    HOLD = "hold"  # deliberately left alone: paused, or a capacity conflict


@dataclass(frozen=True, slots=True)
class ModelState:
    """What the keeper remembers about one model between looks at ``/api/ps``."""

    in_flight_since: datetime | None = None
    in_flight_was_listed: bool = False
    load_window: tuple[datetime, datetime | None] | None = None
    last_warm_ok_at: datetime | None = None
    last_warm_duration_s: float | None = None
    cold_load_s: float | None = None
    failures: int = 0
    backoff_until: datetime | None = None
    last_error: str | None = None
    last_row: RunningModel | None = None
    rewarm_not_before: datetime | None = None
    vanishes: int = 0
    last_vanished_at: datetime | None = None
    vanish_reason: str | None = None
    strikes: tuple[tuple[str, datetime], ...] = ()
    held_until: datetime | None = None
    held_reason: str | None = None
    paused_until: datetime | None = None
    refresh_requested_at: datetime | None = None
    mismatch_reported: bool = False
    own_context: int | None = None
    warms: int = 0
    reloads: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict for one model: an action, when, and why (shown in logs, status, STATUS=)."""

    model: ModelConfig
    action: Action
    reason: str
    at: datetime | None = None
    row: RunningModel | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A fact worth logging and counting; ``name`` is a stable snake_case event name."""

    name: str
    model: str
    fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observation:
    """The outcome of comparing two snapshots: updated states and what happened."""

    states: dict[str, ModelState]
    events: list[Event]


def ranked(models: Iterable[ModelConfig]) -> list[ModelConfig]:
    """Order models by importance: higher ``priority`` first, then config order."""
    return sorted(models, key=lambda m: -m.priority)  # sorted() is stable: config order breaks ties


def match_rows(
    models: Sequence[ModelConfig],
    snapshot: PsSnapshot | None,
    blobs: Mapping[str, str] | None = None,
) -> dict[str, RunningModel | None]:
    """Find each model's ``/api/ps`` row by normalised name, else by shared weights blob.

    Ollama keys runners by weights blob and lists them under the name that loaded them (§7.1),
    so ``llama3.2`` is warm when ``llama3.2:3b`` is listed. ``blobs`` maps match keys (of both
    configured names and listed names) to blob digests, as learnt from ``/api/show``.
    """
    blobs = blobs or {}
    rows = snapshot.models if snapshot else ()
    by_key: dict[str, RunningModel] = {}
    for listed in rows:
        by_key.setdefault(match_key(listed.name), listed)
    found: dict[str, RunningModel | None] = {}
    for model in models:
        row = by_key.get(model.key)
        blob = blobs.get(model.key)
        if row is None and blob is not None:
            row = next((r for k, r in by_key.items() if blobs.get(k) == blob), None)
        found[model.key] = row
    return found


def _margin(model: ModelConfig, daemon: DaemonConfig) -> timedelta:
    lease = model.keep_alive_s
    return timedelta(seconds=min(daemon.refresh_before_s, lease / 2))


def stale_interval(daemon: DaemonConfig) -> timedelta:
    """The least time between two refreshes that could not move ``expires_at``."""
    return timedelta(seconds=max(daemon.poll_interval_s, daemon.refresh_before_s))


def decide(
    models: Sequence[ModelConfig],
    daemon: DaemonConfig,
    snapshot: PsSnapshot | None,
    states: Mapping[str, ModelState],
    now: datetime,
    *,
    blobs: Mapping[str, str] | None = None,
    resumed_at: datetime | None = None,
) -> list[Decision]:
    """Decide, for every configured model in rank order, what to do at ``now``."""
    rows = match_rows(models, snapshot, blobs)
    return [
        _decide_one(
            model,
            daemon,
            snapshot,
            rows[model.key],
            states.get(model.key, ModelState()),
            now,
            resumed_at,
        )
        for model in ranked(models)
    ]


def _decide_one(  # noqa: C901 - a flat list of rules, read top to bottom
    model: ModelConfig,
    daemon: DaemonConfig,
    snapshot: PsSnapshot | None,
    row: RunningModel | None,
    st: ModelState,
    now: datetime,
    resumed_at: datetime | None,
) -> Decision:
    def verdict(action: Action, reason: str, at: datetime | None = None) -> Decision:
        return Decision(model, action, reason, at, row)

    if st.paused_until is not None and now < st.paused_until:
        return verdict(Action.HOLD, "paused", st.paused_until)
    if st.in_flight_since is not None:
        return verdict(Action.WAIT, "refreshing" if st.in_flight_was_listed else "loading")
    if snapshot is None:
        return verdict(Action.WAIT, "waiting for Ollama")
    if st.held_until is not None and now < st.held_until:
        return verdict(Action.HOLD, st.held_reason or "capacity conflict", st.held_until)
    if st.backoff_until is not None and now < st.backoff_until:
        return verdict(Action.WAIT, f"backing off after error: {st.last_error}", st.backoff_until)

    if row is None:
        if st.rewarm_not_before is not None and now < st.rewarm_not_before:
            return verdict(
                Action.WAIT,
                f"evicted {st.vanishes} times by other loads; waiting before re-warming",
                st.rewarm_not_before,
            )
        if st.last_warm_ok_at is None:
            return verdict(Action.WARM, "not loaded")
        return verdict(Action.WARM, f"vanished ({st.vanish_reason or 'unloaded'})")

    if st.last_warm_ok_at is None:
        return verdict(Action.REFRESH, "claim the lease")
    if resumed_at is not None and st.last_warm_ok_at < resumed_at:
        return verdict(Action.REFRESH, RESUMED)
    if st.refresh_requested_at is not None and st.last_warm_ok_at < st.refresh_requested_at:
        return verdict(Action.REFRESH, "refresh requested")

    due, reason = row.expires_at - _margin(model, daemon), "lease ending"
    health_due = st.last_warm_ok_at + timedelta(seconds=daemon.health_interval_s)
    if health_due < due:
        due, reason = health_due, "health check"
    if st.last_warm_ok_at >= due:
        # We already renewed, yet expires_at did not move: the model is busy (or we were
        # suspended). Ollama restarts the full lease when its requests end (§1.3).
        due, reason = st.last_warm_ok_at + stale_interval(daemon), "lease frozen while busy"
    if due <= now:
        return verdict(Action.REFRESH, reason)
    return verdict(Action.WAIT, reason, due)


def observe(
    models: Sequence[ModelConfig],
    daemon: DaemonConfig,
    previous: PsSnapshot | None,
    current: PsSnapshot,
    states: Mapping[str, ModelState],
    *,
    blobs: Mapping[str, str] | None = None,
    outage: bool = False,
) -> Observation:
    """Compare two snapshots: who vanished and why, who lost its GPU, who is in conflict.

    ``outage`` says Ollama was unreachable between the two looks: a restart loses every model
    (§7.8), which is repair work, not a capacity problem.
    """
    now = current.taken_at
    before = match_rows(models, previous, blobs) if previous else {}
    after = match_rows(models, current, blobs)
    rank = {m.key: i for i, m in enumerate(ranked(models))}
    new_states = {m.key: states.get(m.key, ModelState()) for m in models}
    events: list[Event] = []
    # Several models gone at once with nothing else listed: a restart we did not see (or a
    # runtime OOM, §4.4). One model alone going away says nothing of the kind.
    everything_gone = bool(previous and len(previous.models) > 1) and not current.models

    for model in models:
        st = new_states[model.key]
        row, old = after[model.key], before.get(model.key)
        if row is not None:
            if st.last_row and st.last_row.size_vram_bytes > 0 and row.size_vram_bytes == 0:
                events.append(
                    Event(
                        "gpu_lost",
                        model.name,
                        {"size_vram_before": st.last_row.size_vram_bytes, "size": row.size_bytes},
                    )
                )
            st = replace(st, last_row=row)
            new_states[model.key], mismatch = _check_context(model, st, row, previous)
            events.extend(mismatch)
            continue
        if old is None or st.in_flight_since is not None or previous is None:
            continue
        culprit = _culprit(models, new_states, model, previous.taken_at, now)
        if outage:
            cause, culprit = "restart", None
        elif old.expires_at <= now + EXPIRY_TOLERANCE:
            cause, culprit = "expired", None
        elif culprit is not None:
            cause = f"evicted by our load of {culprit.name}"
        elif everything_gone:
            cause = "restart"
        else:
            cause = "evicted"
        fields: dict[str, object] = {
            "cause": cause.split(" ")[0],
            "expires_at": old.expires_at.isoformat(),
        }
        st = replace(st, last_row=None, last_vanished_at=now, vanish_reason=cause)
        if culprit is not None:
            fields["evicted_by"] = culprit.name
        elif cause == "evicted":
            st = _note_external_eviction(st, daemon, now, previous.taken_at)
            fields["rewarm_delay_s"] = (
                round((st.rewarm_not_before - now).total_seconds(), 3)
                if st.rewarm_not_before
                else 0.0
            )
        new_states[model.key] = st
        events.append(Event("model_vanished", model.name, fields))
        if culprit is not None:
            events.extend(_strike(new_states, rank, daemon, model, culprit, now))
    return Observation(new_states, events)


def _check_context(
    model: ModelConfig, st: ModelState, row: RunningModel, previous: PsSnapshot | None
) -> tuple[ModelState, list[Event]]:
    """Learn the context length our own warm gives; a different one means a client reloaded it.

    ``context_length`` in ps is the runner's ``num_ctx`` (clamped, §3.1). If a client's request
    changed it, that client sends other load-time options than ours, and every alternation
    between us and it reloads the model (§4.6): the operator must make them agree.
    """
    ours_just_finished = (
        st.last_warm_ok_at is not None
        and st.in_flight_since is None
        and (previous is None or st.last_warm_ok_at > previous.taken_at)
    )
    if ours_just_finished:
        return replace(st, own_context=row.context_length), []
    if (
        st.own_context is None
        or row.context_length is None
        or row.context_length == st.own_context
        or st.mismatch_reported
    ):
        return st, []
    event = Event(
        "options_mismatch_suspected",
        model.name,
        {
            "context_length": row.context_length,
            "ours": st.own_context,
            "hint": "a client loaded this model with another num_ctx than the configured options; "
            "each switch between it and the keeper reloads the model. Make [[models]] "
            "options equal to what the clients send (num_ctx, num_batch, num_gpu, ...).",
        },
    )
    return replace(st, mismatch_reported=True), [event]


def _culprit(
    models: Sequence[ModelConfig],
    states: Mapping[str, ModelState],
    victim: ModelConfig,
    since: datetime,
    until: datetime,
) -> ModelConfig | None:
    """Return the kept model whose load by us overlapped (since, until], if any."""
    for other in models:
        if other.key == victim.key:
            continue
        window = states[other.key].load_window
        if window is None:
            continue
        start, end = window
        if start <= until and (end is None or end >= since):
            return other
    return None


def _note_external_eviction(
    st: ModelState, daemon: DaemonConfig, now: datetime, seen_at: datetime
) -> ModelState:
    """Count evictions by other clients; past the second in a row, wait longer each time."""
    recent = st.last_vanished_at is not None and (seen_at - st.last_vanished_at).total_seconds() < (
        daemon.conflict_retry_s
    )
    count = st.vanishes + 1 if recent else 1
    delay = 0.0 if count <= 2 else min(600.0, daemon.poll_interval_s * 2 ** (count - 2))
    return replace(
        st, vanishes=count, rewarm_not_before=now + timedelta(seconds=delay) if delay else None
    )


def _strike(
    states: dict[str, ModelState],
    rank: Mapping[str, int],
    daemon: DaemonConfig,
    victim: ModelConfig,
    loader: ModelConfig,
    now: datetime,
) -> list[Event]:
    """Record that our load of ``loader`` evicted ``victim``; hold the weaker one on a repeat."""
    weaker, stronger = (loader, victim) if rank[loader.key] > rank[victim.key] else (victim, loader)
    st = states[weaker.key]
    window = timedelta(seconds=daemon.conflict_retry_s * 2)
    strikes = (*(s for s in st.strikes if now - s[1] < window), (stronger.key, now))
    st = replace(st, strikes=strikes)
    events: list[Event] = []
    if sum(1 for key, _ in strikes if key == stronger.key) >= CONFLICT_STRIKES:
        reason = (
            f"capacity conflict: does not fit beside {stronger.name} "
            f"(priority {stronger.priority}); not re-warming"
        )
        st = replace(
            st, held_until=now + timedelta(seconds=daemon.conflict_retry_s), held_reason=reason
        )
        events.append(
            Event(
                "capacity_conflict",
                weaker.name,
                {
                    "keeps": stronger.name,
                    "retry_in_s": daemon.conflict_retry_s,
                    "hint": "not every kept model fits: raise OLLAMA_MAX_LOADED_MODELS, free VRAM, "
                    "or remove a model from the config",
                },
            )
        )
    states[weaker.key] = st
    return events


def record_warm_started(st: ModelState, now: datetime, *, listed: bool) -> ModelState:
    """Note that a warm call for this model is in flight (absent then means loading)."""
    window = (now, None) if not listed else st.load_window
    return replace(st, in_flight_since=now, in_flight_was_listed=listed, load_window=window)


def record_warm_finished(
    model: ModelConfig, st: ModelState, now: datetime, duration_s: float
) -> tuple[ModelState, list[Event]]:
    """Note a successful warm; spot a refresh that was really a reload (options mismatch)."""
    listed = st.in_flight_was_listed
    events: list[Event] = []
    new = replace(
        st,
        in_flight_since=None,
        last_warm_ok_at=now,
        last_warm_duration_s=duration_s,
        failures=0,
        backoff_until=None,
        last_error=None,
        warms=st.warms + 1,
        load_window=(st.load_window[0], now) if st.load_window and not listed else st.load_window,
    )
    if not listed:
        new = replace(new, cold_load_s=duration_s)
        return new, [
            Event("model_warmed", model.name, {"duration_s": round(duration_s, 3), "loaded": True})
        ]
    threshold = SUSPECT_RELOAD_FLOOR_S
    if st.cold_load_s is not None:
        threshold = max(threshold, SUSPECT_RELOAD_FRACTION * st.cold_load_s)
    if duration_s >= threshold:
        new = replace(new, reloads=st.reloads + 1, load_window=(st.in_flight_since or now, now))
        events.append(
            Event(
                "runner_reloaded",
                model.name,
                {"duration_s": round(duration_s, 3), "cold_load_s": st.cold_load_s},
            )
        )
        if not st.mismatch_reported:
            new = replace(new, mismatch_reported=True)
            events.append(
                Event(
                    "options_mismatch_suspected",
                    model.name,
                    {
                        "duration_s": round(duration_s, 3),
                        "hint": "a refresh of a loaded model took as long as a load: "
                        "Ollama reloaded it. "
                        "If this repeats, the configured options differ from what its clients "
                        "send (num_ctx, num_batch, num_gpu, ...); make them identical. "
                        "A one-off is a crashed runner being repaired.",
                    },
                )
            )
    events.append(Event("model_refreshed", model.name, {"duration_s": round(duration_s, 3)}))
    return new, events


def classify_error(status: int, message: str) -> tuple[str, str]:
    """Name an error's kind and a hint for the operator, from Ollama's status and text."""
    text = message.lower()
    if status == 0:
        return "unreachable", "Ollama is not answering"
    if status == 404:
        return "not_found", "the model is not pulled: run `ollama pull <name>`"
    if status == 400:
        return "bad_request", "Ollama rejected the request: check this model's options"
    if "memory" in text or "oom" in text:
        return "out_of_memory", "not enough memory to load it beside the others"
    if status == 503:
        return "busy", "Ollama's load queue is full"
    return "server_error", "Ollama failed to load it"


_BACKOFF = {  # kind: (first delay, cap) in seconds
    "not_found": (30.0, 900.0),
    "bad_request": (60.0, 1800.0),
    "out_of_memory": (15.0, 600.0),
    "busy": (5.0, 120.0),
    "server_error": (5.0, 300.0),
}


def backoff_delay_s(kind: str, failures: int, name: str) -> float:
    """Exponential backoff with ±25 % jitter, deterministic per (model, attempt) for testing."""
    first, cap = _BACKOFF.get(kind, (5.0, 300.0))
    base = min(cap, first * 2 ** max(0, failures - 1))
    digest = hashlib.sha256(f"{name}:{failures}".encode()).digest()
    jitter = 0.75 + 0.5 * (int.from_bytes(digest[:4], "big") / 2**32)
    return float(base * jitter)


def record_warm_failed(
    model: ModelConfig, st: ModelState, now: datetime, status: int, message: str
) -> tuple[ModelState, list[Event]]:
    """Note a failed warm: back this model off; an unreachable Ollama is not its fault."""
    kind, hint = classify_error(status, message)
    window = (
        (st.load_window[0], now)
        if st.load_window and st.load_window[1] is None
        else (st.load_window)
    )
    if kind == "unreachable":
        return replace(st, in_flight_since=None, load_window=window), []
    failures = st.failures + 1
    delay = backoff_delay_s(kind, failures, model.name)
    new = replace(
        st,
        in_flight_since=None,
        load_window=window,
        failures=failures,
        backoff_until=now + timedelta(seconds=delay),
        last_error=f"{kind}: {message}",
    )
    return new, [
        Event(
            "warm_failed",
            model.name,
            {
                "kind": kind,
                "status": status,
                "error": message,
                "hint": hint,
                "attempt": failures,
                "retry_in_s": round(delay, 1),
            },
        )
    ]


def describe_state(decision: Decision) -> str:
    """One word for a model's state, as the status table shows it."""
    if decision.action is Action.HOLD:
        return "paused" if decision.reason == "paused" else "conflict"
    if decision.reason == "loading":
        return "loading"
    if decision.row is not None:
        return "warm"
    if decision.reason.startswith("backing off"):
        return "error"
    return "cold"


def _human(seconds: float) -> str:
    if math.isinf(seconds) or seconds > 20 * 365 * 86400:
        return "forever"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def summarize(
    decisions: Sequence[Decision], now: datetime, *, ollama_up: bool = True, host: str = ""
) -> str:
    """Build the one-line STATUS: ``3/3 warm · next refresh llama3.1:8b in 4m``."""
    if not ollama_up:
        return f"waiting for Ollama at {host}" if host else "waiting for Ollama"
    states = [describe_state(d) for d in decisions]
    wanted = [s for s in states if s != "paused"]
    parts = [f"{states.count('warm')}/{len(wanted)} warm"]
    for word in ("loading", "cold", "error", "conflict", "paused"):
        names = [d.model.name for d, state in zip(decisions, states, strict=True) if state == word]
        if names:
            # Name them while the line stays short: "1 loading (llama3.3:70b)".
            shown = f" ({', '.join(names)})" if len(names) <= SUMMARY_NAMES else ""
            parts.append(f"{len(names)} {word}{shown}")
    upcoming = [d for d in decisions if d.action is Action.WAIT and d.at and d.row is not None]
    if upcoming:
        first = min(upcoming, key=lambda d: d.at or now)
        parts.append(
            f"next refresh {first.model.name} in "
            f"{_human(((first.at or now) - now).total_seconds())}"
        )
    return " · ".join(parts)
