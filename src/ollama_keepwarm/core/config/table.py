"""Reading one TOML table: typed getters whose errors name the key, and leftovers refused.

Every table of the configuration (``[ollama]``, ``[daemon]``, ``[http]``, each ``[[models]]``)
is read through :class:`Table`, so a wrong type, an empty string or a typo is refused in the same
words everywhere. The duration and host values sit here too, shared by every table and the CLI's
flags, with the limits a daemon setting must respect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ollama_keepwarm.core.config.errors import ConfigError
from ollama_keepwarm.core.durations import (
    INFINITE_NS,
    NS_PER_SECOND,
    DurationError,
    format_go_duration,
    parse_go_duration,
)
from ollama_keepwarm.core.hosts import parse_host
from ollama_keepwarm.core.options import kind_of as _kind

__all__ = [
    "FOREVER",
    "MIN_POLL_S",
    "MIN_TIMEOUT_S",
    "WEEK_S",
    "Table",
    "parse_duration_s",
    "read_host",
]

FOREVER = math.inf
WEEK_S = 7 * 86400.0
"""The longest interval or timeout a daemon setting takes: beyond it is a typo, and the
scheduler's arithmetic would overflow near Go's ~292 years."""
MIN_POLL_S = 0.05
"""The shortest poll: a shorter one would only hammer Ollama's ``/api/ps``."""
MIN_TIMEOUT_S = 0.1
"""The shortest request or load timeout: a shorter one fails every call, even to a local Ollama."""


def parse_duration_s(
    value: object, key: str, *, allow_forever: bool = False, maximum: float | None = None
) -> float:
    """Parse a duration in Ollama's syntax: Go strings (``"5m"``) or a number of seconds.

    With ``allow_forever`` (leases), ``-1``, ``"-1"`` and ``"forever"`` mean forever; any other
    negative is refused (Ollama would read it as forever too, which ``-30`` does not say).
    Elsewhere a duration must be positive, and at most ``maximum`` when one is given.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f'must be a duration such as "5m" or seconds, not {_kind(value)}')
    if isinstance(value, str):
        text = value.strip()
        if allow_forever and text.lower() in {"-1", "forever", "inf", "infinite"}:
            return FOREVER
        try:
            ns = parse_go_duration(text)
        except DurationError as exc:
            raise ConfigError(key, f"{exc} (use Go syntax: 300ms, 10s, 5m, 1h30m)") from None
        seconds = ns / NS_PER_SECOND
    else:
        seconds = float(value)
        if math.isnan(seconds) or math.isinf(seconds):
            hint = ' (write -1 or "forever" for a lease that never ends)' if allow_forever else ""
            raise ConfigError(key, f"must be a finite number of seconds{hint}")
        if allow_forever and seconds == -1:
            return FOREVER
        if seconds * NS_PER_SECOND >= INFINITE_NS:
            if not allow_forever and maximum is not None:
                limit = format_go_duration(round(maximum * NS_PER_SECOND))
                raise ConfigError(key, f"must be at most {limit}")
            raise ConfigError(key, "is too large for Ollama; use -1 for forever")
    if seconds < 0:
        if allow_forever:
            # Ollama reads any negative as forever (§1.1); -30 reads like 30 seconds, so only
            # the spelling that says forever is taken.
            raise ConfigError(
                key,
                f"{value!r} is negative, which Ollama reads as forever: write -1 (or "
                '"forever") if you mean forever, else a positive duration',
            )
        raise ConfigError(key, "must not be negative")
    if seconds == 0:
        reason = "0 would unload the model at once; use -1 for forever" if allow_forever else ""
        raise ConfigError(key, reason or "must be greater than 0")
    if maximum is not None and seconds > maximum:
        raise ConfigError(
            key, f"must be at most {format_go_duration(round(maximum * NS_PER_SECOND))}"
        )
    return seconds


class Table:
    """Reads one TOML table, tracking which keys were used so leftovers become errors."""

    def __init__(self, raw: object, path: str) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(path, f"must be a table, not {_kind(raw)}")
        self._raw: Mapping[str, Any] = raw
        self._path = path
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return name in self._raw

    def get(self, name: str) -> Any:
        self._seen.add(name)
        return self._raw.get(name)

    def duration(
        self,
        name: str,
        default: float,
        *,
        allow_forever: bool = False,
        maximum: float | None = None,
        minimum: float = 0.0,
    ) -> float:
        if not self.has(name):
            self._seen.add(name)
            return default
        seconds = parse_duration_s(
            self.get(name), self.key(name), allow_forever=allow_forever, maximum=maximum
        )
        if seconds < minimum:
            raise ConfigError(
                self.key(name), f"must be at least {format_go_duration(round(minimum * 1e9))}"
            )
        return seconds

    def string(self, name: str, default: str) -> str:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"must be a non-empty string, not {_kind(value)}")
        if not value.strip():
            raise ConfigError(
                self.key(name), "must not be empty (leave the key out for the default)"
            )
        if "\x00" in value:
            raise ConfigError(self.key(name), "contains a NUL character")
        return value.strip()

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), f"must be an integer, not {_kind(value)}")
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be between {low} and {high}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"must be true or false, not {_kind(value)}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._raw) - self._seen)
        if unknown:
            allowed = ", ".join(sorted(self._seen))
            raise ConfigError(self.key(unknown[0]), f"unknown key (allowed here: {allowed})")


def read_host(table: Table, name: str, default: str) -> str:
    """A host URL as Ollama's clients parse it; ``default`` when the key is left out."""
    raw = table.get(name)
    if raw is None:
        return default
    if not isinstance(raw, str):
        raise ConfigError(table.key(name), f"must be a string, not {_kind(raw)}")
    if not raw.strip():
        raise ConfigError(table.key(name), "must not be empty (leave the key out for the default)")
    try:
        return parse_host(raw)
    except ValueError as exc:
        raise ConfigError(table.key(name), str(exc)) from None
