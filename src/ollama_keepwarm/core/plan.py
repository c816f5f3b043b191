"""What to warm, when, and what is unsafe: the keeper's whole judgement, as pure code.

Everything here is a function of plain data: the configured models, the last ``/api/ps``
snapshot, the per-model :class:`ModelState` the keeper carries between looks, and ``now``. No
I/O, no clocks, no asyncio: the keeper (``daemon/host.py``) observes, calls these, and acts.

The rules, and the Ollama facts behind them (``ollama-behavior.md``):

* **Absent** and no warm of ours in flight: warm now. A model that is loading is invisible in
  ``/api/ps`` (§3.5), so an absent model with our warm in flight is *loading*, not gone. A
  snapshot taken before our last warm ended cannot say either: wait for the next look.
* **Present**: renew the lease ``refresh_before`` ahead of ``expires_at`` (never later than half
  the lease, ours or one a client set), and ping it at least every ``health_interval``: a crashed
  runner stays listed until the next request for it, which makes Ollama notice and reload it
  (§4.8). A ping carries no ``keep_alive``, so it never revives a runner Ollama is draining for
  an eviction (§4.5, §1.3); only a lease renewal carries it.
* **Frozen lease**: while a client's request is in flight ``expires_at`` does not move, and after
  a suspend it lies in the past (§1.5, §7.7). Only when it is the very value it had when we last
  renewed is it frozen: then wait a whole ``stale_interval`` before the next renewal, never a
  storm. A lease a client moved (a shorter ``keep_alive``) is renewed before it ends.
* **Options mismatch**: a runner listed with another ``context_length`` than our warm gave, or
  two renewals in a row that took as long as a load, was loaded with other load-time options
  than ours; every call of ours would reload it (§4.6). Leave it alone while it is resident, say
  once what to put in the config, and warm it again only when it is gone.
* **Never fight**: Ollama evicts by keep-alive *setting*, not by our priorities (§4.5), so kept
  models that do not fit together evict each other forever if re-warmed blindly. When our loads
  evicted kept models twice, the lowest-ranked kept model is held (and unloaded if resident, so
  the higher ones fit); it is tried again only when there is evidence of room: fewer models
  listed than while it was held, a new config, or an operator's refresh. Never on a timer.
* **Losses** to other clients are re-warmed at once, then with growing delays if they repeat,
  so a user's own big model is not thrashed out every minute.
* **Windows** (``core/windows.py``): outside its calendar windows a model is held like a
  paused one: not renewed, so its lease runs out (``after_window = "expire"``), or unloaded
  once (``"unload"``); a model gone while outside is released, not repaired. A pause wins
  over a window: the window never resumes a paused model.
* **Errors** back a model off exponentially with jitter; the other models carry on. A load that
  timed out was aborted inside Ollama (§2.6): the next one waits longer, never at once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.names import match_key
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel
from ollama_keepwarm.core.windows import WindowVerdict

__all__ = [
    "Action",
    "Decision",
    "Event",
    "ModelState",
    "Observation",
    "apply_window",
    "backoff_delay_s",
    "classify_error",
    "decide",
    "describe_state",
    "forgive_timeouts",
    "load_timeout_s",
    "match_rows",
    "observe",
    "ranked",
    "record_release_sent",
    "record_warm_failed",
    "record_warm_finished",
    "record_warm_started",
    "record_warm_timed_out",
    "release_holds",
    "summarize",
]

CONFLICT_STRIKES = 2
"""How many evictions of kept models by our own loads (within ``2 x conflict_retry``) make a
capacity conflict. One alone may be a coincidence: an ``ollama stop`` during our load."""

SUSPECT_RELOAD_FRACTION = 0.5
"""A refresh of a listed model taking this share of its cold load time probably reloaded it."""

SUSPECT_RELOAD_FLOOR_S = 0.1
"""...and at least this long: a refresh of a loaded model answers in ~10-20 ms (§9)."""

MISMATCH_RELOADS = 2
"""Reloading renewals in a row that mean an options mismatch (one alone is a crash repair)."""

EXPIRY_TOLERANCE = timedelta(seconds=1)
"""A model gone this close to its ``expires_at`` (or later) expired; earlier, it was evicted."""

REWARM_DELAY_CAP_S = 600.0
"""The longest wait before re-warming a model other clients keep evicting."""

FIRST_REWARM_DELAY_CAP_S = 60.0
"""The first wait after a loss to another client is at most this long."""

SOON_AFTER_OUR_LOAD_S = 60.0
"""A model lost this soon after our own load of it may be a client reloading it with other
options: the re-warm waits, so the client's runner shows (an options mismatch)."""

