"""Seeded client traces: who asks which model when, and what goes wrong meanwhile.

A trace is pure data in *trace seconds* since Ollama first started, so every strategy replays
exactly the same requests at the same times (open loop: an arrival never waits for the previous
reply). Requests are kept out of a few windows on purpose, and the reasons are part of the
benchmark's definition, not tuning:

* while Ollama is down or the machine sleeps, and during the *reaction allowance* after each
  disruption (poll interval + every load the model must wait for + 10 s): a request there would be
  cold for every strategy, so it says nothing about them. The reaction itself is measured
  separately (loss -> warm). Every cold request left is therefore an avoidable one.
* within 15 s of a lease boundary (an idle gap of 5 m or 1 h, a 4-minute cron tick): there the
  outcome would hang on milliseconds of scheduling jitter, and the bench must count the same cold
  requests on every run with the same seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from ollama_keepwarm.core.config import DaemonConfig

__all__ = [
    "BIG_MODEL",
    "CRON_PERIOD_S",
    "LOAD_SECONDS_PER_GB",
    "Disruption",
    "Request",
    "Trace",
    "agent_loop",
    "load_seconds",
    "slack_bot",
    "tiny",
]

LOAD_SECONDS_PER_GB = 1.0
"""Load speed of the fake (trace seconds per 10^9 bytes): an 8B model ~4.9 s, a 70B ~42.5 s."""

BIG_MODEL = "llama3.3:70b"
CRON_PERIOD_S = 240.0
"""The cron recipe's period: every 4 minutes, just under Ollama's 5-minute default lease."""

_SIZES = {
    "llama3.1:8b": 4_920_753_328,
    "qwen2.5-coder:7b": 4_683_087_332,
    "llama3.2:3b": 2_019_393_189,
    BIG_MODEL: 42_520_413_916,
}
_POLL_S = DaemonConfig().poll_interval_s
_GUARD_S = 10.0
_LEASE_BOUNDARIES_S = (300.0, 3600.0)  # Ollama's default lease; ollama-keepwarm's default lease
_BOUNDARY_MARGIN_S = 15.0


def load_seconds(model: str) -> float:
    """Return how long the fake takes to load ``model``, in trace seconds."""
    return _SIZES[model] / 1e9 * LOAD_SECONDS_PER_GB


@dataclass(frozen=True, slots=True)
class Request:
    """One chat request: ``generate_s`` seconds of generation (one token per second)."""

    at_s: float
    model: str
    generate_s: int
    client: Literal["main", "other"] = "main"


@dataclass(frozen=True, slots=True)
class Disruption:
    """A server restart (down ``length_s``) or a suspend (asleep ``length_s``)."""

    at_s: float
    kind: Literal["restart", "suspend"]
    length_s: float


@dataclass(frozen=True)
class Trace:
    """A day (or an afternoon) of traffic and disruptions; ``models`` in the keeper's rank order."""

    name: str
    title: str
    seed: int
    duration_s: float
    models: tuple[str, ...]
    requests: tuple[Request, ...]
    disruptions: tuple[Disruption, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def main_requests(self) -> tuple[Request, ...]:
        """The requests of the client being kept warm (not the big-model user)."""
        return tuple(r for r in self.requests if r.client == "main")


def _chain_s(models: Iterable[str]) -> float:
    return sum(load_seconds(m) for m in models)


def _guards(
    models: tuple[str, ...], disruptions: Iterable[Disruption], big_at: float
) -> list[tuple[float, float]]:
    """Windows no main request may fall in: disruptions plus their reaction allowance."""
    allowance = _POLL_S + _chain_s(models) + _GUARD_S
    windows = [(d.at_s - _GUARD_S, d.at_s + d.length_s + allowance) for d in disruptions]
    windows.append((big_at - _GUARD_S, big_at + load_seconds(BIG_MODEL) + allowance))
    windows.append((0.0, allowance))  # Ollama's own start at t = 0
    return windows


def _violation(
    at: float,
    model: str,
    last_end: dict[str, float],
    chain_s: float,
) -> float | None:
    """Return where to move ``at`` so it leaves a lease boundary, or None when it is fine."""
    previous = last_end.get(model)
    if previous is not None:
        for boundary in _LEASE_BOUNDARIES_S:
            if abs(at - previous - boundary) < _BOUNDARY_MARGIN_S:
                return previous + boundary + _BOUNDARY_MARGIN_S
    tick_offset = at % CRON_PERIOD_S
    if tick_offset > CRON_PERIOD_S - 2 or tick_offset < chain_s + 3:
        return at - tick_offset + (CRON_PERIOD_S if tick_offset > chain_s + 3 else 0) + chain_s + 3
    return None


def _place(
    wanted: list[Request], guards: list[tuple[float, float]], duration_s: float, chain_s: float
) -> list[Request]:
    """Drop requests inside a guard window; shift the others off lease boundaries (later).

    Dropping, not shifting, out of a guard window: a pile of postponed requests would be a burst
    the trace never had.
    """
    placed: list[Request] = []
    last_end: dict[str, float] = {}
    cursor = 0.0
    for request in sorted(wanted, key=lambda r: r.at_s):
        at = max(request.at_s, cursor)
        for _ in range(50):
            moved = _violation(at, request.model, last_end, chain_s)
            if moved is None:
                break
            at = moved
        if at >= duration_s:
            break
        if any(start <= at < end for start, end in guards):
            continue
        at = round(at, 1)
        placed.append(Request(at, request.model, request.generate_s))
        last_end[request.model] = at + request.generate_s
        cursor = at + 0.5
    return placed


def _trace(
    name: str,
    title: str,
    seed: int,
    duration_s: float,
    models: tuple[str, ...],
    wanted: list[Request],
    disruptions: list[Disruption],
    big_at: float,
) -> Trace:
    big_at = round(big_at, 1)
    disruptions = [Disruption(round(d.at_s, 1), d.kind, round(d.length_s, 1)) for d in disruptions]
    guards = _guards(models, disruptions, big_at)
    requests = _place(wanted, guards, duration_s, _chain_s(models))
    big = Request(big_at, BIG_MODEL, 8, "other")
    return Trace(
        name=name,
        title=title,
        seed=seed,
        duration_s=duration_s,
        models=models,
        requests=tuple(sorted([*requests, big], key=lambda r: r.at_s)),
        disruptions=tuple(sorted(disruptions, key=lambda d: d.at_s)),
    )


def slack_bot(seed: int) -> Trace:
    """A Slack bot over a 9-hour working day: bursts of messages, long idle gaps, lunch.

    Bursts of 1-8 messages 15-90 s apart; gaps between bursts exponential with a 20-minute mean;
    a 40-minute suspend at lunch; restarts (down 20 s) one each half-day; the big model once.
    """
    rng = random.Random(f"slack-{seed}")
    hour = 3600.0
    duration = 9 * hour
    model = "llama3.1:8b"
    wanted: list[Request] = []
    t = 10 * 60.0
    while t < duration:
        for _ in range(rng.randint(1, 8)):
            wanted.append(Request(t, model, rng.randint(2, 6)))
            t += rng.uniform(15, 90)
        t += max(60.0, rng.expovariate(1 / (20 * 60)))
    lunch = 4 * hour + rng.uniform(0, 15 * 60)
    disruptions = [
        Disruption(rng.uniform(1.5 * hour, 3.5 * hour), "restart", 20.0),
        Disruption(lunch, "suspend", 40 * 60.0),
        Disruption(rng.uniform(5.5 * hour, 8.5 * hour), "restart", 20.0),
    ]
    wanted = [r for r in wanted if not lunch - 20 * 60 <= r.at_s < lunch]  # everyone at lunch
    big_at = rng.uniform(1 * hour, 8.5 * hour)
    return _trace(
        "slack",
        "Slack bot (9 h working day)",
        seed,
        duration,
        (model,),
        wanted,
        disruptions,
        big_at,
    )


def agent_loop(seed: int) -> Trace:
    """A coding agent over 3 hours: ~25 small calls a minute, coffee breaks of 6-20 minutes.

    Two models: ``qwen2.5-coder:7b`` for three calls in four, ``llama3.2:3b`` for the rest.
    Sessions last 15-45 minutes; one coffee break is spent suspended (laptop lid closed).
    """
    rng = random.Random(f"agent-{seed}")
    duration = 3 * 3600.0
    models = ("qwen2.5-coder:7b", "llama3.2:3b")
    wanted: list[Request] = []
    breaks: list[tuple[float, float]] = []
    t = 5 * 60.0
    while t < duration:
        session_end = t + rng.uniform(15 * 60, 45 * 60)
        while t < session_end:
            model = models[0] if rng.random() < 0.75 else models[1]
            wanted.append(Request(t, model, rng.randint(1, 2)))
            t += rng.uniform(1.0, 4.0)
        pause = rng.uniform(6 * 60, 20 * 60)
        breaks.append((t, pause))
        t += pause
    sleep_at, sleep_len = breaks[rng.randrange(len(breaks) - 1)]
    disruptions = [
        Disruption(rng.uniform(0.3 * duration, 0.45 * duration), "restart", 15.0),
        Disruption(sleep_at + 30, "suspend", max(60.0, sleep_len - 60)),
        Disruption(rng.uniform(0.75 * duration, 0.9 * duration), "restart", 15.0),
    ]
    big_at = rng.uniform(0.5 * duration, 0.7 * duration)
    return _trace(
        "agent",
        "Agent loop (3 h, coffee breaks)",
        seed,
        duration,
        models,
        wanted,
        disruptions,
        big_at,
    )


def tiny(seed: int) -> Trace:
    """A 20-minute trace for the smoke test: idle gaps past 5 m, a restart, the big model.

    Built so the outcome is certain: without a keeper the requests after the idle gap and after
    the restart are cold; with one, none is.
    """
    rng = random.Random(f"tiny-{seed}")
    model = "llama3.2:3b"
    at = [60.0, 420.0, 760.0, 1100.0]
    wanted = [Request(t + rng.uniform(0, 5), model, 1) for t in at]
    disruptions = [Disruption(600.0, "restart", 10.0)]
    return _trace(
        "tiny", "Tiny smoke trace (20 min)", seed, 1200.0, (model,), wanted, disruptions, 900.0
    )


TRACES: dict[str, Callable[[int], Trace]] = {"slack": slack_bot, "agent": agent_loop}
"""The traces of the full benchmark, by name."""
