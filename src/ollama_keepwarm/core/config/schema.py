"""What a configuration is: the frozen dataclasses the daemon reads, and their defaults.

Kept apart from the parsing so a reader of the daemon sees every setting and its default in one
short file, and so the table readers (``service.py``, ``model.py``) can build them without
importing each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ollama_keepwarm.core import windows
from ollama_keepwarm.core.durations import NS_PER_SECOND, format_go_duration
from ollama_keepwarm.core.hosts import DEFAULT_HOST
from ollama_keepwarm.core.learned import DEFAULT_THRESHOLD
from ollama_keepwarm.core.names import match_key
from ollama_keepwarm.core.prime import Prime

__all__ = [
    "DEFAULT_KEEP_ALIVE_S",
    "Config",
    "DaemonConfig",
    "HttpConfig",
    "ModelConfig",
    "OllamaConfig",
    "keep_alive_wire",
]


@dataclass(frozen=True, slots=True)
class OllamaConfig:
    """Where Ollama is and how patient to be with it."""

    host: str = DEFAULT_HOST
    load_timeout_s: float = 600.0
    request_timeout_s: float = 30.0
    cgroup: str = "auto"  # the crash watch: "auto", a unit name, a cgroup directory, or "" (off)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """How the keeper watches and when it acts."""

    poll_interval_s: float = 5.0
    refresh_before_s: float = 120.0
    health_interval_s: float = 300.0
    ready_timeout_s: float = 600.0
    down_poll_max_s: float = 2.0
    resume_threshold_s: float = 5.0
    conflict_retry_s: float = 1800.0
    on_gpu_lost: tuple[str, ...] = ()
    on_runner_wedged: tuple[str, ...] = ()
    control_socket: str = ""  # "" = $RUNTIME_DIRECTORY/control.sock, or a per-user default
    state_dir: str = ""  # "" = $STATE_DIRECTORY, or a per-user default
    timezone: str = ""  # the zone of every model's `when`; "" = the system's


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The read-only local endpoint: health, readiness, status, metrics."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 11435


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One model to keep warm."""

    name: str
    host: str = DEFAULT_HOST
    keep_alive_s: float = 3600.0  # DEFAULT_KEEP_ALIVE_S
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    priority: int = 0
    verify: bool = False
    prime: Prime | None = None  # the clients' fixed prefix, sent after every load
    # Calendar windows (core/windows.py): None = always kept; () = never.
    when: tuple[windows.Interval, ...] | None = None
    when_text: tuple[str, ...] = ()
    after_window: str = "expire"  # or "unload"
    lead_s: float | None = None  # None = derived from the measured load time
    # Learned hours (core/learned.py): `when = "learned"`; `when` itself stays None.
    learned: bool = False
    learn_threshold: float = DEFAULT_THRESHOLD

    @property
    def key(self) -> str:
        """The name as ``/api/ps`` rows are matched against it."""
        return match_key(self.name)

    @property
    def keep_alive_wire(self) -> int | str:
        """The ``keep_alive`` value to send for this model."""
        return keep_alive_wire(self.keep_alive_s)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; swapped as one object on reload."""

    ollama: OllamaConfig = OllamaConfig()
    daemon: DaemonConfig = DaemonConfig()
    http: HttpConfig = HttpConfig()
    models: tuple[ModelConfig, ...] = ()
    source: Path | None = None

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every Ollama host a model is kept on, in first-seen order."""
        return tuple(dict.fromkeys(model.host for model in self.models))


DEFAULT_KEEP_ALIVE_S = 3600.0
"""An hour: longer than any client default (5m), so Ollama evicts client-loaded models before
kept ones (it evicts the shortest keep-alive setting first, §4.5), yet a lease that lapses by
itself within the hour when the keeper is stopped."""


def keep_alive_wire(seconds: float) -> int | str:
    """Return the JSON ``keep_alive`` for a lease: the number -1 for forever, else a Go duration.

    Never the string ``"-1"``: Ollama answers it with 400 ``missing unit`` (reference §1.1).
    """
    if math.isinf(seconds):
        return -1
    return format_go_duration(round(seconds * NS_PER_SECOND))
