"""config.toml to frozen dataclasses, with errors that name the key and the rule.

Import from here: ``from ollama_keepwarm.core.config import Config, load_config``. The package is
split so each module owns one thing, read top-down:

- ``load.py``: the entry points (``parse_config``, ``load_config``, ``find_config``) and the
  rules that span tables;
- ``file.py``: reading ``config.toml`` and ``prime_file``s (size, UTF-8, TOML errors);
- ``service.py``: the ``[ollama]``, ``[daemon]`` and ``[http]`` tables;
- ``model.py``: one ``[[models]]`` table (name, keep_alive, when/learned, after_window, prime);
- ``table.py``: reading one table (typed getters, unknown keys refused), durations and hosts;
- ``schema.py``: the dataclasses and their defaults;
- ``errors.py``: :class:`ConfigError` and exit status 78.

Imports inside the package only go down that list.
"""

from __future__ import annotations

from ollama_keepwarm.core.config.errors import EX_CONFIG, ConfigError
from ollama_keepwarm.core.config.load import SEARCH_PATH, find_config, load_config, parse_config
from ollama_keepwarm.core.config.schema import (
    DEFAULT_KEEP_ALIVE_S,
    Config,
    DaemonConfig,
    HttpConfig,
    ModelConfig,
    OllamaConfig,
    keep_alive_wire,
)
from ollama_keepwarm.core.config.table import WEEK_S, parse_duration_s
from ollama_keepwarm.core.hosts import DEFAULT_HOST, parse_host

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_KEEP_ALIVE_S",
    "EX_CONFIG",
    "SEARCH_PATH",
    "WEEK_S",
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
