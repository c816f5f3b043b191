"""What the fake remembers for the tests that drive it: runners, loads, evictions, requests.

These are plain values so tests can assert on them without reaching into the scheduler.
Times are aware UTC datetimes of the real wall clock.

**Who caused what.** Each load, eviction, unload and wait also says which caller caused it: the
``User-Agent`` of the request (``caller``), and :func:`who` tells the keeper from a client. The
client-harm oracle (``bench/chaos.py``) judges the keeper on these records alone, so they answer
the questions it asks: whose load evicted whom, who set the ``keep_alive`` that expired, who
revived or kept busy a runner another load was waiting for (:class:`Touch`), and how long each
queued request waited and on which runners (:class:`WaitRecord`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "KEEPER_AGENT_PREFIX",
    "Caller",
    "EvictionRecord",
    "LoadReason",
    "LoadRecord",
    "RecordedRequest",
    "Records",
    "RunnerInfo",
    "Touch",
    "UnloadCause",
    "UnloadRecord",
    "WaitRecord",
    "records_json",
    "wall_datetime",
    "who",
]

KEEPER_AGENT_PREFIX = "ollama-keepwarm/"
"""The ``User-Agent`` the keeper sends (``ollama.USER_AGENT``); anything else is a client's,
aiohttp's default included (the tests' own clients send it)."""


Caller = Literal["keeper", "client"]
UnloadCause = Literal["expired", "stopped", "evicted", "oom", "reload", "crashed", "restart"]


def who(user_agent: str) -> Caller:
    """Tell the keeper's requests from a client's by their ``User-Agent``."""
    return "keeper" if user_agent.startswith(KEEPER_AGENT_PREFIX) else "client"


LoadReason = Literal["cold", "reload", "repair"]


def wall_datetime(unix_ns: int) -> datetime:
    """Turn wall-clock nanoseconds into an aware UTC datetime (microsecond precision)."""
    return datetime.fromtimestamp(unix_ns / 1e9, tz=UTC)


@dataclass(frozen=True)
class RunnerInfo:
    """A snapshot of one loaded runner, as the fake sees it (more than ``/api/ps`` shows)."""

    name: str
    options: dict[str, Any]
    keep_alive_ns: int
    expires_at: datetime
    busy: int
    crashed: bool
    size_vram: int
    size: int
    digest: str
    context_length: int
    context_shift: bool = True


@dataclass
class LoadRecord:
    """One load attempt. ``finished`` is ``None`` while it runs; ``ok`` tells how it ended.

    ``changed`` says what made a reload, e.g. ``num_ctx 2048 -> 1024`` (empty for cold loads).
    """

    model: str
    reason: LoadReason
    requested_by: str
    started: datetime
    finished: datetime | None = None
    ok: bool = False
    error: str = ""
    changed: str = ""
    caller: str = ""
    """The ``User-Agent`` of the request that asked for the load."""
    replaced_by: str = ""
    """For a reload, who had loaded the runner it replaced."""


@dataclass(frozen=True)
class EvictionRecord:
    """A loaded runner chosen to make room (count cap, memory or OOM) for another model."""

    victim: str
    for_model: str
    time: datetime
    reason: Literal["count", "memory", "oom"]
    caller: str = ""
    """The ``User-Agent`` of the request whose load needed the room."""


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request to an Ollama route (``/_fake`` control calls are not recorded)."""

    time: datetime
    method: str
    path: str
    body: Any
    status: int
    user_agent: str = ""
    prompt_uncached: int | None = None
    """Prompt tokens past the slot's cached prefix (generate and chat): a cache hit, told
    without measuring time."""
    received: datetime | None = None
    """When it arrived (``time`` is when it was answered, as Gin logs it)."""


@dataclass(frozen=True)
class Touch:
    """A request that reached a runner Ollama was draining (evicting, reloading, OOM).

    ``revived``: it carried a positive ``keep_alive``, so the runner gets a timer instead of
    its unload (§4.5); ``busy``: it only held the runner, delaying the unload until it ended.
    """

    model: str
    kind: Literal["revived", "busy"]
    caller: str
    time: datetime
    alone: bool = True
    """No other request held the runner when this one began: a ``busy`` touch that overlapped
    others (a ping during a client's long generation) delayed nothing they did not."""


@dataclass(frozen=True)
class UnloadRecord:
    """A runner left: why, and whose request caused it.

    ``caller`` is who set the ``keep_alive`` that expired (``expired``), sent the unload
    command (``stopped``), or asked for the load that needed the room (``evicted``, ``oom``,
    ``reload``); empty for ``restart``.
    """

    model: str
    time: datetime
    cause: UnloadCause
    caller: str
    loaded_by: str


@dataclass(frozen=True)
class WaitRecord:
    """A request that could not use a loaded runner at once, and what it waited on.

    ``touches`` are the requests that reached the runners it waited for while it waited.
    """

    model: str
    caller: str
    path: str
    started: datetime
    ended: datetime
    loaded: bool
    touches: tuple[Touch, ...] = ()


@dataclass
class Records:
    """Everything of who-caused-what the fake keeps across restarts (lists only grow)."""

    unloads: list[UnloadRecord] = field(default_factory=list)
    waits: list[WaitRecord] = field(default_factory=list)
    touches: list[Touch] = field(default_factory=list)


def records_json(
    loads: list[LoadRecord], evictions: list[EvictionRecord], records: Records
) -> dict[str, Any]:
    """Every record of who caused what as JSON-ready values (``GET /_fake/records``)."""

    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return {
        "loads": [plain(asdict(r)) for r in loads],
        "evictions": [plain(asdict(e)) for e in evictions],
        "unloads": [plain(asdict(u)) for u in records.unloads],
        "waits": [plain(asdict(w)) for w in records.waits],
        "touches": [plain(asdict(t)) for t in records.touches],
    }
