"""The planner's vocabulary: what it remembers per model, what it decides, what it reports.

Plain frozen data and the few predicates every family of rules shares (is a model held, paused,
outside its window; which ``/api/ps`` row is whose).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ollama_keepwarm.core.config import ModelConfig
from ollama_keepwarm.core.names import match_key
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel
from ollama_keepwarm.core.windows import WindowVerdict

MAX_EXPONENT = 20
"""Back-off exponents stop growing here: the caps bind long before, and floats never overflow."""


RESUMED = "resumed from suspend"
"""The reason given to refreshes after a resume (the keeper verifies those when asked to)."""

MISMATCH = "options mismatch"
"""The reason (prefix) of a model left alone because a client's runner has other options."""

CAPACITY = "capacity conflict"
"""The reason (prefix) of a model held because the kept set does not fit."""

RUNNER_CHECK = "a runner process ended"
"""The reason of a ping asked for by the crash watch (``daemon/crashwatch.py``)."""

OUTSIDE = "outside its window"
"""The reason (prefix) of a model held because none of its calendar windows is open."""


class Action(StrEnum):
    """What the keeper should do about one model now."""

    WARM = "warm"  # not loaded: load it
    REFRESH = "refresh"  # loaded: renew its lease or ping it (cheap)
    UNLOAD = "unload"  # held for capacity but resident: give its room to the higher ones
    WAIT = "wait"  # nothing to do before `at` (or before an in-flight call ends)
    HOLD = "hold"  # deliberately left alone: paused, a capacity conflict, an options mismatch


@dataclass(frozen=True, slots=True)
class ModelState:
    """What the keeper remembers about one model between looks at ``/api/ps``."""

    # The call of ours in flight, if any.
    in_flight_since: datetime | None = None
    in_flight_was_listed: bool = False
    load_window: tuple[datetime, datetime | None] | None = None
    # What our calls taught us.
    last_warm_ok_at: datetime | None = None
    last_warm_duration_s: float | None = None
    cold_load_s: float | None = None
    renewed_expiry: datetime | None = None  # expires_at listed when our last call on it started
    lease_ours: bool = False  # the runner's keep-alive duration is ours (set by our last call)
    in_flight_renews: bool = False  # the call in flight carries our keep_alive
    own_context: int | None = None  # context_length our own warm gives (same options, server)
    warms: int = 0
    reloads: int = 0
    loaded_since_look: bool = False  # our load ended after the last snapshot was taken
    # Errors.
    failures: int = 0
    timeouts: int = 0
    backoff_until: datetime | None = None
    last_error: str | None = None
    # What ps showed.
    last_row: RunningModel | None = None
    lease_seen: tuple[datetime, datetime] | None = None  # (expires_at, when first listed so)
    # Losses.
    rewarm_not_before: datetime | None = None
    vanishes: int = 0
    last_vanished_at: datetime | None = None
    vanish_reason: str | None = None
    strikes: tuple[datetime, ...] = ()  # when our own loads evicted this model
    # A capacity hold: no timer, only evidence of room ends it.
    held_since: datetime | None = None
    held_reason: str | None = None
    held_room: int = 0  # the most other models listed beside the kept set since the hold
    held_vram: int = 0  # the most VRAM those other models took since the hold
    # The room it needs (core/plan/capacity.py): VRAM, from ps rows of its runner with our options.
    vram_bytes: int = 0  # what its runner took when last listed (0: unknown, or on the CPU)
    vram_beside: int = 0  # the most VRAM other runners took while it was listed: proven room
    release_sent: bool = False
    # A full room (core/plan/capacity.py, ``room_full``): how many other runners leave no room
    # for a load of it (0: unknown). Set when a load evicted it (the runners listed then) and
    # when a hold is tried again (its ``held_room``); forgotten once it is listed.
    full_beside: int = 0
    retried_hold: str | None = None  # the hold's reason while a retry's load is to come
    # The operator.
    paused_until: datetime | None = None
    unload_wanted: bool = False  # paused with --unload: unload it whenever it is listed
    refresh_requested_at: datetime | None = None
    # The calendar (core/windows.py): None = no `when`, always kept.
    window: WindowVerdict | None = None
    # Options mismatch.
    foreign_context: int | None = None
    foreign: bool = False  # a runner with other load options is resident: leave it alone
    mismatch_reported: bool = False
    reload_streak: int = 0
    expect_reload: bool = False  # a runner may have died: a reloading refresh is a repair
    # A process of Ollama's ended (core/crash.py): ping the listed model, without keep_alive.
    check_requested_at: datetime | None = None
    # A runner's exit (core/plan/processes.py): monotonic time, settled by the next look.
    runner_exit_at: float | None = None
    runner_exit_named: bool = False  # the exit named this model's blob (processes visible)
    wedged_since: datetime | None = None  # a refresh hung while /api/version answered


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict for one model: an action, when, and why (shown in logs, status, STATUS=).

    ``renew`` says whether a REFRESH sends our ``keep_alive`` (a lease renewal) or leaves it
    out (a health ping that must not revive a runner Ollama is draining).
    """

    model: ModelConfig
    action: Action
    reason: str
    at: datetime | None = None
    row: RunningModel | None = None
    renew: bool = True
    window: WindowVerdict | None = None

    @property
    def lease_end(self) -> datetime | None:
        """When the lease of the row this was decided on ends (None: not listed); a failed call
        on it is retried before then (``errors.retry_delay_s``)."""
        return self.row.expires_at if self.row is not None else None


@dataclass(frozen=True, slots=True)
class Event:
    """A fact worth logging and counting; ``name`` is a stable snake_case event name."""

    name: str
    model: str
    fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observation:
    """The outcome of comparing two snapshots: updated states and what happened."""

    states: dict[str, ModelState]
    events: list[Event]


def ranked(models: Iterable[ModelConfig]) -> list[ModelConfig]:
    """Order models by importance: higher ``priority`` first, then config order."""
    return sorted(models, key=lambda m: -m.priority)  # sorted() is stable: config order breaks ties


def match_rows(
    models: Sequence[ModelConfig],
    snapshot: PsSnapshot | None,
    blobs: Mapping[str, str] | None = None,
) -> dict[str, RunningModel | None]:
    """Find each model's ``/api/ps`` row by normalised name, else by shared weights blob.

    Ollama keys runners by weights blob and lists them under the name that loaded them (§7.1),
    so ``llama3.2`` is warm when ``llama3.2:3b`` is listed. ``blobs`` maps match keys (of both
    configured names and listed names) to blob digests, as learnt from ``/api/show``.
    """
    blobs = blobs or {}
    rows = snapshot.models if snapshot else ()
    by_key: dict[str, RunningModel] = {}
    for listed in rows:
        by_key.setdefault(match_key(listed.name), listed)
    found: dict[str, RunningModel | None] = {}
    for model in models:
        row = by_key.get(model.key)
        blob = blobs.get(model.key)
        if row is None and blob is not None:
            row = next((r for k, r in by_key.items() if blobs.get(k) == blob), None)
        found[model.key] = row
    return found


def is_held(st: ModelState) -> bool:
    return st.held_since is not None


def is_paused(st: ModelState, now: datetime) -> bool:
    return st.paused_until is not None and now < st.paused_until


def off_window(st: ModelState) -> bool:
    return st.window is not None and not st.window.kept
