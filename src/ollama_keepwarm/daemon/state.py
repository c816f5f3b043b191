"""State that must outlive the process: pauses, and how long each model takes to load.

An admin who paused a model to give its VRAM to another job must not find it loaded again after
a config reload or a restart of the daemon. The measured cold-load times let the ExecStartPost
one-shot (``warm --timeout``) start only the loads it can finish inside its bound: a load cut
short by ``timeout(1)`` is aborted inside Ollama and wasted (reference §2.6).

The files are small JSON, written atomically (temporary file, fsync, rename); a corrupt file is
reported and ignored, never fatal: the worst outcome is a model warmed that someone wanted
paused, which the next ``pause`` fixes, or a load time not known yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

__all__ = ["LoadTimeStore", "Pause", "PauseStore", "default_state_dir"]

_log = structlog.get_logger("ollama_keepwarm")
FILENAME = "pauses.json"
LOAD_TIMES = "load-times.json"


@dataclass(frozen=True, slots=True)
class Pause:
    """One paused model: ``until`` None means until resumed by hand."""

    name: str
    until: datetime | None


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$STATE_DIRECTORY`` under systemd (StateDirectory=), else a per-user directory."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/ollama-keepwarm")
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ollama-keepwarm"


class PauseStore:
    """Reads and writes the pause file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILENAME

    def load(self) -> dict[str, Pause]:
        """Return the saved pauses by model key; an unreadable or corrupt file gives none."""
        return read_json_or_nothing(
            self.path,
            lambda raw: {
                str(key): Pause(
                    name=str(entry["name"]),
                    until=datetime.fromisoformat(entry["until"]) if entry.get("until") else None,
                )
                for key, entry in raw["paused"].items()
            },
        )

    def save(self, pauses: Mapping[str, Pause]) -> None:
        """Write the pauses atomically; a failure is logged (the pause still holds in memory)."""
        document = {
            "paused": {
                key: {"name": p.name, "until": p.until.isoformat() if p.until else None}
                for key, p in pauses.items()
            }
        }
        write_json_atomically(self.path, document)


class LoadTimeStore:
    """The last measured cold-load time of each model, by ``host model-key``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOAD_TIMES

    def load(self) -> dict[str, float]:
        """Return the saved times; an unreadable or corrupt file gives none."""
        return read_json_or_nothing(
            self.path,
            lambda raw: {str(k): float(v) for k, v in raw["cold_load_s"].items() if float(v) >= 0},
        )

    def record(self, key: str, seconds: float) -> None:
        """Remember one measurement (read, update, write: the file is a few lines)."""
        times = self.load()
        times[key] = round(seconds, 3)
        write_json_atomically(self.path, {"cold_load_s": times})

    @staticmethod
    def key(host: str, model_key: str) -> str:
        """The entry of one model on one host."""
        return f"{host} {model_key}"


T = TypeVar("T")


def read_json_or_nothing(path: Path, parse: Callable[[Any], dict[str, T]]) -> dict[str, T]:
    """Read ``path`` as JSON through ``parse``; a missing file gives nothing, a corrupt or
    unreadable one is reported and gives nothing too (state is a help, never a reason to fail)."""
    try:
        return parse(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        _log.warning("state_file_ignored", path=str(path), error=str(exc))
        return {}


def write_json_atomically(path: Path, document: object) -> None:
    """Write ``document`` to ``path`` via a temporary file, fsync and rename; log a failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            Path(temporary).replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(temporary).unlink()
            raise
    except OSError as exc:
        _log.warning("state_file_write_failed", path=str(path), error=str(exc))