MAX_EXPONENT = 20
"""Back-off exponents stop growing here: the caps bind long before, and floats never overflow."""

MAX_LOAD_TIMEOUT_S = 6 * 3600.0
"""A load's learnt time limit never grows past this (or past ``load_timeout``, if longer)."""

SUMMARY_NAMES = 2
"""Up to this many models of one state are named in the STATUS line."""

RESUMED = "resumed from suspend"
"""The reason given to refreshes after a resume (the keeper verifies those when asked to)."""

MISMATCH = "options mismatch"
"""The reason (prefix) of a model left alone because a client's runner has other options."""

CAPACITY = "capacity conflict"
"""The reason (prefix) of a model held because the kept set does not fit."""

RUNNER_CHECK = "a runner process ended"
"""The reason of a ping asked for by the crash watch (``daemon/crashwatch.py``)."""

OUTSIDE = "outside its window"
"""The reason (prefix) of a model held because none of its calendar windows is open."""


class Action(StrEnum):
    """What the keeper should do about one model now."""

    WARM = "warm"  # not loaded: load it
    REFRESH = "refresh"  # loaded: renew its lease or ping it (cheap)
    UNLOAD = "unload"  # held for capacity but resident: give its room to the higher ones
    WAIT = "wait"  # nothing to do before `at` (or before an in-flight call ends)
    HOLD = "hold"  # deliberately left alone: paused, a capacity conflict, an options mismatch


@dataclass(frozen=True, slots=True)
class ModelState:
    """What the keeper remembers about one model between looks at ``/api/ps``."""

    # The call of ours in flight, if any.
    in_flight_since: datetime | None = None
    in_flight_was_listed: bool = False
    load_window: tuple[datetime, datetime | None] | None = None
    # What our calls taught us.
    last_warm_ok_at: datetime | None = None
    last_warm_duration_s: float | None = None
    cold_load_s: float | None = None
    renewed_expiry: datetime | None = None  # expires_at listed when our last renewal started
    own_context: int | None = None  # context_length our own warm gives (same options, server)
    warms: int = 0
    reloads: int = 0
    loaded_since_look: bool = False  # our load ended after the last snapshot was taken
    # Errors.
    failures: int = 0
    timeouts: int = 0
    backoff_until: datetime | None = None
    last_error: str | None = None
    # What ps showed.
    last_row: RunningModel | None = None
    lease_seen: tuple[datetime, datetime] | None = None  # (expires_at, when first listed so)
    # Losses.
    rewarm_not_before: datetime | None = None
    vanishes: int = 0
    last_vanished_at: datetime | None = None
    vanish_reason: str | None = None
    strikes: tuple[datetime, ...] = ()  # when our own loads evicted this model
    # A capacity hold: no timer, only evidence of room ends it.
    held_since: datetime | None = None
    held_reason: str | None = None
    held_room: int = 0  # the most other models listed beside the kept set since the hold
    release_sent: bool = False
    # The operator.
    paused_until: datetime | None = None
    refresh_requested_at: datetime | None = None
    # The calendar (core/windows.py): None = no `when`, always kept.
    window: WindowVerdict | None = None
    # Options mismatch.
    foreign_context: int | None = None
    foreign: bool = False  # a runner with other load options is resident: leave it alone
    mismatch_reported: bool = False
    reload_streak: int = 0
    expect_reload: bool = False  # a runner may have died: a reloading refresh is a repair
    # A process of Ollama's ended (core/crash.py): ping the listed model, without keep_alive.
    check_requested_at: datetime | None = None
    wedged_since: datetime | None = None  # a refresh hung while /api/version answered


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict for one model: an action, when, and why (shown in logs, status, STATUS=).

    ``renew`` says whether a REFRESH sends our ``keep_alive`` (a lease renewal) or leaves it
    out (a health ping that must not revive a runner Ollama is draining).
    """

    model: ModelConfig
    action: Action
    reason: str
    at: datetime | None = None
    row: RunningModel | None = None
    renew: bool = True
    window: WindowVerdict | None = None


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


def stale_interval(daemon: DaemonConfig) -> timedelta:
    """The least time between two renewals that could not move ``expires_at``."""
    return timedelta(seconds=max(daemon.poll_interval_s, daemon.refresh_before_s))


def _is_held(st: ModelState) -> bool:
    return st.held_since is not None


def _is_paused(st: ModelState, now: datetime) -> bool:
    return st.paused_until is not None and now < st.paused_until


def _off_window(st: ModelState) -> bool:
    return st.window is not None and not st.window.kept


def apply_window(st: ModelState, verdict: WindowVerdict | None) -> ModelState:
    """Note the calendar's verdict; a change between kept and not allows one new unload."""
    changed = (st.window is None or st.window.kept) != (verdict is None or verdict.kept)
    return replace(st, window=verdict, release_sent=False if changed else st.release_sent)


