"""Random schedules for the client-harm oracle, drawn from a seed (``python -m bench.chaos``).

A schedule is the box (Ollama version, ``OLLAMA_MAX_LOADED_MODELS``, VRAM), the kept set (the
keeper's config) and a flat, time-ordered list of events: client requests, ``ollama stop``,
faults and operator actions. Flat so that delta debugging can drop any event on its own: a
shrunk schedule is the seed plus the indices of the events it kept, and replays exactly.

Times are real seconds from the start; the fake runs :data:`SCALE` times faster than that
(a kept ``keep_alive = "10m"`` is 10 real seconds), while the keeper's own cadence is real
time (poll every :data:`POLL_S`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "FAULT_KINDS",
    "KEPT_POOL",
    "LOAD_S_PER_GB",
    "OPERATOR_KINDS",
    "POLL_S",
    "SCALE",
    "WINDOW_KINDS",
    "Event",
    "Kept",
    "Schedule",
    "generate",
]

SCALE = 60.0
"""Fake time runs this much faster than real time: one real second is a fake minute."""
LOAD_S_PER_GB = 0.3
"""Real seconds a load takes per GB of weights: the 8B loads in ~1.5 s, ``medium`` in ~0.4 s,
slow enough that a re-warm held back by 1.5 x a load (issue 21 item 3) stands out of a poll."""
TOKEN_S = 0.002
"""Real seconds per generated token: a short answer (20 tokens) is 40 ms, a long one 1.2 s."""
POLL_S = 0.2
"""The keeper's ``poll_interval`` in the schedules (real seconds)."""
TAIL_S = 4.0
"""Quiet time after the last event, so the keeper can settle before the run ends."""

KEPT_POOL = ("llama3.1:8b", "qwen2.5-coder:7b", "llama3.2:3b", "medium", "tiny")
FAULT_KINDS = (
    "restart_fast",
    "restart_slow",
    "crash",
    "runtime_oom",
    "suspend",
    "step_back",
    "step_forward",
    "hang_ps",
    "slow_generate",
    "garble_ps",
    "garble_generate",
    "error_generate",
    "slow_show",
    "fail_load",
)
OPERATOR_KINDS = ("reload_good", "reload_bad", "pause", "resume", "refresh")
WINDOW_KINDS = ("window_open", "window_close")
"""A kept model's ``when`` window opens (its warm-up starts) or closes ``at`` the event: one
per schedule at most, as the keeper's wall clock runs at real pace (a minute between any
two boundaries); drawn from a stream of its own, so the other events of a seed stay as
they were."""
WINDOW_SHARE = 0.3
VISIBLE = ({"num_ctx": 1024}, {"num_ctx": 8192})
INVISIBLE = ({"num_thread": 1}, {"num_batch": 256}, {"use_mmap": False})


@dataclass(frozen=True)
class Kept:
    """One model of the keeper's config."""

    name: str
    keep_alive: str
    priority: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """Something that happens ``at`` real seconds into the run; ``args`` depend on ``kind``."""

    at: float
    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One short line for reports and shrunk schedules."""
        args = " ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.at:6.2f}s {self.kind} {args}".rstrip()


@dataclass(frozen=True)
class Schedule:
    """Everything one run needs; ``kept_events`` is None for all events, else the indices kept."""

    seed: int
    version: str
    max_loaded: int
    memory_gb: int
    kept: tuple[Kept, ...]
    events: tuple[Event, ...]
    duration_s: float
    kept_events: tuple[int, ...] | None = None

    def only(self, indices: Sequence[int]) -> Schedule:
        """The same schedule with only the events at ``indices`` (of the full list)."""
        return replace(self, kept_events=tuple(sorted(indices)))

    @property
    def active(self) -> list[tuple[int, Event]]:
        """The events that run, with their index in the full list."""
        keep = set(range(len(self.events))) if self.kept_events is None else set(self.kept_events)
        return [(i, e) for i, e in enumerate(self.events) if i in keep]

    @property
    def run_s(self) -> float:
        """How long the run lasts: the last event that runs, plus the quiet tail."""
        last = max((e.at for _, e in self.active), default=0.0)
        return max(last, 1.0) + TAIL_S

    def replay(self) -> str:
        """The one-line command that runs exactly this schedule again."""
        command = f"python -m bench.chaos --seed {self.seed} --version {self.version}"
        command += f" --length {self.duration_s:g}"
        if self.kept_events is not None:
            command += " --events " + (",".join(map(str, self.kept_events)) or "none")
        return command


def _client_requests(
    rng: random.Random, client: int, model: str, duration_s: float, kept: Kept | None
) -> list[Event]:
    """A client's requests: its model, its options, its keep_alive, a pace and a length mix."""
    choice = rng.choice(("same", "same", "visible", "invisible", "invisible"))
    options: dict[str, Any] = dict(kept.options) if kept is not None else {}
    if choice == "visible":
        options.update(rng.choice(VISIBLE))
    elif choice == "invisible":
        options.update(rng.choice(INVISIBLE))
    keep_alive = rng.choice((None, None, "1m", "30m", 0, -1))
    gap = rng.choice((0.8, 1.5, 3.0))
    long_share = rng.choice((0.0, 0.1, 0.3))
    events = []
    at = rng.uniform(0.5, 3.0)
    while at < duration_s:
        tokens = 600 if rng.random() < long_share else 20
        args: dict[str, Any] = {"client": client, "model": model, "tokens": tokens}
        if options:
            args["options"] = options
        if keep_alive is not None:
            args["keep_alive"] = keep_alive
        events.append(Event(round(at, 2), "request", args))
        at += rng.expovariate(1 / gap)
    return events


