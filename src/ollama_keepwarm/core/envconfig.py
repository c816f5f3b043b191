"""The environment to the same raw, TOML-shaped table a config file gives: for containers.

A container is configured by its environment, so ``run`` needs no file there:

- ``OLLAMA_KEEPWARM_MODELS="llama3.1:8b?keep_alive=1h&num_ctx=8192&priority=10,nomic-embed-text"``:
  models separated by commas (or new lines, for a YAML block with one model a line), each
  with query parameters, the syntax of Ollama's own open preload proposal (ollama/ollama#13342,
  ``OLLAMA_PRELOAD_MODELS``). ``keep_alive`` (or that proposal's ``keepalive``), ``priority``,
  ``verify``, ``host``, ``when`` (repeatable), ``after_window``, ``lead`` and the ``prime*`` keys
  are the model's keys; every other parameter is a load option (``num_ctx=8192``), checked by
  ``core/config/model.py`` against the known set like a file's ``options``. A parameter given twice
  is an error (``when`` excepted). A space does not separate models: ``llama 3.1:8b`` is one
  name, which core/config/ refuses as Ollama would. Values are URL-encoded: a comma in a ``prime``
  is ``%2C`` (a bare one starts the next model).
- ``OLLAMA_KEEPWARM_<KEY>`` for the ``[daemon]`` keys (``OLLAMA_KEEPWARM_POLL_INTERVAL=5s``),
  ``OLLAMA_KEEPWARM_HTTP_<KEY>`` for ``[http]`` (the prefix keeps ``HTTP_HOST`` apart from
  Ollama's host), and ``OLLAMA_KEEPWARM_LOAD_TIMEOUT`` / ``_REQUEST_TIMEOUT`` for ``[ollama]``.
  ``OLLAMA_HOST`` stays what it is everywhere: the default of ``[ollama] host``.

Values are text, so this module only turns text into the types TOML would have given (a bare
number is seconds, ``true`` a boolean); ``core/config/`` validates the result with the same
rules as a file, and :meth:`EnvLayer.explain` renames the key in its errors to the variable the
user wrote. A config file wins key by key; its ``[[models]]``, when present, win as a whole. An
empty variable counts as unset (templated manifests often render one). An unknown
``OLLAMA_KEEPWARM_*`` variable is an error (a typo must not fall back to a default), except
the names Kubernetes injects for a Service called ``ollama-keepwarm``
(``OLLAMA_KEEPWARM_SERVICE_HOST``, ``OLLAMA_KEEPWARM_PORT_11435_TCP``, ...).
"""

from __future__ import annotations

import copy
import re
import shlex
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CONFIG_VAR", "MODELS_VAR", "PREFIX", "VARIABLES", "EnvError", "EnvLayer", "read_env"]

PREFIX = "OLLAMA_KEEPWARM_"
MODELS_VAR = f"{PREFIX}MODELS"
CONFIG_VAR = f"{PREFIX}CONFIG"
"""Names a config file; read by ``config.find_config``, not here."""

Kind = Literal["duration", "string", "boolean", "integer", "command"]

VARIABLES: Mapping[str, tuple[str, str, Kind]] = {
    f"{PREFIX}LOAD_TIMEOUT": ("ollama", "load_timeout", "duration"),
    f"{PREFIX}REQUEST_TIMEOUT": ("ollama", "request_timeout", "duration"),
    f"{PREFIX}CGROUP": ("ollama", "cgroup", "string"),
    f"{PREFIX}POLL_INTERVAL": ("daemon", "poll_interval", "duration"),
    f"{PREFIX}REFRESH_BEFORE": ("daemon", "refresh_before", "duration"),
    f"{PREFIX}HEALTH_INTERVAL": ("daemon", "health_interval", "duration"),
    f"{PREFIX}READY_TIMEOUT": ("daemon", "ready_timeout", "duration"),
    f"{PREFIX}DOWN_POLL_MAX": ("daemon", "down_poll_max", "duration"),
    f"{PREFIX}RESUME_THRESHOLD": ("daemon", "resume_threshold", "duration"),
    f"{PREFIX}CONFLICT_RETRY": ("daemon", "conflict_retry", "duration"),
    f"{PREFIX}ON_GPU_LOST": ("daemon", "on_gpu_lost", "command"),
    f"{PREFIX}ON_RUNNER_WEDGED": ("daemon", "on_runner_wedged", "command"),
    f"{PREFIX}CONTROL_SOCKET": ("daemon", "control_socket", "string"),
    f"{PREFIX}STATE_DIR": ("daemon", "state_dir", "string"),
    f"{PREFIX}TIMEZONE": ("daemon", "timezone", "string"),
    f"{PREFIX}HTTP_ENABLED": ("http", "enabled", "boolean"),
    f"{PREFIX}HTTP_HOST": ("http", "host", "string"),
    f"{PREFIX}HTTP_PORT": ("http", "port", "integer"),
}
"""Every scalar variable: the table and key of config.toml it stands for, and its type."""