# -- decide -----------------------------------------------------------------------------------


def decide(
    models: Sequence[ModelConfig],
    daemon: DaemonConfig,
    snapshot: PsSnapshot | None,
    states: Mapping[str, ModelState],
    now: datetime,
    *,
    blobs: Mapping[str, str] | None = None,
    resumed_at: datetime | None = None,
    unconfirmed: Collection[str] = (),
) -> list[Decision]:
    """Decide, for every configured model in rank order, what to do at ``now``.

    ``unconfirmed`` names the models (by key) whose last call of ours ended after
    ``snapshot`` was asked for: for them "absent" may mean "was loading", so acting on it
    would load twice; the look that follows every call decides instead.
    """
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
        if model.key not in unconfirmed or snapshot is None
        else Decision(model, Action.WAIT, "confirming", None, rows[model.key])
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
    def verdict(
        action: Action, reason: str, at: datetime | None = None, *, renew: bool = True
    ) -> Decision:
        return Decision(model, action, reason, at, row, renew, st.window)

    if _is_paused(st, now):
        return verdict(Action.HOLD, "paused", st.paused_until)
    if st.in_flight_since is not None:
        return verdict(Action.WAIT, "refreshing" if st.in_flight_was_listed else "loading")
    if snapshot is None:
        return verdict(Action.WAIT, "waiting for Ollama")
    if st.window is not None and not st.window.kept:
        if row is not None and model.after_window == "unload" and not st.release_sent:
            return verdict(Action.UNLOAD, f"{OUTSIDE}: unloading it")
        return verdict(Action.HOLD, f"{OUTSIDE}; {st.window.note}")
    if _is_held(st):
        if row is not None and not st.release_sent:
            return verdict(Action.UNLOAD, st.held_reason or CAPACITY)
        return verdict(Action.HOLD, st.held_reason or CAPACITY)
    if st.backoff_until is not None and now < st.backoff_until:
        return verdict(Action.WAIT, f"backing off after error: {st.last_error}", st.backoff_until)

    if row is None:
        if st.rewarm_not_before is not None and now < st.rewarm_not_before:
            return verdict(
                Action.WAIT,
                f"lost {st.vanishes} times in a row; waiting before re-warming",
                st.rewarm_not_before,
            )
        if st.last_warm_ok_at is None:
            return verdict(Action.WARM, "not loaded")
        return verdict(Action.WARM, f"vanished ({st.vanish_reason or 'unloaded'})")

    if st.foreign:
        return verdict(Action.HOLD, _mismatch_reason(st))
    if st.last_warm_ok_at is None:
        return verdict(Action.REFRESH, "claim the lease")
    if resumed_at is not None and st.last_warm_ok_at < resumed_at:
        return verdict(Action.REFRESH, RESUMED)
    if st.refresh_requested_at is not None and st.last_warm_ok_at < st.refresh_requested_at:
        return verdict(Action.REFRESH, "refresh requested")
    if st.check_requested_at is not None and st.last_warm_ok_at < st.check_requested_at:
        # A ping, not a renewal: the process that ended may be this runner being unloaded.
        return verdict(Action.REFRESH, RUNNER_CHECK, renew=False)

    due, reason, renew = row.expires_at - _margin(model, daemon, st, row), "lease ending", True
    health_due = st.last_warm_ok_at + timedelta(seconds=daemon.health_interval_s)
    if health_due < due:
        due, reason, renew = health_due, "health check", False
    frozen = st.renewed_expiry is not None and row.expires_at == st.renewed_expiry
    if frozen and st.last_warm_ok_at >= due:
        # We renewed, yet expires_at is the very value it had then: the model is busy (or we
        # were suspended). Ollama restarts the full lease when its requests end (§1.3).
        due, reason, renew = (
            st.last_warm_ok_at + stale_interval(daemon),
            "lease frozen while busy",
            True,
        )
    if due <= now:
        return verdict(Action.REFRESH, reason, renew=renew)
    return verdict(Action.WAIT, reason, due, renew=renew)


