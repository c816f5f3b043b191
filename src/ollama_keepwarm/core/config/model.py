"""One ``[[models]]`` table: the name, its lease, its hours and what is sent after a load.

The name is checked the way Ollama checks it; ``keep_alive`` is a lease (``-1`` is forever);
``when`` is calendar windows (``core/windows.py``) or ``"learned"`` (``core/learned.py``), with
``after_window`` and ``lead``; ``options`` are only the load-time options Ollama compares
(``core/options.py``); ``prime`` or ``prime_file`` is the clients' fixed prefix
(``core/prime.py``). Reading a ``prime_file`` is the caller's (:data:`ReadText`), so this stays
pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from ollama_keepwarm.core import windows
from ollama_keepwarm.core.config.errors import ConfigError
from ollama_keepwarm.core.config.schema import DEFAULT_KEEP_ALIVE_S, ModelConfig
from ollama_keepwarm.core.config.table import Table, read_host
from ollama_keepwarm.core.learned import DEFAULT_THRESHOLD, parse_threshold
from ollama_keepwarm.core.names import is_cloud_model, name_problem
from ollama_keepwarm.core.options import kind_of as _kind
from ollama_keepwarm.core.options import option_problem
from ollama_keepwarm.core.prime import CHAT, GENERATE, Message, Prime

__all__ = ["ReadText", "parse_model"]

_AFTER_WINDOW = ("expire", "unload")


def _learned(table: Table) -> tuple[bool, float]:
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


def _when(table: Table) -> tuple[tuple[windows.Interval, ...] | None, tuple[str, ...]]:
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


def _parse_prime(table: Table, read_text: ReadText | None) -> Prime | None:
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


def parse_model(
    raw: object, index: int, default_host: str, read_text: ReadText | None = None
) -> ModelConfig:
    """``models[index]``, on ``default_host`` unless it names its own ``host``."""
    table = Table(raw, f"models[{index}]")
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
        host=read_host(table, "host", default_host),
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