_MODEL_KEYS = {"keep_alive": "keep_alive", "keepalive": "keep_alive", "priority": "priority"}
_MODEL_KEYS |= {"verify": "verify", "host": "host"}
_MODEL_KEYS |= {"after_window": "after_window", "lead": "lead"}
_MODEL_KEYS |= {k: k for k in ("prime", "prime_file", "prime_endpoint", "prime_raw")}
_TEXT_KEYS = {"prime", "prime_file", "prime_endpoint", "host", "after_window"}
"""Model keys whose value is text as written (a prompt of ``1`` is the text "1")."""
_MODEL_KEYS |= {"learn_threshold": "learn_threshold"}  # with when=learned (core/learned.py)
_LIST_KEYS = {"when"}
"""Model keys that are lists: each repetition adds one (``when=mon-fri+08:00-19:00&when=...``)."""
_RESERVED = {
    "name": "the name goes before the '?'",
    "options": "write each option as its own parameter, e.g. num_ctx=8192",
    "prompt": "the keeper loads models without a prompt",
}
_SERVICE_LINK = re.compile(rf"{PREFIX}(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\w+)?)")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_MODEL_INDEX = re.compile(r"models\[(\d+)\]")


class EnvError(Exception):
    """A variable that cannot be read; ``str()`` names it and the reason."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EnvLayer:
    """What the environment configures, as raw tables, and which variable gave which key."""

    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    models: tuple[Mapping[str, Any], ...] | None = None
    variables: Mapping[str, str] = field(default_factory=dict)  # "daemon.poll_interval" -> var

    @property
    def empty(self) -> bool:
        """True when no variable configures anything."""
        return not self.tables and self.models is None

    def beneath(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], EnvLayer]:
        """Lay this layer under a file's raw document: the file wins.

        Returns the merged document and the layer narrowed to what it still supplies, so
        errors name a variable only for a value that came from it.
        """
        merged = copy.deepcopy(dict(raw))
        used: dict[str, str] = {}
        tables: dict[str, dict[str, Any]] = {}
        for name, values in self.tables.items():
            target = merged.setdefault(name, {})
            if not isinstance(target, dict):
                continue  # the file's own error (e.g. `daemon = 3`) is reported as such
            for key, value in values.items():
                if key not in target:
                    target[key] = value
                    tables.setdefault(name, {})[key] = value
                    used[f"{name}.{key}"] = self.variables[f"{name}.{key}"]
        models = None
        if self.models is not None and "models" not in merged:
            merged["models"] = [dict(m) for m in self.models]
            models = self.models
        return merged, EnvLayer(tables=tables, models=models, variables=used)

    def explain(self, key: str, reason: str) -> tuple[str, str]:
        """Rename a config error's key path (and the keys its reason names) to variables."""
        for path, variable in self.variables.items():
            reason = reason.replace(path, variable)
        if self.models is not None:
            reason = _MODEL_INDEX.sub(lambda m: f"model {int(m[1]) + 1}", reason)
            found = re.fullmatch(r"models\[(\d+)\](?:\.(?:options\.)?(.+))?", key)
            if found:
                index = int(found[1])
                name = self.models[index].get("name", "") if index < len(self.models) else ""
                where = f'{MODELS_VAR}: model {index + 1} ("{name}")'
                return (f"{where}: {found[2]}" if found[2] else where), reason
        return self.variables.get(key, key), reason


