"""The files a configuration is read from: ``config.toml`` itself and its ``prime_file``s.

Every way a file can fail (unreadable, too large, not UTF-8, not TOML, nested too deeply) becomes
a :class:`ConfigError` naming the file, and no file is read past :data:`MAX_CONFIG_BYTES`:
``-c /dev/zero`` must not fill the memory. Files are read here only; ``load.py`` merely looks
for which config file exists.
"""

from __future__ import annotations

import errno
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ollama_keepwarm.core.config.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "read_toml", "text_reader"]

MAX_CONFIG_BYTES = 16 << 20


def read_toml(path: Path) -> dict[str, Any]:
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


def text_reader(base: Path) -> Callable[[str], str]:
    """A reader of ``prime_file``s: relative to ``base`` (the config file's folder), as UTF-8."""

    def read_text(name: str) -> str:
        # Relative to the config file; read at every (re)load, so SIGHUP picks up an edit.
        with (base / Path(name).expanduser()).open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise OSError(errno.EFBIG, f"larger than {MAX_CONFIG_BYTES >> 20} MiB")
        return data.decode("utf-8")

    return read_text
