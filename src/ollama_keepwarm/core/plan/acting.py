"""The rules the keeper applies around its calls: which queued call is still made, which look
can judge a model, who may be primed, what a config change forgets, what a resume verifies.

They were written inside ``daemon/host.py``; here they are plain functions of plain data, so
the host only observes, asks, and carries out (issue 22).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from ollama_keepwarm.core.config import ModelConfig
from ollama_keepwarm.core.plan.capacity import (
    Room,
    rank_holds_again,
    release_holds,
    room_full,
    wait_for_room,
)
from ollama_keepwarm.core.plan.model import (
    RESUMED,
    Action,
    Decision,
    ModelState,
    is_held,
    is_paused,
    off_window,
)
from ollama_keepwarm.core.prime import LOAD_EVENTS

__all__ = [
    "adopt_config",
    "leave_alone",
    "prime_cause",
    "queue_order",
    "record_verify_failed",
    "repulled",
    "still_wanted",
    "unconfirmed",
    "verify_after",
    "withdraw",
]


def still_wanted(decision: Decision, latest: Decision | None, *, configured: bool) -> bool:
    """Make a queued call only if the model is still configured and the latest plan still asks
    for it: a look meanwhile may have seen a client's runner to leave alone. A "confirming"
    wait (the look after our own call) neither asks nor forbids: the call stands."""
    if not configured:
        return False
    return latest is None or latest.action is decision.action or latest.reason == "confirming"


def unconfirmed(call_ended: Mapping[str, float], snapshot_asked: float) -> set[str]:
    """Models whose last call of ours ended after the snapshot was asked for (monotonic): that
    snapshot cannot say whether they are loaded (a load is invisible, §3.5)."""
    return {key for key, ended in call_ended.items() if ended > snapshot_asked}


def leave_alone(st: ModelState, now: datetime) -> bool:
    """No request of ours but a release may reach this model now: paused, held for capacity,
    outside its window, or a client's runner with other options. Judged from the state, not
    from a decision (a "confirming" wait hid a hold, issue 22 item 12)."""
    return is_paused(st, now) or is_held(st) or off_window(st) or st.foreign


def withdraw(
    in_flight: Decision,
    st: ModelState,
    now: datetime,
    *,
    room: Room | None = None,
    started: bool = False,
    client_started: bool = False,
) -> bool:
    """Withdraw a refresh of ours still in flight once the model must be left alone (a client's
    runner with other options, a hold, a pause): one queued inside Ollama behind a client's
    reload would, when served, reload the client's runner with our options. Ollama skips a
    request whose client has gone while it is queued (§2.6). A load of ours sent while the
    model was gone is withdrawn too once a client's runner of it with other options is listed:
    it is queued behind that runner, and served it would reload it (chaos 0.32.15 seed 30);
    so is a cold load once a client's runner of the model started during our call and none
    of our call runs (chaos 0.24.0 seed 262: our load went out as a client's load began, and
    a second client's reload with other options replaced that runner; 0.32.15 seed 238: the
    client's load was first, with other options): queued behind it, ours would find the
    model loaded (nothing gained) or, served, reload it with our options.
    So is a cold load whose runner has not ``started`` (queued behind a client's load) once
    the room it needs is full: of a hold tried again (``capacity.hold_again`` holds it again),
    or taken by a client's runner that is busy (``capacity.wait_for_room``): served, it would
    evict an idle kept model. Other loads and releases stand: a load aborted is a load thrown
    away, and a release is what a hold asks for."""
    if in_flight.action is Action.WARM:
        if st.foreign and st.last_row is not None:
            return True
        if client_started and not started and in_flight.row is None:
            return True
        if room is None or started or in_flight.row is not None:
            return False
        retry_lost = st.retried_hold is not None and room_full(st, room)
        return retry_lost or wait_for_room(st, room) is not None
    return in_flight.action is Action.REFRESH and leave_alone(st, now)


def verify_after(decision: Decision, st: ModelState) -> tuple[bool, bool]:
    """After a successful call: (refreshed after a resume, compute one token to verify it)."""
    resumed = decision.reason == RESUMED and decision.action is Action.REFRESH and not st.failures
    return resumed, resumed and decision.model.verify


def record_verify_failed(st: ModelState, now: datetime) -> ModelState:
    """A verify after resume failed: the runner may be dead (its GPU gone, §7.7). Ask for a
    refresh that expects a reload: Ollama notices a dead runner on the next request."""
    return replace(st, refresh_requested_at=now, expect_reload=True)


def adopt_config(
    old: Sequence[ModelConfig], new: Sequence[ModelConfig], states: Mapping[str, ModelState]
) -> dict[str, ModelState]:
    """A reloaded config: keep what we learnt about models that stay; try held models again
    (the set or the room may differ), unless only ranks or leases changed (as many stay held,
    by the new ranks: ``capacity.rank_holds_again``); a config change ends an options
    mismatch (issue 21): the operator may have written the client's options in."""
    before = {m.key: m for m in old}
    kept = rank_holds_again(old, new, states) or release_holds(states)
    adopted: dict[str, ModelState] = {}
    for model in new:
        st = kept.get(model.key, ModelState())
        was = before.get(model.key)
        if was is not None and (was.options != model.options or st.foreign):
            # Other options give another context: learn ours again, forget the mismatch.
            st = replace(st, own_context=None, foreign=False, mismatch_reported=False)
        adopted[model.key] = st
    return adopted


def repulled(
    seen: Mapping[str, str], rows: Sequence[tuple[str, str]]
) -> tuple[set[str], dict[str, str]]:
    """Listed names (match keys) whose manifest digest changed since we learnt them: pulled
    again (§7.6), so what ``/api/show`` said (the blob above all) is stale. ``rows`` are
    ``(key, digest)`` pairs from the snapshot; returns the stale keys and the digests now."""
    now = dict(seen)
    stale = set()
    for key, digest in rows:
        if key in seen and seen[key] != digest:
            stale.add(key)
        now[key] = digest
    return stale, now


def queue_order(decisions: Sequence[Decision]) -> list[Decision]:
    """Releases first: the load lane is FIFO, so a held model's room is given back before a
    higher-ranked model's load needs it; otherwise rank order (sorted() is stable)."""
    return sorted(decisions, key=lambda d: d.action is not Action.UNLOAD)


def prime_cause(event_name: str, fields: Mapping[str, object]) -> str | None:
    """Which event empties a runner's slots (a load nobody used yet), and why; else None.

    Ours, a reload, a resume; not a warm that found the model resident (``loaded`` false).
    """
    cause = LOAD_EVENTS.get(event_name)
    if cause is None or (event_name == "model_warmed" and not fields.get("loaded")):
        return None
    return cause
