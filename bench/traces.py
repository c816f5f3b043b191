"""Seeded client traces: who asks which model when, and what goes wrong meanwhile.

A trace is pure data in *trace seconds* since Ollama first started, so every strategy replays
exactly the same requests at the same times (open loop: an arrival never waits for the previous
reply). Each trace is a plain arrival process: nothing is dropped around a disruption and nothing
is moved off a lease boundary, so a request that no keeper could have served warm is in the trace
and is counted; :mod:`bench.floor` says which ones those are.

The only quiet times are the ones the scenario has: people at lunch, a coffee break. The suspends
fall inside them, because that is when a machine sleeps; a request that still arrives while it
sleeps is held by the (sleeping) server and answered after the resume.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BIG_MODEL",
    "CRON_PERIOD_S",
    "DISRUPTION_KINDS",
    "LOAD_SECONDS_PER_GB",
    "Disruption",
    "DisruptionKind",
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

DisruptionKind = Literal["restart", "suspend"]
DISRUPTION_KINDS: tuple[DisruptionKind, ...] = ("restart", "suspend")
"""Every kind of disruption a trace can hold. A new kind needs a handler in
:data:`bench.cell.DISRUPTORS` and a rule in :data:`bench.floor.LOSS_RULES`."""


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
    kind: DisruptionKind
    length_s: float

    @property
    def end_s(self) -> float:
        """When Ollama answers again (restart) or the machine is awake again (suspend)."""
        return self.at_s + self.length_s


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

    @property
    def other_requests(self) -> tuple[Request, ...]:
        """The requests of the other client, the one who uses the big model."""
        return tuple(r for r in self.requests if r.client == "other")


def _other_session(rng: random.Random, start_s: float) -> list[Request]:
    """Another user's session with the 70B model: 3-6 questions, 30 s to 4 min apart.

    The gaps stay under Ollama's 5-minute default lease, so while the session lasts the big
    model stays loaded unless something else evicts it.
    """
    session = []
    at = start_s
    for _ in range(rng.randint(3, 6)):
        session.append(Request(round(at, 1), BIG_MODEL, rng.randint(5, 20), "other"))
        at += rng.uniform(30, 240)
    return session


def _trace(
    name: str,
    title: str,
    seed: int,
    duration_s: float,
    models: tuple[str, ...],
    requests: list[Request],
    disruptions: list[Disruption],
) -> Trace:
    rounded = [Request(round(r.at_s, 1), r.model, r.generate_s, r.client) for r in requests]
    return Trace(
        name=name,
        title=title,
        seed=seed,
        duration_s=duration_s,
        models=models,
        requests=tuple(sorted((r for r in rounded if r.at_s < duration_s), key=lambda r: r.at_s)),
        disruptions=tuple(
            sorted(
                (Disruption(round(d.at_s, 1), d.kind, round(d.length_s, 1)) for d in disruptions),
                key=lambda d: d.at_s,
            )
        ),
    )


def slack_bot(seed: int) -> Trace:
    """A Slack bot over a 9-hour working day: bursts of messages, long idle gaps, lunch.

    Bursts of 1-8 messages 15-90 s apart; gaps between bursts exponential with a 20-minute mean;
    nobody writes during the hour of lunch, and the machine sleeps for its last 40 minutes;
    restarts (down 20 s) one each half-day; another user's session with the 70B model once.
    """
    rng = random.Random(f"slack-{seed}")
    hour = 3600.0
    duration = 9 * hour
    model = "llama3.1:8b"
    lunch = 4 * hour + rng.uniform(0, 15 * 60)
    lunch_end = lunch + 40 * 60
    requests: list[Request] = []
    t = 10 * 60.0
    while t < duration:
        for _ in range(rng.randint(1, 8)):
            if not lunch - 20 * 60 <= t < lunch_end:  # everyone at lunch
                requests.append(Request(t, model, rng.randint(2, 6)))
            t += rng.uniform(15, 90)
        t += max(60.0, rng.expovariate(1 / (20 * 60)))
    disruptions = [
        Disruption(rng.uniform(1.5 * hour, 3.5 * hour), "restart", 20.0),
        Disruption(lunch, "suspend", lunch_end - lunch),
        Disruption(rng.uniform(5.5 * hour, 8.5 * hour), "restart", 20.0),
    ]
    requests += _other_session(rng, rng.uniform(1 * hour, 8.5 * hour))
    title = "Slack bot (9 h working day)"
    return _trace("slack", title, seed, duration, (model,), requests, disruptions)


def agent_loop(seed: int) -> Trace:
    """A coding agent over 3 hours: ~25 small calls a minute, coffee breaks of 6-20 minutes.

    Two models: ``qwen2.5-coder:7b`` for three calls in four, ``llama3.2:3b`` for the rest.
    Sessions last 15-45 minutes; one coffee break is spent suspended (laptop lid closed, from
    30 s into the break until 30 s before its end).
    """
    rng = random.Random(f"agent-{seed}")
    duration = 3 * 3600.0
    models = ("qwen2.5-coder:7b", "llama3.2:3b")
    requests: list[Request] = []
    breaks: list[tuple[float, float]] = []
    t = 5 * 60.0
    while t < duration:
        session_end = t + rng.uniform(15 * 60, 45 * 60)
        while t < session_end:
            model = models[0] if rng.random() < 0.75 else models[1]
            requests.append(Request(t, model, rng.randint(1, 2)))
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
    requests += _other_session(rng, rng.uniform(0.5 * duration, 0.7 * duration))
    title = "Agent loop (3 h, coffee breaks)"
    return _trace("agent", title, seed, duration, models, requests, disruptions)


def tiny(seed: int) -> Trace:
    """A 12-minute trace for the smoke test, built so every outcome has seconds of margin.

    ``llama3.1:8b``, seven requests: at once (the floor: nothing can be loaded yet); 20 s later
    (warm for all); after a 6-minute idle gap (cold without a keeper); 50 s after a restart
    (cold without a keeper); 40 s after the 70B user arrived (the floor: 42.5 s of 70B load,
    then 4.9 s of 8B); while Ollama is down for a second restart (the floor); and 20 s after
    it is back (warm: the previous request loaded it).
    """
    rng = random.Random(f"tiny-{seed}")
    model = "llama3.1:8b"
    main = [0.5, 20.0, 400.0, 520.0, 640.0, 670.0, 700.0]
    requests = [Request(t + rng.uniform(0, 1), model, 1) for t in main]
    requests.append(Request(600.0, BIG_MODEL, 2, "other"))
    disruptions = [Disruption(450.0, "restart", 20.0), Disruption(660.0, "restart", 20.0)]
    return _trace("tiny", "Tiny smoke trace (12 min)", seed, 720.0, (model,), requests, disruptions)


TRACES: dict[str, Callable[[int], Trace]] = {"slack": slack_bot, "agent": agent_loop}
"""The traces of the full benchmark, by name."""
