"""The service's tables: ``[ollama]`` (where and how patient), ``[daemon]`` (how the keeper
watches and acts) and ``[http]`` (the read-only endpoint).

Each is read into its dataclass (``schema.py``) with the bounds a daemon that runs for years
needs: no poll that hammers Ollama, no timeout that fails every call, no socket path too long to
bind, no time zone the calendar cannot resolve.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ollama_keepwarm.core.config.errors import ConfigError
from ollama_keepwarm.core.config.schema import DaemonConfig, HttpConfig, OllamaConfig
from ollama_keepwarm.core.config.table import (
    MIN_POLL_S,
    MIN_TIMEOUT_S,
    WEEK_S,
    Table,
    read_host,
)
from ollama_keepwarm.core.hosts import DEFAULT_HOST, HOSTNAME, parse_host
from ollama_keepwarm.core.options import kind_of as _kind

__all__ = ["SOCKET_PATH_MAX", "parse_daemon", "parse_http", "parse_ollama"]

_OLLAMA_DEFAULTS = OllamaConfig()
_HTTP_DEFAULTS = HttpConfig()


def parse_ollama(raw: object, environ: Mapping[str, str]) -> OllamaConfig:
    """``[ollama]``: the host (else ``$OLLAMA_HOST``), the timeouts, the crash watch."""
    table = Table(raw, "ollama")
    default_host = DEFAULT_HOST
    if not table.has("host"):  # $OLLAMA_HOST only matters (and is only checked) when used
        try:
            default_host = parse_host(environ.get("OLLAMA_HOST"))
        except ValueError as exc:
            raise ConfigError("OLLAMA_HOST", str(exc)) from None
    config = OllamaConfig(
        host=read_host(table, "host", default_host),
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


def _cgroup(table: Table) -> str:
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


def _command(table: Table, name: str) -> tuple[str, ...]:
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


def parse_daemon(raw: object) -> DaemonConfig:
    """``[daemon]``: the cadence, the hooks, where the socket and state live, the zone."""
    table = Table(raw, "daemon")
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


def _socket_path(table: Table) -> str:
    path = table.string("control_socket", "")
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > SOCKET_PATH_MAX:
        raise ConfigError(
            table.key("control_socket"),
            f"is {size} bytes long; a Unix socket path has at most {SOCKET_PATH_MAX}",
        )
    return path


def _timezone(table: Table) -> str:
    name = table.string("timezone", "")
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                table.key("timezone"), f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)"
            ) from None
    return name


def _listen_host(table: Table) -> str:
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


def parse_http(raw: object) -> HttpConfig:
    """``[http]``: whether the read-only endpoint runs, and where it listens."""
    table = Table(raw, "http")
    config = HttpConfig(
        enabled=table.boolean("enabled", _HTTP_DEFAULTS.enabled),
        host=_listen_host(table),
        port=table.integer("port", _HTTP_DEFAULTS.port, low=0, high=65535),
    )
    table.finish()
    return config