def _fault(rng: random.Random, kind: str, at: float, kept: Sequence[Kept]) -> Event:
    args: dict[str, Any] = {}
    if kind == "restart_fast":
        args = {"down_s": 0.2}
    elif kind == "restart_slow":
        args = {"down_s": 1.5, "hang_s": 0.5}
    elif kind == "crash":
        args = {"model": rng.choice(kept).name}
    elif kind == "suspend":
        args = {"seconds": rng.choice((1.0, 2.0))}
    elif kind == "step_back":
        args = {"seconds": -rng.choice((120, 3600))}
    elif kind == "step_forward":
        args = {"seconds": rng.choice((120, 3600))}
    elif kind in ("hang_ps", "slow_generate", "slow_show"):
        args = {"for_s": rng.choice((0.5, 1.5))}
    elif kind in ("garble_ps", "garble_generate", "error_generate", "fail_load"):
        args = {"times": rng.choice((1, 2))}
    return Event(round(at, 2), kind, args)


def _operator(rng: random.Random, kind: str, at: float, kept: Sequence[Kept]) -> list[Event]:
    model = rng.choice(kept).name
    if kind == "pause":
        pause = Event(round(at, 2), "pause", {"model": model, "unload": rng.random() < 0.5})
        back = round(at + rng.uniform(0.5, 3.0), 2)
        return [pause, Event(back, "resume", {"model": model})]
    if kind == "resume":
        return [Event(round(at, 2), "resume", {"model": model})]
    if kind == "refresh":
        return [Event(round(at, 2), "refresh", {"model": model})]
    return [Event(round(at, 2), kind)]


def _window(rng: random.Random, duration_s: float, kept: Sequence[Kept]) -> list[Event]:
    """Maybe one window boundary of one kept model, at least 2 s from either end of the run."""
    if rng.random() >= WINDOW_SHARE:
        return []
    kind = rng.choice(WINDOW_KINDS)
    args: dict[str, Any] = {"model": rng.choice(kept).name}
    if kind == "window_close":
        args["after"] = rng.choice(("unload", "expire"))
    return [Event(round(rng.uniform(2.0, max(2.0, duration_s - 2.0)), 2), kind, args)]


def generate(seed: int, version: str, duration_s: float = 12.0) -> Schedule:
    """Draw one schedule from ``seed`` for the fake imitating ``version``."""
    rng = random.Random(f"{seed}/{version}/{duration_s}")
    max_loaded = rng.choice((1, 2, 3, 3))
    memory_gb = rng.choice((8, 16, 16, 48))
    names = rng.sample(KEPT_POOL, rng.choice((1, 2, 2, 3)))
    kept = tuple(
        Kept(
            name,
            rng.choice(("10m", "30m", "1h")),
            rng.randint(0, 10),
            {"num_ctx": 4096} if rng.random() < 0.2 else {},
        )
        for name in names
    )
    others = [m for m in KEPT_POOL if m not in names]
    events: list[Event] = []
    for client in range(rng.randint(1, 3)):
        unkept = others and rng.random() < 0.4
        if unkept:
            model, config = rng.choice(others), None
        else:
            config = rng.choice(kept)
            model = config.name
        events += _client_requests(rng, client, model, duration_s, config)
    per = max(1, round(duration_s / 60))  # a longer run has proportionally more of them
    for _ in range(rng.choice((0, 1, 1, 2)) * per):
        model = rng.choice([*names, *others])
        events.append(Event(round(rng.uniform(1.0, duration_s), 2), "stop", {"model": model}))
    for _ in range(rng.choice((0, 1, 2, 3)) * per):
        kind = rng.choice(FAULT_KINDS)
        at = 0.0 if kind == "slow_show" and rng.random() < 0.5 else rng.uniform(1.0, duration_s)
        events.append(_fault(rng, kind, at, kept))
    for _ in range(rng.choice((0, 0, 1, 2)) * per):
        kind = rng.choice(OPERATOR_KINDS)
        events += _operator(rng, kind, rng.uniform(1.0, duration_s), kept)
    events += _window(random.Random(f"{seed}/{version}/{duration_s}/window"), duration_s, kept)
    events.sort(key=lambda e: e.at)
    return Schedule(seed, version, max_loaded, memory_gb, kept, tuple(events), duration_s)