def _margin(
    model: ModelConfig, daemon: DaemonConfig, st: ModelState, row: RunningModel
) -> timedelta:
    """How long before ``expires_at`` to renew: ``refresh_before``, at most half the lease.

    The lease is ours, or a shorter one a client set (§1.3, last writer wins): its length is
    at least the time from when ps first showed this ``expires_at`` to that time.
    """
    margin = min(daemon.refresh_before_s, model.keep_alive_s / 2)
    if st.lease_seen is not None and st.lease_seen[0] == row.expires_at:
        seen = (row.expires_at - st.lease_seen[1]).total_seconds()
        if seen > 0:
            margin = min(margin, seen / 2)
    return timedelta(seconds=margin)


def _mismatch_reason(st: ModelState) -> str:
    if st.foreign_context is not None:
        return (
            f"{MISMATCH}: a client's runner (context {st.foreign_context}) is resident; "
            "not touching it"
        )
    return f"{MISMATCH}: a client's runner with other load options is resident; not touching it"


# -- observe ----------------------------------------------------------------------------------


def observe(
    models: Sequence[ModelConfig],
    daemon: DaemonConfig,
    previous: PsSnapshot | None,
    current: PsSnapshot,
    states: Mapping[str, ModelState],
    *,
    blobs: Mapping[str, str] | None = None,
    outage: bool = False,
    runtime_oom_expires_all: bool = False,
) -> Observation:
    """Compare two snapshots: who vanished and why, who lost its GPU, who is in conflict.

    ``outage`` says Ollama was unreachable between the two looks: a restart loses every model
    (§7.8), which is repair work, not a capacity problem. ``runtime_oom_expires_all`` says the
    server expires every model after a runtime out-of-memory error (v0.30+, §4.4).
    """
    now = current.taken_at
    before = match_rows(models, previous, blobs) if previous else {}
    after = match_rows(models, current, blobs)
    new_states = {m.key: states.get(m.key, ModelState()) for m in models}
    events: list[Event] = []
    # Several models gone at once with nothing else listed: a restart we did not see, or an
    # out-of-memory error that made Ollama drop everything (§4.4). One alone says neither.
    everything_gone = bool(previous and len(previous.models) > 1) and not current.models
    struck = False

    for model in models:
        st = new_states[model.key]
        row, old = after[model.key], before.get(model.key)
        loaded_since_look = st.loaded_since_look
        st = replace(st, loaded_since_look=False)
        new_states[model.key] = st
        if row is not None:
            st, seen = _seen_listed(model, st, row, previous, now)
            new_states[model.key] = st
            events.extend(seen)
            continue
        # Gone: listed before, or loaded by us since (a client reloading it with its own
        # options makes it vanish again right after each of our loads).
        if (old is None and not loaded_since_look) or st.in_flight_since is not None:
            continue
        if previous is None:
            continue
        if _is_held(st) or _is_paused(st, now) or _off_window(st):
            # We asked for this (a capacity hold, a pause --unload, a closed window): no repair.
            new_states[model.key] = replace(st, last_row=None, foreign=False, foreign_context=None)
            events.append(Event("model_released", model.name, {"held": _is_held(st)}))
            continue
        culprit = _culprit(models, new_states, model, previous.taken_at, now)
        st, event = _vanished(
            model,
            st,
            daemon,
            old,
            culprit,
            now,
            previous.taken_at,
            outage=outage,
            everything_gone=everything_gone,
            oom_rule=runtime_oom_expires_all,
        )
        struck = struck or "during_load_of" in event.fields
        new_states[model.key] = st
        events.append(event)
    if struck:
        events.extend(_settle_conflict(models, new_states, daemon, now))
    events.extend(_look_for_room(models, new_states, current, after, now))
    return Observation(new_states, events)


def _vanished(
    model: ModelConfig,
    st: ModelState,
    daemon: DaemonConfig,
    old: RunningModel | None,
    culprit: ModelConfig | None,
    now: datetime,
    seen_at: datetime,
    *,
    outage: bool,
    everything_gone: bool,
    oom_rule: bool,
) -> tuple[ModelState, Event]:
    """Name why a kept model is gone, and note what that means for the next warm."""
    if outage:
        cause, culprit = "restart", None
    elif old is not None and old.expires_at <= now + EXPIRY_TOLERANCE:
        cause, culprit = "expired", None
    elif everything_gone and (culprit is not None or oom_rule):
        cause = "oom"
    elif everything_gone:
        cause = "restart"
    else:
        cause = "evicted"
    fields: dict[str, object] = {
        "cause": cause,
        "expires_at": old.expires_at.isoformat() if old is not None else None,
    }
    last_loss = st.last_vanished_at
    st = replace(
        st,
        last_row=None,
        last_vanished_at=now,
        vanish_reason=cause,
        foreign=False,
        foreign_context=None,
    )
    if culprit is not None:
        fields["during_load_of"] = culprit.name
        st = replace(st, strikes=(*st.strikes, now))
    elif cause in {"evicted", "oom"}:
        st = _note_repeated_loss(st, daemon, now, seen_at, last_loss, oom=cause == "oom")
        wait = st.rewarm_not_before
        fields["rewarm_delay_s"] = round((wait - now).total_seconds(), 3) if wait else 0.0
    return st, Event("model_vanished", model.name, fields)


