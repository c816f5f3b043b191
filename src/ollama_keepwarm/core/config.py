"""config.toml to frozen dataclasses, with errors that name the key and the rule.

``parse_config`` is pure (a mapping in, a :class:`Config` out) so every rule is a table test;
``load_config`` only adds ``tomllib``. Unknown keys are errors: a typo must not silently fall back
to a default on a box that runs for years.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ollama_keepwarm.core import envconfig, windows
from ollama_keepwarm.core.durations import (
    INFINITE_NS,
    NS_PER_SECOND,
    DurationError,
    format_go_duration,
    parse_go_duration,
)
from ollama_keepwarm.core.hosts import DEFAULT_HOST, HOSTNAME, parse_host
from ollama_keepwarm.core.learned import DEFAULT_THRESHOLD, parse_threshold
from ollama_keepwarm.core.names import is_cloud_model, match_key, name_problem
from ollama_keepwarm.core.options import kind_of as _kind
from ollama_keepwarm.core.options import option_problem
from ollama_keepwarm.core.prime import CHAT, GENERATE, Message, Prime

__all__ = [
    "DEFAULT_HOST",
    "EX_CONFIG",
    "SEARCH_PATH",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "HttpConfig",
    "ModelConfig",
    "OllamaConfig",
    "find_config",
    "keep_alive_wire",
    "load_config",
    "parse_config",
    "parse_duration_s",
    "parse_host",
]

EX_CONFIG = 78
"""sysexits.h: configuration error. The unit sets RestartPreventExitStatus=78."""

SEARCH_PATH = (Path("config.toml"), Path("/etc/ollama-keepwarm/config.toml"))
FOREVER = math.inf
WEEK_S = 7 * 86400.0
"""The longest interval or timeout a daemon setting takes: beyond it is a typo, and the
scheduler's arithmetic would overflow near Go's ~292 years."""
MIN_POLL_S = 0.05
"""The shortest poll: a shorter one would only hammer Ollama's ``/api/ps``."""
MIN_TIMEOUT_S = 0.1
"""The shortest request or load timeout: a shorter one fails every call, even to a local Ollama."""


