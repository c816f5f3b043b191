"""Priming a model's prompt prefix after each load: what to send, and when. Pure.

Ollama's runner reuses, per slot, the cached prefix of the previous prompt (reference §9: a
~1300-token prompt took 32 s the first time, 0.55-0.69 s with the same prefix). A runner that
was just (re)loaded has empty slots, so the first client request pays the whole prefix. One
request with the clients' fixed prefix (system prompt, tool schemas, examples), the configured
options and ``num_predict`` 1 fills a slot, and the client's next request only pays its own
part. The rendered prefix must be the one the clients' requests start with, so the request goes
to the endpoint they use (``/api/chat`` by default, ``/api/generate`` for prompts) and the
model's template renders it.

When: after every load of the model the keeper sees (its own cold warm, a refresh that turned
into a reload, a runner that appeared listed without us, a resume), and only then. A lease
renewal of a runner that did not reload leaves its cache alone and does not prime again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "CHAT",
    "GENERATE",
    "LOAD_EVENTS",
    "Message",
    "Prime",
    "PrimeState",
    "appeared",
    "is_due",
    "note_load",
    "record_prime_failed",
    "record_prime_finished",
    "record_prime_started",
]

CHAT = "/api/chat"
GENERATE = "/api/generate"

LOAD_EVENTS = {
    "model_warmed": "warm",  # our own cold warm (the planner says loaded=True)
    "runner_reloaded": "reload",  # a refresh that took as long as a load: crash repair, ...
    "refreshed_after_resume": "resume",
}
"""Planner and keeper events that mean the runner's slots may be empty, and the cause."""

FILLER_PROMPT = "."
"""The user turn of a templated generate prime: an empty prompt would only load the model
(§2.1), and what comes after the system part is not the clients' prefix anyway."""


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message of the fixed prefix."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Prime:
    """The conversation prefix a model's clients send, and how they send it.

    ``messages`` for ``/api/chat``; for ``/api/generate`` the first message's content is the
    ``system`` (or, with ``raw``, the bare prompt prefix). ``source`` names the file it was read
    from, if any (shown by ``check``).
    """

    messages: tuple[Message, ...]
    endpoint: str = CHAT
    raw: bool = False
    source: str = ""

    @property
    def text(self) -> str:
        """All of the prefix's text, for display and sizing."""
        return "\n\n".join(m.content for m in self.messages)

    def payload(
        self, name: str, *, keep_alive: int | str | None, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The priming request: the prefix, exactly our options plus ``num_predict`` 1.

        ``num_predict`` is not a load option, so the runner is never reloaded by it (§4.6).
        ``keep_alive`` None leaves it out: the runner keeps the duration it has (§1.3), and a
        runner Ollama drains for another load is not revived (§4.5).
        """
        body: dict[str, Any] = {"model": name, "stream": False}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        if self.endpoint == CHAT:
            body["messages"] = [{"role": m.role, "content": m.content} for m in self.messages]
        elif self.raw:
            body["prompt"], body["raw"] = self.text, True
        else:
            body["system"], body["prompt"] = self.text, FILLER_PROMPT
        body["options"] = {**options, "num_predict": 1}
        return body


@dataclass(frozen=True, slots=True)
class PrimeState:
    """What the keeper knows of one model's primed prefix."""

    loaded_at: datetime | None = None  # the last load the keeper saw
    load_cause: str = ""
    primed_load: datetime | None = None  # the load our last successful prime followed
    primed_with: Prime | None = None  # the prefix it sent (a reload of the config may change it)
    primed_at: datetime | None = None
    in_flight_since: datetime | None = None
    duration_s: float | None = None
    prompt_tokens: int | None = None
    prompt_eval_s: float | None = None
    primes: int = 0
    failures: int = 0
    backoff_until: datetime | None = None
    last_error: str | None = None

    def primed(self, prime: Prime | None) -> bool:
        """True when the last load seen was primed with this prefix."""
        return (
            prime is not None
            and self.loaded_at is not None
            and self.primed_load == self.loaded_at
            and self.primed_with == prime
        )


def note_load(st: PrimeState, now: datetime, cause: str) -> PrimeState:
    """A load happened: the slots are empty, prime again (and at once, whatever failed)."""
    return replace(st, loaded_at=now, load_cause=cause, failures=0, backoff_until=None)


def appeared(listed_before: bool, listed_now: bool, *, ours_unsettled: bool) -> bool:
    """A model listed now but not before was loaded by someone (a client, or us).

    ``ours_unsettled``: a call of ours was in flight, or ended after the previous snapshot was
    asked for; the absence then may be our own load (invisible while loading, §3.5), which our
    call's own event already counted.
    """
    return listed_now and not listed_before and not ours_unsettled


def is_due(
    prime: Prime | None,
    st: PrimeState,
    now: datetime,
    *,
    listed: bool,
    leave_alone: bool,
    warm_in_flight: bool,
) -> bool:
    """Prime now? Only a listed runner we keep, with no call of ours on it, loaded since the
    last prime (or primed with another prefix); never while a failure backs it off.

    ``leave_alone`` covers paused, held and foreign runners: a request with our options would
    load or reload them.
    """
    if prime is None or not listed or leave_alone or warm_in_flight:
        return False
    if st.in_flight_since is not None or st.loaded_at is None or st.primed(prime):
        return False
    return st.backoff_until is None or now >= st.backoff_until


def record_prime_started(st: PrimeState, now: datetime) -> PrimeState:
    """A priming request is in flight."""
    return replace(st, in_flight_since=now)


def record_prime_finished(
    st: PrimeState,
    prime: Prime,
    load: datetime | None,
    now: datetime,
    *,
    duration_s: float,
    prompt_tokens: int | None,
    prompt_eval_s: float | None,
) -> PrimeState:
    """The prefix of ``load`` (the load seen when the request started) is cached now."""
    return replace(
        st,
        in_flight_since=None,
        primed_load=load,
        primed_with=prime,
        primed_at=now,
        duration_s=duration_s,
        prompt_tokens=prompt_tokens,
        prompt_eval_s=prompt_eval_s,
        primes=st.primes + 1,
        failures=0,
        backoff_until=None,
        last_error=None,
    )


FIRST_RETRY_S = 5.0
MAX_RETRY_S = 300.0


def record_prime_failed(st: PrimeState, now: datetime, error: str) -> PrimeState:
    """Back off exponentially: 5 s, 10 s, ... up to 5 minutes; the lease is not at stake."""
    failures = st.failures + 1
    delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(failures - 1, 20))
    return replace(
        st,
        in_flight_since=None,
        failures=failures,
        backoff_until=now + timedelta(seconds=delay),
        last_error=error,
    )