def _seen_listed(
    model: ModelConfig,
    st: ModelState,
    row: RunningModel,
    previous: PsSnapshot | None,
    now: datetime,
) -> tuple[ModelState, list[Event]]:
    """Update what a listed row tells: its GPU, its lease, whose options its runner has."""
    events: list[Event] = []
    if st.last_row and st.last_row.size_vram_bytes > 0 and row.size_vram_bytes == 0:
        events.append(
            Event(
                "gpu_lost",
                model.name,
                {"size_vram_before": st.last_row.size_vram_bytes, "size": row.size_bytes},
            )
        )
    seen = st.lease_seen
    if seen is None or seen[0] != row.expires_at:
        seen = (row.expires_at, now)
    st = replace(st, last_row=row, lease_seen=seen)
    st, mismatch = _check_context(model, st, row, previous)
    return st, events + mismatch


def _check_context(
    model: ModelConfig, st: ModelState, row: RunningModel, previous: PsSnapshot | None
) -> tuple[ModelState, list[Event]]:
    """Learn the context length our own warm gives; another one means a client's runner.

    ``context_length`` in ps is the runner's ``num_ctx`` after clamping (§3.1), so it differs
    only when the load options really differ, on every version (§4.6, §9, §10). We never copy
    it into our options (§9): we say what to configure, and leave the runner alone.
    """
    ours_just_finished = (
        st.last_warm_ok_at is not None
        and st.in_flight_since is None
        and not st.foreign
        and (previous is None or st.last_warm_ok_at > previous.taken_at)
    )
    if ours_just_finished:
        return replace(st, own_context=row.context_length), []
    if st.own_context is None or row.context_length is None:
        return st, []
    if row.context_length == st.own_context:
        if st.foreign and st.foreign_context is not None:
            # Someone loaded it again with our options: it is ours to keep once more.
            return replace(st, foreign=False, foreign_context=None), []
        return st, []
    if st.foreign and st.foreign_context == row.context_length:
        return st, []
    st = replace(st, foreign=True, foreign_context=row.context_length)
    return _report_mismatch(
        model, st, {"context_length": row.context_length, "ours": st.own_context}
    )


def _report_mismatch(
    model: ModelConfig, st: ModelState, seen: Mapping[str, object]
) -> tuple[ModelState, list[Event]]:
    """Warn once, with the exact fix; later episodes only change the state."""
    if st.mismatch_reported:
        return st, []
    context = seen.get("context_length")
    if isinstance(context, int):
        options = {**model.options, "num_ctx": context}
        line = "options = { " + ", ".join(f"{k} = {_toml(v)}" for k, v in options.items()) + " }"
        fix = (
            f"a client runs {model.name} with num_ctx {context}; every call of ours with the "
            f"configured options would reload it. To agree with it, write under its "
            f"[[models]] entry: {line} (or set OLLAMA_CONTEXT_LENGTH / a Modelfile num_ctx so "
            "everyone agrees). Until then the keeper leaves that runner alone."
        )
    else:
        fix = (
            f"two renewals in a row reloaded {model.name}: its clients send other load-time "
            "options (num_ctx, num_batch, num_gpu, num_thread, use_mmap, shift) than its "
            "[[models]] options; make them identical. Until then the keeper leaves the runner "
            "alone while it is loaded."
        )
    return replace(st, mismatch_reported=True), [
        Event("options_mismatch", model.name, {**seen, "fix": fix})
    ]


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


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


