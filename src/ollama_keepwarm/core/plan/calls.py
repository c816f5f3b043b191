"""Our own calls: what a warm starting or ending teaches about the model."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ollama_keepwarm.core.config import ModelConfig
from ollama_keepwarm.core.plan.mismatch import (
    MISMATCH_RELOADS,
    SUSPECT_RELOAD_FLOOR_S,
    SUSPECT_RELOAD_FRACTION,
    report_mismatch,
)
from ollama_keepwarm.core.plan.model import Event, ModelState
from ollama_keepwarm.core.ps import RunningModel


def record_warm_started(
    st: ModelState,
    now: datetime,
    *,
    listed: bool,
    row: RunningModel | None = None,
    renews: bool = True,
) -> ModelState:
    """Note that a call for this model is in flight (absent then means loading).

    ``row`` is the model's row when the call started: if ``expires_at`` is the same after the
    call, the model is busy (its lease is frozen, §1.3). ``renews`` says the call carries our
    ``keep_alive``: once it succeeds, the runner's duration is ours.
    """
    window = (now, None) if not listed else st.load_window
    return replace(
        st,
        in_flight_since=now,
        in_flight_was_listed=listed,
        in_flight_renews=renews,
        load_window=window,
        renewed_expiry=row.expires_at if row is not None else st.renewed_expiry,
    )


def record_call_withdrawn(st: ModelState) -> ModelState:
    """Our call was withdrawn (``acting.withdraw``) or cut short by shutdown: nothing was
    learnt, no failure counted; the model simply has no call of ours in flight any more."""
    return replace(st, in_flight_since=None)


def record_warm_finished(
    model: ModelConfig,
    st: ModelState,
    now: datetime,
    duration_s: float,
    *,
    resident: bool = False,
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
        lease_ours=st.lease_ours or st.in_flight_renews or not listed,
        load_window=(st.load_window[0], now) if st.load_window and not listed else st.load_window,
    )
    if not listed and resident:
        # Resident under another name (an alias, §7.1) that ps did not match before its blob
        # was known: no load happened, nothing to learn a load time from (issue 22 item 7).
        new = replace(new, loaded_since_look=True)
        return new, [
            Event("model_warmed", model.name, {"duration_s": round(duration_s, 3), "loaded": False})
        ]
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
    new, warning = report_mismatch(
        model,
        replace(new, foreign=True, foreign_context=None),
        {
            "reloads_in_a_row": streak,
            "duration_s": round(duration_s, 3),
        },
    )
    return new, events + warning
