"""Errors and back-off: a failing model backs off alone; a timed-out load gets a longer limit."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from ollama_keepwarm.core.config import ModelConfig
from ollama_keepwarm.core.plan.model import MAX_EXPONENT, Event, ModelState

MAX_LOAD_TIMEOUT_S = 6 * 3600.0
"""A load's learnt time limit never grows past this (or past ``load_timeout``, if longer)."""


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
    "crashed": (5.0, 300.0),
}


def backoff_delay_s(kind: str, failures: int, name: str) -> float:
    """Exponential backoff with ±25 % jitter, deterministic per (model, attempt) for testing."""
    first, cap = _BACKOFF.get(kind, (5.0, 300.0))
    base = min(cap, first * 2 ** min(max(0, failures - 1), MAX_EXPONENT))
    digest = hashlib.sha256(f"{name}:{failures}".encode()).digest()
    jitter = 0.75 + 0.5 * (int.from_bytes(digest[:4], "big") / 2**32)
    return float(base * jitter)


RETRY_FLOOR_S = 1.0
"""A failed call on a listed model is retried no sooner than this, however near its lease's end."""


def retry_delay_s(delay_s: float, now: datetime, lease_end: datetime | None) -> float:
    """How long a failed call on a model Ollama lists (its lease ending at ``lease_end``) waits
    before it is tried again: its backoff, but at most half the time the lease has left.

    A renewal that failed once (a 500, a garbled answer) and backed off past the lease's end
    lets the runner expire, and the next client pays the cold start the keeper is for (chaos
    seed 212 on 0.32.15: 5.2 s of backoff, 5 s of lease left). Halving what is left, never below
    :data:`RETRY_FLOOR_S`, gives a failing renewal a few more tries before the end and never a
    busy loop. A lease already past (the model busy or stopping) or a cold model keeps its
    backoff.
    """
    if lease_end is None:
        return delay_s
    left = (lease_end - now).total_seconds()
    if left <= 0:
        return delay_s
    return min(delay_s, max(left / 2, RETRY_FLOOR_S))


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


def close_window(st: ModelState, now: datetime) -> tuple[datetime, datetime | None] | None:
    if st.load_window and st.load_window[1] is None:
        return (st.load_window[0], now)
    return st.load_window


def _backed_off(
    model: ModelConfig,
    st: ModelState,
    now: datetime,
    kind: str,
    error: str,
    lease_end: datetime | None,
) -> tuple[ModelState, int, float]:
    """A failed call is over (its load window closes) and the model backs off one step more:
    the new state, the failure count and the delay (``retry_delay_s``: ``lease_end`` is the
    ``expires_at`` of the row the call was made on, None for a cold model).

    A failed call tells nothing about the lease (Ollama may never have served it), so an
    ``expires_at`` it left unmoved is not frozen (``leases.is_frozen``): ``renewed_expiry`` goes.
    """
    failures = st.failures + 1
    delay = retry_delay_s(backoff_delay_s(kind, failures, model.name), now, lease_end)
    new = replace(
        st,
        in_flight_since=None,
        renewed_expiry=None,
        load_window=close_window(st, now),
        failures=failures,
        backoff_until=now + timedelta(seconds=delay),
        last_error=f"{kind}: {error}",
    )
    return new, failures, delay


def record_warm_failed(
    model: ModelConfig,
    st: ModelState,
    now: datetime,
    status: int,
    message: str,
    *,
    lease_end: datetime | None = None,
) -> tuple[ModelState, list[Event]]:
    """Note a failed warm: back this model off; an unreachable Ollama is not its fault.

    ``lease_end``: the listed row's ``expires_at`` when the call was a renewal or a ping; the
    retry comes before it (``retry_delay_s``)."""
    kind, hint = classify_error(status, message, model.name)
    if kind == "unreachable":
        return replace(
            st, in_flight_since=None, load_window=close_window(st, now), renewed_expiry=None
        ), []
    new, failures, delay = _backed_off(model, st, now, kind, message, lease_end)
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
        renewed_expiry=None,  # nothing learnt about the lease (see _backed_off)
        load_window=close_window(st, now),
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


def record_call_crashed(
    model: ModelConfig,
    st: ModelState,
    now: datetime,
    error: str,
    *,
    lease_end: datetime | None = None,
) -> tuple[ModelState, list[Event]]:
    """Note a call of ours that raised something no rule expected (a bug, a garbled answer).

    It is a failure like any other: the call is over (its load window closes, so this model is
    not blamed for later evictions) and the model backs off, so a repeatable cause cannot spin.
    """
    new, failures, delay = _backed_off(model, st, now, "crashed", error, lease_end)
    return new, [
        Event(
            "call_crashed",
            model.name,
            {"error": error, "attempt": failures, "retry_in_s": round(delay, 1)},
        )
    ]


def show_failure(status: int, failures: int, name: str) -> float | None:
    """After ``/api/show`` of a listed name failed (the ``failures``-th time in a row): None if
    asking again cannot help (404: deleted while loaded, §7.5; 400), else the seconds to wait
    before asking again. A timeout, an outage or a 5xx is transient (issue 22 item 6): filing it
    for good made an alias unmatchable for the daemon's life."""
    if status in {400, 404}:
        return None
    return backoff_delay_s("server_error", failures, name)


def down_poll_delay_s(down_polls: int, cap_s: float) -> float:
    """The next look while Ollama is away or answering garbage: 0.25 s doubling up to
    ``down_poll_max`` (the regular poll keeps its own cadence beside it)."""
    return float(min(cap_s, 0.125 * 2 ** min(down_polls, 8)))
