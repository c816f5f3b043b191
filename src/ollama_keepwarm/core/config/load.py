"""config.toml to a :class:`Config`: the entry points, and the rules that span tables.

``parse_config`` is pure (a mapping in, a :class:`Config` out) so every rule is a table test;
``load_config`` only adds the file (``file.py``) and the ``OLLAMA_KEEPWARM_*`` environment
(``core/envconfig.py``). Unknown keys are errors: a typo must not silently fall back to a
default on a box that runs for years. Each table is read by its own module (``service.py``,
``model.py``); what needs two of them (a model listed twice, ``refresh_before`` against
``poll_interval``) is checked here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ollama_keepwarm.core import envconfig
from ollama_keepwarm.core.config.errors import ConfigError
from ollama_keepwarm.core.config.file import read_toml, text_reader
from ollama_keepwarm.core.config.model import ReadText, parse_model
from ollama_keepwarm.core.config.schema import Config
from ollama_keepwarm.core.config.service import parse_daemon, parse_http, parse_ollama
from ollama_keepwarm.core.config.table import Table

__all__ = ["SEARCH_PATH", "find_config", "load_config", "parse_config"]

SEARCH_PATH = (Path("config.toml"), Path("/etc/ollama-keepwarm/config.toml"))


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
    top = Table(raw, "")
    ollama = parse_ollama(_or_empty(top.get("ollama")), env)
    daemon = parse_daemon(_or_empty(top.get("daemon")))
    http = parse_http(_or_empty(top.get("http")))
    raw_models = top.get("models")
    top.finish()
    if raw_models is None:
        raw_models = []
    if not isinstance(raw_models, Sequence) or isinstance(raw_models, str):
        raise ConfigError("models", "must be an array of tables: [[models]]")
    models = tuple(
        parse_model(item, i, ollama.host, read_text) for i, item in enumerate(raw_models)
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
        raw = read_toml(path)
    try:
        merged, layer = envconfig.read_env(env).beneath(raw)
    except envconfig.EnvError as exc:
        raise ConfigError(exc.variable, exc.reason) from None
    base = path.parent if path is not None else Path.cwd()
    read_text = text_reader(base)
    try:
        return parse_config(merged, source=path, environ=env, read_text=read_text)
    except ConfigError as exc:
        raise ConfigError(*layer.explain(exc.key, exc.reason)) from None


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
