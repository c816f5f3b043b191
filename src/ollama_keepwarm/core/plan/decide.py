"""The decision for every model at ``now``: the rules in the order they win."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.plan.capacity import Room, wait_for_room
from ollama_keepwarm.core.plan.holds import release_backing_off
from ollama_keepwarm.core.plan.leases import may_carry_keep_alive, next_renewal
from ollama_keepwarm.core.plan.mismatch import mismatch_outlasted, mismatch_reason
from ollama_keepwarm.core.plan.model import (
    CAPACITY,
    MISMATCH,
    OUTSIDE,
    RESUMED,
    RUNNER_CHECK,
    Action,
    Decision,
    ModelState,
    is_held,
    is_paused,
    match_rows,
    ranked,
)
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel


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
    loading_elsewhere: Collection[str] = (),
    room: Room | None = None,
) -> list[Decision]:
    """Decide, for every configured model in rank order, what to do at ``now``.

    ``unconfirmed`` names the models (by key) whose last call of ours ended after
    ``snapshot`` was asked for: for them "absent" may mean "was loading", so acting on it
    would load twice; the look that follows every call decides instead. ``loading_elsewhere``
    names the models a client's runner is loading now (``core/plan/processes.py``): never
    raced with a load of ours. ``room`` is what the last look showed of the room a cold load
    needs (``capacity.Room``): where it is full and a client's runner there is busy, the load
    waits (``capacity.wait_for_room``).
    """
    rows = match_rows(models, snapshot, blobs)
    # A model just held for capacity and still resident (or loading) takes the room a load of
    # another kept model needs: that load waits for its release, or it evicts a third kept
    # model and the hold cascades down the ranks (chaos seeds 2, 3 and 35 on 0.24.0).
    making_room = next(
        (
            m.name
            for m in models
            if is_held(st := states.get(m.key, ModelState()))
            and not st.release_sent
            and (rows[m.key] is not None or st.in_flight_since is not None)
        ),
        None,
    )
    return [
        _decide_one(
            model,
            daemon,
            snapshot,
            rows[model.key],
            states.get(model.key, ModelState()),
            now,
            resumed_at,
            elsewhere=model.key in loading_elsewhere,
            making_room=making_room,
            room=room,
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
    *,
    elsewhere: bool = False,
    making_room: str | None = None,
    room: Room | None = None,
) -> Decision:
    def verdict(
        action: Action, reason: str, at: datetime | None = None, *, renew: bool = True
    ) -> Decision:
        return Decision(model, action, reason, at, row, renew, st.window)

    backing_off = st.backoff_until is not None and now < st.backoff_until
    release = row is not None and not st.release_sent and not release_backing_off(st, now)
    if is_paused(st, now):
        if st.unload_wanted and release and st.in_flight_since is None and snapshot is not None:
            return verdict(Action.UNLOAD, "paused: unloading it")
        return verdict(Action.HOLD, "paused", st.paused_until)
    if st.in_flight_since is not None:
        return verdict(Action.WAIT, "refreshing" if st.in_flight_was_listed else "loading")
    if snapshot is None:
        return verdict(Action.WAIT, "waiting for Ollama")
    if st.window is not None and not st.window.kept:
        if release and model.after_window == "unload":
            return verdict(Action.UNLOAD, f"{OUTSIDE}: unloading it")
        return verdict(Action.HOLD, f"{OUTSIDE}; {st.window.note}")
    if is_held(st):
        if release:
            return verdict(Action.UNLOAD, st.held_reason or CAPACITY)
        return verdict(Action.HOLD, st.held_reason or CAPACITY)
    if backing_off:
        return verdict(Action.WAIT, f"backing off after error: {st.last_error}", st.backoff_until)

    if row is None:
        if elsewhere:
            return verdict(Action.WAIT, "a client is loading it")
        if st.foreign and not mismatch_outlasted(st, daemon, now):
            return verdict(Action.WAIT, f"{MISMATCH}: a client is reloading it with its options")
        if st.rewarm_not_before is not None and now < st.rewarm_not_before:
            return verdict(
                Action.WAIT,
                f"lost {st.vanishes} times in a row; waiting before re-warming",
                st.rewarm_not_before,
            )
        if making_room is not None:
            return verdict(Action.WAIT, f"making room: {making_room} (held) is unloaded first")
        if room is not None and (busy := wait_for_room(st, room)) is not None:
            return verdict(Action.WAIT, busy)
        if st.last_warm_ok_at is None:
            return verdict(Action.WARM, "not loaded")
        return verdict(Action.WARM, f"vanished ({st.vanish_reason or 'unloaded'})")

    if st.foreign:
        return verdict(Action.HOLD, mismatch_reason(st))
    idle = may_carry_keep_alive(row, now)
    if st.last_warm_ok_at is None:
        return verdict(Action.REFRESH, "claim the lease", renew=idle)
    if resumed_at is not None and st.last_warm_ok_at < resumed_at:
        # Once: after a suspend every expires_at lies in the past though nothing is busy.
        return verdict(Action.REFRESH, RESUMED)
    if st.refresh_requested_at is not None and st.last_warm_ok_at < st.refresh_requested_at:
        return verdict(Action.REFRESH, "refresh requested", renew=idle)
    if st.check_requested_at is not None and st.last_warm_ok_at < st.check_requested_at:
        # A ping, not a renewal: the process that ended may be this runner being unloaded.
        return verdict(Action.REFRESH, RUNNER_CHECK, renew=False)
    due, reason, renew = next_renewal(model, daemon, st, row, now, snapshot.taken_at)
    if due is not None and due <= now:
        return verdict(Action.REFRESH, reason, renew=renew)
    return verdict(Action.WAIT, reason, due, renew=renew)