def _note_repeated_loss(
    st: ModelState,
    daemon: DaemonConfig,
    now: datetime,
    seen_at: datetime,
    last_loss: datetime | None,
    *,
    oom: bool = False,
) -> ModelState:
    """Wait before re-warming a model another client took away; longer each time in a row.

    A first loss long after our own load of the model is repaired at once: it is usually a
    restart faster than a poll (one model gone, nothing listed, §7.8), or an eviction. A loss
    within :data:`SOON_AFTER_OUR_LOAD_S` of our own load, or a repeat, waits a poll, or one and a
    half measured cold loads if longer (at most a minute), doubling each time in a row: a client
    that reloads the model with other options makes it vanish right after each of our loads,
    and after that wait its runner is seen with them (an options mismatch) instead of being
    fought; whatever took the room has finished loading too (loads are invisible, §3.5).

    After an out-of-memory drop of everything (§4.4) the first re-warm is at once, all models
    alike so the load lane takes them in priority order; a repeat waits a poll, then doubles,
    so a set that does not fit cannot set off evict-all after evict-all.
    """
    recent = last_loss is not None and (
        (seen_at - last_loss).total_seconds() < daemon.conflict_retry_s
    )
    count = st.vanishes + 1 if recent else 1
    if oom:
        step, exponent = daemon.poll_interval_s, count - 2
    else:
        step = min(
            FIRST_REWARM_DELAY_CAP_S, max(daemon.poll_interval_s, 1.5 * (st.cold_load_s or 0.0))
        )
        ours = st.load_window[1] if st.load_window else None
        soon = ours is not None and (now - ours).total_seconds() <= SOON_AFTER_OUR_LOAD_S
        exponent = count - 1 if soon else count - 2
    delay = (
        0.0 if exponent < 0 else min(REWARM_DELAY_CAP_S, step * 2 ** min(exponent, MAX_EXPONENT))
    )
    return replace(
        st, vanishes=count, rewarm_not_before=now + timedelta(seconds=delay) if delay else None
    )


def _settle_conflict(
    models: Sequence[ModelConfig],
    states: dict[str, ModelState],
    daemon: DaemonConfig,
    now: datetime,
) -> list[Event]:
    """On the second eviction by our own loads, hold the lowest-ranked kept model.

    Priorities decide for the whole kept set, not for the pair that collided: the model held
    is always the lowest-ranked one still kept, so a higher one never waits while a lower one
    stays. Holding it repeats, one model at a time, while the rest still does not fit.
    """
    window = timedelta(seconds=daemon.conflict_retry_s * 2)
    recent = {t for st in states.values() for t in st.strikes if now - t < window}
    if len(recent) < CONFLICT_STRIKES:
        return []
    kept = [
        m
        for m in ranked(models)
        if not _is_held(states[m.key])
        and not _is_paused(states[m.key], now)
        and not _off_window(states[m.key])
    ]
    if len(kept) < 2:
        return []
    weakest = kept[-1]
    stronger = ", ".join(m.name for m in kept[:-1])
    reason = f"{CAPACITY}: does not fit beside {stronger}; held until there is room"
    for key, st in states.items():
        states[key] = replace(st, strikes=())
    states[weakest.key] = replace(
        states[weakest.key],
        held_since=now,
        held_reason=reason,
        held_room=0,
        release_sent=False,
        rewarm_not_before=None,
    )
    return [
        Event(
            "capacity_conflict",
            weakest.name,
            {
                "keeps": [m.name for m in kept[:-1]],
                "priority": weakest.priority,
                "hint": "not every kept model fits: it is held (and unloaded) until fewer models "
                "are loaded, the config changes or `ollama-keepwarm refresh` asks; raise "
                "OLLAMA_MAX_LOADED_MODELS, free VRAM, or remove a model from the config",
            },
        )
    ]


def _look_for_room(
    models: Sequence[ModelConfig],
    states: dict[str, ModelState],
    current: PsSnapshot,
    rows: Mapping[str, RunningModel | None],
    now: datetime,
) -> list[Event]:
    """Release the highest-ranked held model once fewer models are listed than while it waited.

    Evidence of room is the loaded set shrinking while every other kept model is warm: a
    model of another client expired or was stopped. A timer is no evidence.
    """
    held = [m for m in ranked(models) if _is_held(states[m.key])]
    if not held:
        return []
    held_rows = {id(rows[m.key]) for m in held if rows[m.key] is not None}
    others = sum(1 for r in current.models if id(r) not in held_rows)
    for model in held:
        st = states[model.key]
        states[model.key] = replace(st, held_room=max(st.held_room, others))
    settled = all(
        rows[m.key] is not None
        or _is_paused(states[m.key], now)
        or _off_window(states[m.key])
        or states[m.key].failures
        for m in models
        if not _is_held(states[m.key])
    ) and not any(st.in_flight_since for st in states.values())
    first = states[held[0].key]
    if not settled or others >= first.held_room:
        return []
    states[held[0].key] = _unheld(first)
    return [Event("capacity_retry", held[0].name, {"listed": others, "was": first.held_room})]


def _unheld(st: ModelState) -> ModelState:
    return replace(st, held_since=None, held_reason=None, held_room=0, release_sent=False)


