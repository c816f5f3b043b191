"""Losses and their causes: a kept model gone from ``/api/ps``, why, and when to re-warm it."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.plan.capacity import (
    Room,
    hold_again,
    hold_below_higher,
    look_for_room,
    note_room,
    occupied,
    settle_conflict,
)
from ollama_keepwarm.core.plan.leases import note_lease
from ollama_keepwarm.core.plan.mismatch import check_context
from ollama_keepwarm.core.plan.model import (
    MAX_EXPONENT,
    Event,
    ModelState,
    Observation,
    is_held,
    is_paused,
    match_rows,
    off_window,
)
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

EXPIRY_TOLERANCE = timedelta(seconds=1)
"""A model gone this close to its ``expires_at`` (or later) expired; earlier, it was evicted."""

REWARM_DELAY_CAP_S = 600.0
"""The longest wait before re-warming a model other clients keep evicting."""

FIRST_REWARM_DELAY_CAP_S = 60.0
"""The first wait after a loss to another client is at most this long."""

SOON_AFTER_OUR_LOAD_S = 60.0
"""A model lost this soon after our own load of it may be a client reloading it with other
options: the re-warm waits, so the client's runner shows (an options mismatch)."""


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
    processes_visible: bool = False,
    reloaded_by_others: Collection[str] = (),
    loading_count: int = 0,
    evicted_by_ours: Mapping[str, str] | None = None,
) -> Observation:
    """Compare two snapshots: who vanished and why, who lost its GPU, who is in conflict.

    ``outage`` says Ollama was unreachable between the two looks: a restart loses every model
    (§7.8), which is repair work, not a capacity problem. ``runtime_oom_expires_all`` says the
    server expires every model after a runtime out-of-memory error (v0.30+, §4.4).
    ``processes_visible`` says runner processes are seen (``core/plan/processes.py``), and
    ``reloaded_by_others`` names the kept models a client's runner started for since the last
    look: the evidence for a loss's cause. ``evicted_by_ours`` (victim key -> our model's key)
    names the kept models whose runner ended right before a runner of our load started
    (``processes.evicted_by_ours``): a proved eviction, which settles a conflict at once.
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
            st = replace(st, full_beside=0, retried_hold=None)
            st, seen = _seen_listed(model, daemon, st, row, previous, now)
            new_states[model.key] = note_room(st, row, current)
            events.extend(seen)
            continue
        # Gone: listed before, or loaded by us since (a client reloading it with its own
        # options makes it vanish again right after each of our loads).
        if (old is None and not loaded_since_look) or st.in_flight_since is not None:
            continue
        if previous is None:
            continue
        if is_held(st) or is_paused(st, now) or off_window(st):
            # We asked for this (a capacity hold, a pause --unload, a closed window): no repair.
            new_states[model.key] = replace(st, last_row=None, foreign=False, foreign_context=None)
            events.append(Event("model_released", model.name, {"held": is_held(st)}))
            continue
        proof = (evicted_by_ours or {}).get(model.key)
        culprit = next((m for m in models if m.key == proof), None) or _culprit(
            models, new_states, model, previous.taken_at, now
        )
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
            filled=len(previous.models) + (old is None),
            oom_rule=runtime_oom_expires_all,
            evidence=(
                "client reload"
                if model.key in reloaded_by_others
                else "none"
                if processes_visible
                else "unknown"
            ),
        )
        struck = struck or "during_load_of" in event.fields
        new_states[model.key] = st
        events.append(event)
    # A proof may come a look after the loss it explains (the runner watch's next rescan).
    proved = any(
        new_states[m.key].strikes and m.key in (evicted_by_ours or {}) and after[m.key] is None
        for m in models
    )
    if struck or proved:
        events.extend(settle_conflict(models, new_states, daemon, now, proved=proved, rows=after))
    room = Room(occupied=occupied(models, new_states, current, after, loading_count))
    events.extend(hold_again(models, new_states, after, room, now))
    listed = occupied(models, new_states, current, after, 0)
    events.extend(hold_below_higher(models, new_states, after, listed, now))
    events.extend(
        look_for_room(models, new_states, current, after, now, loading_elsewhere=loading_count)
    )
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
    evidence: str = "unknown",
    filled: int = 0,
) -> tuple[ModelState, Event]:
    """Name why a kept model is gone, and note what that means for the next warm.

    ``evidence``: "client reload" (a client's runner started for it), "none" (processes are
    visible and none did) or "unknown" (not visible). An options mismatch outlives the loss:
    a client reloading with its options makes the model vanish and come back (issue 21).
    """
    if outage:
        cause, culprit = "restart", None
    elif old is not None and old.expires_at <= now + EXPIRY_TOLERANCE and not _drained(st, old):
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
        "evidence": evidence,
    }
    last_loss = st.last_vanished_at
    st = replace(
        st,
        last_row=None,
        last_vanished_at=now,
        vanish_reason=cause,
        # Evicted: a load needed room, so the runners listed with it filled the room.
        full_beside=filled if cause == "evicted" else 0,
    )
    if culprit is not None:
        fields["during_load_of"] = culprit.name
        st = replace(st, strikes=(*st.strikes, now))
    elif cause in {"evicted", "oom"} or (
        cause == "expired" and evidence == "none" and _cut_short(model, st, old)
    ):
        st = _note_repeated_loss(
            st, daemon, now, seen_at, last_loss, oom=cause == "oom", evidence=evidence
        )
        wait = st.rewarm_not_before
        fields["rewarm_delay_s"] = round((wait - now).total_seconds(), 3) if wait else 0.0
    return st, Event("model_vanished", model.name, fields)


def _drained(st: ModelState, old: RunningModel) -> bool:
    """Whether the last lease shown was already at its end when first seen: ``d`` = 0, a
    runner Ollama drains (an eviction victim chosen while loading or busy shows now + 0 at
    every look, §4.5; the unload command sets ``expires_at`` to now, §1.4). Its loss was a
    taking away, which backs off if it repeats; only a lease that ran its course expired.
    A lease of ours under a second would read as drained too (and back off): a keeper with
    one renews faster than it can look anyway."""
    seen = st.lease_seen
    return (
        seen is not None
        and seen[0] == old.expires_at
        and seen[0] - seen[1] <= EXPIRY_TOLERANCE  # clocks of two hosts may differ a little
    )


def _cut_short(model: ModelConfig, st: ModelState, old: RunningModel | None) -> bool:
    """A lease that lapsed after our last call and before the one it set would have: someone
    stopped the model (a ``keep_alive`` 0 request), or Ollama expired its runner at the end of
    our call to reload it for a client's request with other options queued behind ours, whose
    runner shows a moment later (chaos 0.24.0 seed 28): not our lease running out, so it is
    re-warmed like a loss, after a look. Only once a client has been seen reloading it with
    other options (``mismatch_reported``): an eviction by another model's load queued behind
    ours looks the same until its runner shows, and is re-warmed at once (chaos 0.24.0 seed
    10); a first reload costs one fight, which says the mismatch (issue 21: at most two)."""
    if old is None or st.last_warm_ok_at is None or not st.mismatch_reported:
        return False
    if old.expires_at < st.last_warm_ok_at - EXPIRY_TOLERANCE:
        return False  # an older lease than our last call's
    if math.isinf(model.keep_alive_s):
        return True
    ours = st.last_warm_ok_at + timedelta(seconds=model.keep_alive_s)
    return old.expires_at < ours - EXPIRY_TOLERANCE


def _seen_listed(
    model: ModelConfig,
    daemon: DaemonConfig,
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
    st = note_lease(model, daemon, st, row, previous, now)
    seen = st.lease_seen
    if seen is None or seen[0] != row.expires_at:
        seen = (row.expires_at, now)
    st = replace(st, last_row=row, lease_seen=seen)
    st, mismatch = check_context(model, st, row, previous)
    return st, events + mismatch


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
    evidence: str = "unknown",
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
        # Soon after our own load, a loss may be a client reloading it with its options: wait
        # so its runner shows. Where processes are visible, a reload shows as a client's runner
        # within a look: with no sign of one, re-warm at the next look (one poll), however
        # soon after our own load; a repeat doubles.
        if evidence == "none":
            step = daemon.poll_interval_s
        soon = evidence == "none" or (
            ours is not None and (now - ours).total_seconds() <= SOON_AFTER_OUR_LOAD_S
        )
        exponent = count - 1 if soon else count - 2
    delay = (
        0.0 if exponent < 0 else min(REWARM_DELAY_CAP_S, step * 2 ** min(exponent, MAX_EXPONENT))
    )
    return replace(
        st, vanishes=count, rewarm_not_before=now + timedelta(seconds=delay) if delay else None
    )