def read_env(environ: Mapping[str, str]) -> EnvLayer:
    """Read every ``OLLAMA_KEEPWARM_*`` variable into an :class:`EnvLayer`.

    Raises:
        EnvError: an unknown variable, or a value that is not of its variable's type.
    """
    tables: dict[str, dict[str, Any]] = {}
    variables: dict[str, str] = {}
    models: tuple[Mapping[str, Any], ...] | None = None
    for variable in sorted(environ):
        if not variable.startswith(PREFIX) or variable == CONFIG_VAR:
            continue
        if _SERVICE_LINK.fullmatch(variable):
            continue  # Kubernetes' service links for a Service named ollama-keepwarm
        text = environ[variable].strip()
        if variable == MODELS_VAR:
            models = parse_models(text) if text else None
            continue
        if variable not in VARIABLES:
            known = ", ".join([MODELS_VAR, CONFIG_VAR, *VARIABLES])
            raise EnvError(variable, f"unknown variable (known: {known})")
        if not text:
            continue
        table, key, kind = VARIABLES[variable]
        tables.setdefault(table, {})[key] = _convert(variable, text, kind)
        variables[f"{table}.{key}"] = variable
    return EnvLayer(tables=tables, models=models, variables=variables)


def parse_models(text: str) -> tuple[Mapping[str, Any], ...]:
    """Parse ``OLLAMA_KEEPWARM_MODELS`` into ``[[models]]`` tables (unvalidated).

    Raises:
        EnvError: an entry without a name, a malformed or repeated parameter, a reserved one.
    """
    entries = [entry.strip() for entry in re.split(r"[,\n]+", text) if entry.strip()]
    return tuple(_parse_model(entry, number) for number, entry in enumerate(entries, 1))


def _parse_model(entry: str, number: int) -> dict[str, Any]:
    raw_name, _, query = entry.partition("?")
    name = urllib.parse.unquote(raw_name)
    where = f'model {number} ("{name}")'
    if not name:
        raise EnvError(MODELS_VAR, f"model {number} ({entry!r}): no model name before '?'")
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise EnvError(
            MODELS_VAR, f"{where}: {query!r} is not key=value&key=value parameters"
        ) from None
    model: dict[str, Any] = {"name": name}
    options: dict[str, Any] = {}
    for raw_key, raw_value in pairs:
        key = raw_key.strip()
        value = _scalar(raw_value.strip())
        if not key:
            raise EnvError(MODELS_VAR, f"{where}: a parameter has no name ({query!r})")
        if key in _RESERVED:
            raise EnvError(MODELS_VAR, f"{where}: {key}: not a parameter ({_RESERVED[key]})")
        if key in _LIST_KEYS:
            model.setdefault(key, []).append(raw_value.strip())
        elif key in _MODEL_KEYS:
            target = _MODEL_KEYS[key]
            if target in model:
                raise EnvError(MODELS_VAR, f"{where}: {key}: given twice")
            model[target] = raw_value.strip() if target in _TEXT_KEYS else value
        elif key in options:
            raise EnvError(MODELS_VAR, f"{where}: {key}: given twice")
        else:
            options[key] = value
    if options:
        model["options"] = options
    return model


def _scalar(text: str) -> bool | int | float | str:
    """The TOML type a parameter's text would have had: boolean, integer, float, else text."""
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if _NUMBER.fullmatch(text):
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    return text


def _convert(variable: str, text: str, kind: Kind) -> Any:
    if kind == "duration":
        # A bare number is seconds, as a TOML number is; anything else is a Go duration string.
        value = _scalar(text)
        return text if isinstance(value, bool) else value
    if kind == "boolean":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise EnvError(variable, f"must be true or false, not {text!r}")
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise EnvError(variable, f"must be an integer, not {text!r}") from None
    if kind == "command":
        try:
            return shlex.split(text)
        except ValueError as exc:
            raise EnvError(variable, f"cannot split into a command: {exc}") from None
    return text