def release_holds(states: Mapping[str, ModelState]) -> dict[str, ModelState]:
    """End every capacity hold: a new config or an operator's refresh is a reason to try."""
    return {key: _unheld(st) if _is_held(st) else st for key, st in states.items()}


def record_release_sent(st: ModelState) -> ModelState:
    """Note that we asked Ollama to unload a held model (once per hold)."""
    return replace(st, release_sent=True)


# -- our own calls ----------------------------------------------------------------------------


def record_warm_started(
    st: ModelState, now: datetime, *, listed: bool, row: RunningModel | None = None
) -> ModelState:
    """Note that a warm call for this model is in flight (absent then means loading)."""
    window = (now, None) if not listed else st.load_window
    return replace(
        st,
        in_flight_since=now,
        in_flight_was_listed=listed,
        load_window=window,
        renewed_expiry=row.expires_at if row is not None else st.renewed_expiry,
    )


def record_warm_finished(
    model: ModelConfig, st: ModelState, now: datetime, duration_s: float
) -> tuple[ModelState, list[Event]]:
    """Note a successful warm; spot a refresh that was really a reload."""
    listed = st.in_flight_was_listed
    new = replace(
        st,
        in_flight_since=None,
        last_warm_ok_at=now,
        last_warm_duration_s=duration_s,
        failures=0,
        timeouts=0,
        backoff_until=None,
        last_error=None,
        warms=st.warms + 1,
        expect_reload=False,
        load_window=(st.load_window[0], now) if st.load_window and not listed else st.load_window,
    )
    if not listed:
        # A runner of ours now: whatever a client had loaded before is gone.
        new = replace(
            new,
            cold_load_s=duration_s,
            reload_streak=0,
            foreign=False,
            foreign_context=None,
            loaded_since_look=True,
        )
        return new, [
            Event("model_warmed", model.name, {"duration_s": round(duration_s, 3), "loaded": True})
        ]
    events = [Event("model_refreshed", model.name, {"duration_s": round(duration_s, 3)})]
    threshold = SUSPECT_RELOAD_FLOOR_S
    if st.cold_load_s is not None:
        threshold = max(threshold, SUSPECT_RELOAD_FRACTION * st.cold_load_s)
    if duration_s < threshold:
        return replace(new, reload_streak=0), events
    # The runner was started again: a crashed one repaired, or options that differ (§4.6).
    new = replace(new, reloads=st.reloads + 1, load_window=(st.in_flight_since or now, now))
    events.append(
        Event(
            "runner_reloaded",
            model.name,
            {
                "duration_s": round(duration_s, 3),
                "cold_load_s": st.cold_load_s,
                "expected": st.expect_reload,
            },
        )
    )
    if st.expect_reload:
        return replace(new, reload_streak=0), events
    streak = st.reload_streak + 1
    new = replace(new, reload_streak=streak)
    if streak < MISMATCH_RELOADS and not st.mismatch_reported:
        return new, events
    new, warning = _report_mismatch(
        model,
        replace(new, foreign=True, foreign_context=None),
        {
            "reloads_in_a_row": streak,
            "duration_s": round(duration_s, 3),
        },
    )
    return new, events + warning


def classify_error(status: int, message: str, name: str = "") -> tuple[str, str]:
    """Name an error's kind and a hint for the operator, from Ollama's status and text."""
    text = message.lower()
    if status == 0:
        return "unreachable", "Ollama is not answering"
    if status == 404:
        return "not_found", f"the model is not pulled: run `ollama pull {name or '<name>'}`"
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
    "timed_out": (10.0, 600.0),
    "busy": (5.0, 120.0),
    "server_error": (5.0, 300.0),
}


def backoff_delay_s(kind: str, failures: int, name: str) -> float:
    """Exponential backoff with ±25 % jitter, deterministic per (model, attempt) for testing."""
    first, cap = _BACKOFF.get(kind, (5.0, 300.0))
    base = min(cap, first * 2 ** min(max(0, failures - 1), MAX_EXPONENT))
    digest = hashlib.sha256(f"{name}:{failures}".encode()).digest()
    jitter = 0.75 + 0.5 * (int.from_bytes(digest[:4], "big") / 2**32)
    return float(base * jitter)


def load_timeout_s(st: ModelState, configured_s: float) -> float:
    """The time limit for this model's next load: ``load_timeout``, or longer if it must be.

    Giving up aborts the load inside Ollama (§2.6), so a limit shorter than the load would
    waste every attempt. Learn from the measured cold load (three times it), and double the
    limit after each timeout, up to :data:`MAX_LOAD_TIMEOUT_S`.
    """
    limit = configured_s
    if st.cold_load_s:
        limit = max(limit, 3 * st.cold_load_s)
    if st.timeouts:
        limit = max(limit, configured_s * 2 ** min(st.timeouts, MAX_EXPONENT))
    return min(limit, max(configured_s, MAX_LOAD_TIMEOUT_S))