class ConfigError(Exception):
    """A configuration that cannot run; ``str()`` names the key path and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


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


_OLLAMA_DEFAULTS = OllamaConfig()
_HTTP_DEFAULTS = HttpConfig()
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


class _Table:
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


def _host(table: _Table, name: str, default: str) -> str:
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


def _parse_ollama(raw: object, environ: Mapping[str, str]) -> OllamaConfig:
    table = _Table(raw, "ollama")
    default_host = DEFAULT_HOST
    if not table.has("host"):  # $OLLAMA_HOST only matters (and is only checked) when used
        try:
            default_host = parse_host(environ.get("OLLAMA_HOST"))
        except ValueError as exc:
            raise ConfigError("OLLAMA_HOST", str(exc)) from None
    config = OllamaConfig(
        host=_host(table, "host", default_host),
        load_timeout_s=table.duration(
            "load_timeout", _OLLAMA_DEFAULTS.load_timeout_s, maximum=WEEK_S, minimum=MIN_TIMEOUT_S
        ),
        request_timeout_s=table.duration(
            "request_timeout",
            _OLLAMA_DEFAULTS.request_timeout_s,
            maximum=WEEK_S,
            minimum=MIN_TIMEOUT_S,
        ),
        cgroup=_cgroup(table),
    )
    table.finish()
    return config


def _cgroup(table: _Table) -> str:
    """``auto``, ``""``, a systemd unit name (``ollama-rocm.service``) or an absolute directory."""
    raw = table.get("cgroup")
    if raw is None:
        return _OLLAMA_DEFAULTS.cgroup
    if not isinstance(raw, str):
        raise ConfigError(table.key("cgroup"), f"must be a string, not {_kind(raw)}")
    value = raw.strip()
    if value in {"", "auto"} or value.startswith("/") or value.endswith(".service"):
        return value
    raise ConfigError(
        table.key("cgroup"),
        f'must be "auto", "" (off), a unit name ending in .service or an absolute path to a '
        f"cgroup directory, not {value!r}",
    )


def _command(table: _Table, name: str) -> tuple[str, ...]:
    hook = table.get(name)
    if hook is None:
        return ()
    if isinstance(hook, list) and hook and all(isinstance(part, str) and part for part in hook):
        return tuple(hook)
    raise ConfigError(
        table.key(name),
        'must be a command as a non-empty array of strings, e.g. ["systemctl", '
        '"restart", "ollama"]',
    )


def _parse_daemon(raw: object) -> DaemonConfig:
    table = _Table(raw, "daemon")
    defaults = DaemonConfig()
    on_gpu_lost = _command(table, "on_gpu_lost")
    config = DaemonConfig(
        poll_interval_s=table.duration(
            "poll_interval", defaults.poll_interval_s, maximum=WEEK_S, minimum=MIN_POLL_S
        ),
        refresh_before_s=table.duration(
            "refresh_before", defaults.refresh_before_s, maximum=WEEK_S
        ),
        health_interval_s=table.duration(
            "health_interval", defaults.health_interval_s, maximum=WEEK_S
        ),
        ready_timeout_s=table.duration("ready_timeout", defaults.ready_timeout_s, maximum=WEEK_S),
        down_poll_max_s=table.duration(
            "down_poll_max", defaults.down_poll_max_s, maximum=WEEK_S, minimum=MIN_POLL_S
        ),
        resume_threshold_s=table.duration(
            "resume_threshold", defaults.resume_threshold_s, maximum=WEEK_S
        ),
        conflict_retry_s=table.duration(
            "conflict_retry", defaults.conflict_retry_s, maximum=WEEK_S
        ),
        on_gpu_lost=on_gpu_lost,
        on_runner_wedged=_command(table, "on_runner_wedged"),
        control_socket=_socket_path(table),
        state_dir=table.string("state_dir", ""),
        timezone=_timezone(table),
    )
    table.finish()
    return config


SOCKET_PATH_MAX = 107
"""sun_path holds 108 bytes with the terminating NUL: a longer path cannot be bound."""


def _socket_path(table: _Table) -> str:
    path = table.string("control_socket", "")
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > SOCKET_PATH_MAX:
        raise ConfigError(
            table.key("control_socket"),
            f"is {size} bytes long; a Unix socket path has at most {SOCKET_PATH_MAX}",
        )
    return path


def _timezone(table: _Table) -> str:
    name = table.string("timezone", "")
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                table.key("timezone"), f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)"
            ) from None
    return name


_AFTER_WINDOW = ("expire", "unload")


def _learned(table: _Table) -> tuple[bool, float]:
    """`when = "learned"` (alone) and its `learn_threshold`: learned hours, core/learned.py."""
    raw = table.get("when")
    on = raw in ("learned", ["learned"])
    if isinstance(raw, list) and "learned" in raw and not on:
        raise ConfigError(table.key("when"), '"learned" cannot be mixed with windows')
    value = table.get("learn_threshold")
    if value is None:
        return on, DEFAULT_THRESHOLD
    if not on:
        raise ConfigError(table.key("learn_threshold"), 'has no effect without when = "learned"')
    try:
        return on, parse_threshold(value)
    except ValueError as exc:
        raise ConfigError(table.key("learn_threshold"), str(exc)) from None


def _when(table: _Table) -> tuple[tuple[windows.Interval, ...] | None, tuple[str, ...]]:
    raw = table.get("when")
    if raw is None or raw in ("learned", ["learned"]):
        return None, ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ConfigError(
            table.key("when"), 'must be a list of windows such as ["mon-fri 08:00-19:00"]'
        )
    for i, text in enumerate(raw):
        try:
            windows.parse_window(text)
        except windows.WindowError as exc:
            raise ConfigError(f"{table.key('when')}[{i}]", f"{text!r}: {exc}") from None
    return windows.parse_windows(raw), tuple(raw)


def _listen_host(table: _Table) -> str:
    """``[http] host``: an address or name to bind, not a URL (a typo fails at bind otherwise)."""
    host = table.string("host", _HTTP_DEFAULTS.host)
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if not HOSTNAME.fullmatch(bare):
            raise ConfigError(
                table.key("host"), f"{host!r} is not an address to listen on (e.g. 127.0.0.1)"
            ) from None
    return bare


def _parse_http(raw: object) -> HttpConfig:
    table = _Table(raw, "http")
    config = HttpConfig(
        enabled=table.boolean("enabled", _HTTP_DEFAULTS.enabled),
        host=_listen_host(table),
        port=table.integer("port", _HTTP_DEFAULTS.port, low=0, high=65535),
    )
    table.finish()
    return config


def _parse_options(raw: object, key: str) -> Mapping[str, Any]:
    """``options``: only the load-time options Ollama compares (a typo would be sent and lost)."""
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping):
        raise ConfigError(key, f"must be a table such as {{ num_ctx = 8192 }}, not {_kind(raw)}")
    for name, value in raw.items():
        problem = option_problem(str(name), value)
        if problem:
            raise ConfigError(f"{key}.{name}", problem)
    return MappingProxyType(dict(raw))


ReadText = Callable[[str], str]
"""Reads a ``prime_file`` (a path as written in the config); raises OSError."""

_ENDPOINTS = {"chat": CHAT, "generate": GENERATE, CHAT: CHAT, GENERATE: GENERATE}
_ROLES = ("system", "user", "assistant", "tool")


def _parse_messages(raw: list[Any], key: str) -> tuple[Message, ...]:
    messages = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"role", "content"}:
            raise ConfigError(where, 'must be a table { role = "system", content = "..." }')
        role, content = item.get("role"), item.get("content")
        if role not in _ROLES:
            raise ConfigError(f"{where}.role", f"must be one of {', '.join(_ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ConfigError(f"{where}.content", "must be a non-empty string")
        messages.append(Message(str(role), content))
    if not messages:
        raise ConfigError(key, "must list at least one message")
    return tuple(messages)


def _parse_prime(table: _Table, read_text: ReadText | None) -> Prime | None:
    """``prime`` (a system prompt, or chat messages) or ``prime_file``, and how it is sent."""
    raw, file = table.get("prime"), table.get("prime_file")
    endpoint_raw = table.get("prime_endpoint")
    raw_prompt = table.boolean("prime_raw", False)
    if raw is None and file is None:
        if endpoint_raw is not None or raw_prompt:
            raise ConfigError(table.key("prime_endpoint"), "needs prime or prime_file")
        return None
    if raw is not None and file is not None:
        raise ConfigError(table.key("prime_file"), "use either prime or prime_file, not both")
    endpoint = CHAT if endpoint_raw is None else _ENDPOINTS.get(str(endpoint_raw))
    if endpoint is None or (endpoint_raw is not None and not isinstance(endpoint_raw, str)):
        raise ConfigError(
            table.key("prime_endpoint"), 'must be "chat" (/api/chat) or "generate" (/api/generate)'
        )
    if raw_prompt and endpoint != GENERATE:
        raise ConfigError(table.key("prime_raw"), 'applies to prime_endpoint = "generate" only')
    source = ""
    if file is not None:
        if not isinstance(file, str) or not file.strip():
            raise ConfigError(table.key("prime_file"), "must be a path to a text file")
        if read_text is None:
            raise ConfigError(table.key("prime_file"), "needs a config file to be read from")
        try:
            raw = read_text(file)
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(table.key("prime_file"), f"cannot read {file}: {reason}") from None
        source = file
        if not raw.strip():
            raise ConfigError(table.key("prime_file"), f"{file} is empty")
    if isinstance(raw, str):
        if not raw.strip():
            raise ConfigError(table.key("prime"), "must be a non-empty string")
        messages: tuple[Message, ...] = (Message("system", raw),)
    elif isinstance(raw, list):
        if endpoint != CHAT:
            raise ConfigError(table.key("prime"), 'messages need prime_endpoint = "chat"')
        messages = _parse_messages(raw, table.key("prime"))
    else:
        raise ConfigError(
            table.key("prime"), f"must be a system prompt or an array of messages, not {_kind(raw)}"
        )
    return Prime(messages=messages, endpoint=endpoint, raw=raw_prompt, source=source)


def _parse_model(
    raw: object, index: int, default_host: str, read_text: ReadText | None = None
) -> ModelConfig:
    table = _Table(raw, f"models[{index}]")
    if not table.has("name"):
        raise ConfigError(table.key("name"), "is required")
    raw_name = table.get("name")
    if not isinstance(raw_name, str):
        raise ConfigError(table.key("name"), f"must be a model name string, not {_kind(raw_name)}")
    name = raw_name.strip()
    if not name:
        raise ConfigError(table.key("name"), "must not be empty: name a model, e.g. llama3.2")
    problem = name_problem(name)
    if problem:
        raise ConfigError(
            table.key("name"),
            f"{raw_name!r} is not a name Ollama accepts ({problem}); it would answer "
            '"invalid model name"',
        )
    if is_cloud_model(name):
        raise ConfigError(
            table.key("name"),
            f"{name!r} is a cloud model: Ollama proxies it and never loads it locally",
        )
    is_learned, threshold = _learned(table)
    when, when_text = _when(table)
    after_window = table.string("after_window", "expire")
    if after_window not in _AFTER_WINDOW:
        raise ConfigError(
            table.key("after_window"),
            f"must be one of {', '.join(_AFTER_WINDOW)}, not {after_window!r}",
        )
    model = ModelConfig(
        name=name,
        host=_host(table, "host", default_host),
        keep_alive_s=table.duration("keep_alive", DEFAULT_KEEP_ALIVE_S, allow_forever=True),
        options=_parse_options(table.get("options"), table.key("options")),
        priority=table.integer("priority", 0, low=-1_000_000, high=1_000_000),
        verify=table.boolean("verify", False),
        prime=_parse_prime(table, read_text),
        when=when,
        when_text=when_text,
        after_window=after_window,
        lead_s=table.duration("lead", -1.0) if table.has("lead") else None,
        learned=is_learned,
        learn_threshold=threshold,
    )
    table.finish()
    if (
        model.when is None
        and not model.learned
        and (table.has("after_window") or table.has("lead"))
    ):
        key = "after_window" if table.has("after_window") else "lead"
        raise ConfigError(table.key(key), "has no effect without `when`")
    if model.lead_s is not None and model.lead_s > windows.MAX_LEAD_S:
        raise ConfigError(table.key("lead"), "must be at most 24h")
    timed = model.when is not None or model.learned
    if timed and math.isinf(model.keep_alive_s) and after_window == "expire":
        # A forever lease never expires: outside its windows (written or learned) the model
        # would stay in VRAM.
        raise ConfigError(
            table.key("keep_alive"),
            "-1 (forever) with `when` never leaves VRAM outside the windows, as after_window = "
            '"expire" waits for a lease that never ends: set after_window = "unload" or a '
            "finite keep_alive",
        )
    return model


def _or_empty(value: object) -> object:
    """A table left out is empty; ``daemon = []`` or ``= false`` is an error, not a default."""
    return {} if value is None else value


def parse_config(
    raw: Mapping[str, Any],
    *,
    source: Path | None = None,
    environ: Mapping[str, str] | None = None,
    read_text: ReadText | None = None,
) -> Config:
    """Validate a parsed TOML document and build the :class:`Config`.

    ``read_text`` reads ``prime_file``s (``load_config`` reads them beside the config file);
    without it a ``prime_file`` is an error.

    Raises:
        ConfigError: naming the first offending key path and the rule it breaks.
    """
    env = os.environ if environ is None else environ
    top = _Table(raw, "")
    ollama = _parse_ollama(_or_empty(top.get("ollama")), env)
    daemon = _parse_daemon(_or_empty(top.get("daemon")))
    http = _parse_http(_or_empty(top.get("http")))
    raw_models = top.get("models")
    top.finish()
    if raw_models is None:
        raw_models = []
    if not isinstance(raw_models, Sequence) or isinstance(raw_models, str):
        raise ConfigError("models", "must be an array of tables: [[models]]")
    models = tuple(
        _parse_model(item, i, ollama.host, read_text) for i, item in enumerate(raw_models)
    )
    seen: dict[tuple[str, str], int] = {}
    for i, model in enumerate(models):
        where = (model.host, model.key)
        if where in seen:
            raise ConfigError(
                f"models[{i}].name", f"{model.name!r} is already listed as models[{seen[where]}]"
            )
        seen[where] = i
    if daemon.refresh_before_s <= daemon.poll_interval_s:
        raise ConfigError(
            "daemon.refresh_before",
            "must be longer than daemon.poll_interval, or a lease can lapse between two looks",
        )
    return Config(ollama=ollama, daemon=daemon, http=http, models=models, source=source)


def load_config(path: Path | None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate ``path`` laid over the ``OLLAMA_KEEPWARM_*`` environment.

    ``path`` None means the environment alone (a container). The file wins key by key, and
    its ``[[models]]`` as a whole; an error in a value from the environment names the variable
    (``core/envconfig.py``).

    Raises:
        ConfigError: unreadable file, TOML syntax error, or an invalid value.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_toml(path)
    try:
        merged, layer = envconfig.read_env(env).beneath(raw)
    except envconfig.EnvError as exc:
        raise ConfigError(exc.variable, exc.reason) from None
    base = path.parent if path is not None else Path.cwd()

    def read_text(name: str) -> str:
        # Relative to the config file; read at every (re)load, so SIGHUP picks up an edit.
        with (base / Path(name).expanduser()).open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise OSError(errno.EFBIG, f"larger than {MAX_CONFIG_BYTES >> 20} MiB")
        return data.decode("utf-8")

    try:
        return parse_config(merged, source=path, environ=env, read_text=read_text)
    except ConfigError as exc:
        raise ConfigError(*layer.explain(exc.key, exc.reason)) from None


MAX_CONFIG_BYTES = 16 << 20


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML document; every way it can fail is a ConfigError naming the file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)  # /dev/zero must not fill the memory
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        limit = MAX_CONFIG_BYTES >> 20
        raise ConfigError("", f"{path}: larger than {limit} MiB, which no config file is")
    try:
        text = data.decode("utf-8-sig")  # an editor's byte-order mark is harmless
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            "",
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "TOML files must be UTF-8: save it as UTF-8",
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError("", f"{path}: invalid TOML: nested too deeply") from None


def find_config(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """Pick the config file: ``-c``, then ``$OLLAMA_KEEPWARM_CONFIG``, then the search path.

    None when no file is named or found but ``$OLLAMA_KEEPWARM_MODELS`` is set: the
    environment alone is the configuration (a container).

    Raises:
        ConfigError: when nothing was named, no file exists and the environment names no model.
    """
    env = os.environ if environ is None else environ
    named = explicit or env.get("OLLAMA_KEEPWARM_CONFIG")
    if named:
        return Path(named)
    for candidate in SEARCH_PATH:
        if candidate.is_file():
            return candidate
    if env.get(envconfig.MODELS_VAR, "").strip():
        return None
    searched = ", ".join(str(p) for p in SEARCH_PATH)
    raise ConfigError(
        "",
        f"no config file found (looked for {searched}) and ${envconfig.MODELS_VAR} is not set;"
        f" pass -c FILE or set {envconfig.MODELS_VAR}",
    )
