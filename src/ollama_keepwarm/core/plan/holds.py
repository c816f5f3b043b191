"""Holds: models deliberately left alone (paused, outside their windows, released)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from ollama_keepwarm.core.config import ModelConfig
from ollama_keepwarm.core.plan.errors import backoff_delay_s
from ollama_keepwarm.core.plan.model import Event, ModelState
from ollama_keepwarm.core.windows import WindowVerdict


def apply_window(st: ModelState, verdict: WindowVerdict | None) -> ModelState:
    """Note the calendar's verdict; a change between kept and not allows one new unload."""
    changed = (st.window is None or st.window.kept) != (verdict is None or verdict.kept)
    return replace(st, window=verdict, release_sent=False if changed else st.release_sent)


def record_release_sent(st: ModelState) -> ModelState:
    """Note that Ollama accepted our unload of a held model (once per hold).

    Noted after the call, not before: a release that failed is sent again (issue 22 item 9).
    """
    return replace(st, release_sent=True, failures=0, backoff_until=None, last_error=None)


RELEASE_FAILED = "release failed"
"""How ``last_error`` begins after a failed release (``record_release_failed``)."""


def release_backing_off(st: ModelState, now: datetime) -> bool:
    """A release (of a held, paused or out-of-window model) waits only for the back-off of a
    release that failed: a failed or timed-out *load* backs the model's next load off, not
    its unload. Chaos 0.32.15 seed 572: a held model whose load had timed out (an 11 s
    back-off) was never released, and a kept model below it waited for that room ("making
    room") until the run ended; a ``pause --unload`` was not done either."""
    return (
        st.backoff_until is not None
        and now < st.backoff_until
        and (st.last_error or "").startswith(RELEASE_FAILED)
    )


def record_release_failed(
    model: ModelConfig, st: ModelState, now: datetime, error: str
) -> tuple[ModelState, list[Event]]:
    """A release failed: try it once more at the next decision (the keeper decides again as
    soon as a call ends), then after a back-off (never in a loop, never forgotten). A held
    model still resident takes the room another kept model waits for (``decide``'s
    ``making_room``): one stray failure must not hold that up."""
    failures = st.failures + 1
    delay = backoff_delay_s("server_error", failures - 1, model.name) if failures > 1 else 0.0
    new = replace(
        st,
        release_sent=False,
        failures=failures,
        backoff_until=now + timedelta(seconds=delay),
        last_error=f"{RELEASE_FAILED}: {error}",
    )
    fields = {"error": error, "attempt": failures, "retry_in_s": round(delay, 1)}
    return new, [Event("release_failed", model.name, fields)]


def pause_with_unload(st: ModelState) -> ModelState:
    """``pause --unload``: a state, not a call: the model is unloaded whenever it is listed and
    no call of ours is in flight (a load in flight finishes first, issue 22 item 4)."""
    return replace(st, unload_wanted=True, release_sent=False)


def apply_pause(st: ModelState, until: datetime | None) -> ModelState:
    """Note the operator's pause (``None``: not paused); a resume forgets the unload."""
    if until is None:
        return replace(st, paused_until=None, unload_wanted=False)
    return replace(st, paused_until=until)