def _close_window(st: ModelState, now: datetime) -> tuple[datetime, datetime | None] | None:
    if st.load_window and st.load_window[1] is None:
        return (st.load_window[0], now)
    return st.load_window


def record_warm_failed(
    model: ModelConfig, st: ModelState, now: datetime, status: int, message: str
) -> tuple[ModelState, list[Event]]:
    """Note a failed warm: back this model off; an unreachable Ollama is not its fault."""
    kind, hint = classify_error(status, message, model.name)
    if kind == "unreachable":
        return replace(st, in_flight_since=None, load_window=_close_window(st, now)), []
    failures = st.failures + 1
    delay = backoff_delay_s(kind, failures, model.name)
    new = replace(
        st,
        in_flight_since=None,
        load_window=_close_window(st, now),
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


def forgive_timeouts(states: Mapping[str, ModelState]) -> dict[str, ModelState]:
    """End the back-off of models whose last call timed out (after a resume: the call was in
    flight across the suspend, or Ollama was asleep with us); other errors keep theirs."""
    return {
        key: replace(st, backoff_until=None)
        if st.last_error is not None and st.last_error.startswith("timed_out")
        else st
        for key, st in states.items()
    }


def record_warm_timed_out(
    model: ModelConfig,
    st: ModelState,
    now: datetime,
    *,
    limit_s: float,
    waited_s: float,
    configured_s: float,
) -> tuple[ModelState, list[Event]]:
    """Note a warm call that got no answer in time: Ollama aborted that load (§2.6).

    Back off like any failure, and give the next attempt a longer limit: retrying at once with
    the same limit would abort the same load forever.
    """
    failures = st.failures + 1
    delay = backoff_delay_s("timed_out", failures, model.name)
    new = replace(
        st,
        in_flight_since=None,
        load_window=_close_window(st, now),
        failures=failures,
        timeouts=st.timeouts + 1,
        backoff_until=now + timedelta(seconds=delay),
        last_error=f"timed_out: no answer within {limit_s:g}s",
    )
    next_limit = load_timeout_s(new, configured_s)
    return new, [
        Event(
            "warm_timed_out",
            model.name,
            {
                "load_timeout_s": round(limit_s, 3),
                "waited_s": round(waited_s, 3),
                "next_timeout_s": round(next_limit, 3),
                "attempt": failures,
                "retry_in_s": round(delay, 1),
                "hint": "the load took longer than [ollama] load_timeout and Ollama aborted it; "
                "the next attempt waits longer. Raise load_timeout if loads are this slow.",
            },
        )
    ]


# -- views ------------------------------------------------------------------------------------


def describe_state(decision: Decision) -> str:
    """One word for a model's state, as the status table shows it."""
    if decision.action is Action.HOLD and decision.reason == "paused":
        return "paused"
    if decision.reason.startswith(CAPACITY):
        return "conflict"
    if decision.action is Action.HOLD and decision.reason.startswith(OUTSIDE):
        return "outside"
    if decision.reason.startswith(MISMATCH):
        return "mismatch"
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
    wanted = [s for s in states if s not in {"paused", "outside"}]
    parts = [f"{states.count('warm')}/{len(wanted)} warm"]
    for word in ("loading", "cold", "error", "conflict", "mismatch", "paused", "outside"):
        names = [d.model.name for d, state in zip(decisions, states, strict=True) if state == word]
        if names:
            # Name them while the line stays short: "1 loading (llama3.3:70b)".
            shown = f" ({', '.join(names)})" if len(names) <= SUMMARY_NAMES else ""
            parts.append(f"{len(names)} {word}{shown}")
    windowed = [d for d in decisions if d.window is not None]
    if 0 < len(windowed) <= SUMMARY_NAMES:
        # "llama3.1:8b kept until 19:00", "llama3.1:8b next window Mon 08:00"
        parts.extend(f"{d.model.name} {d.window.note}" for d in windowed if d.window)
    upcoming = [d for d in decisions if d.action is Action.WAIT and d.at and d.row is not None]
    if upcoming:
        first = min(upcoming, key=lambda d: d.at or now)
        parts.append(
            f"next refresh {first.model.name} in "
            f"{_human(((first.at or now) - now).total_seconds())}"
        )
    return " · ".join(parts)
