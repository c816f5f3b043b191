"""The learned-hours profiles on disk: one small JSON file in the state directory.

Learning takes weeks, so the profiles must survive restarts and reloads: every use that marks
a new slot (at most one write per model per quarter-hour) is written at once, atomically
(``state.write_json_atomically``); uses that only count are written at the next mark or at
stop. A corrupt file is renamed aside (``learned.json.corrupt-<time>``) with a warning and
learning starts again: history is a help, never a reason not to run. Clock steps are the pure
code's business (``core/learned.py``); profiles of models no longer configured stay in the
file, so a reload that drops a model and brings it back loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import structlog

from ollama_keepwarm.core import learned
from ollama_keepwarm.core.config import ModelConfig
from ollama_keepwarm.daemon.state import write_json_atomically

__all__ = ["FILENAME", "LearnedStore"]

_log = structlog.get_logger("ollama_keepwarm")
FILENAME = "learned.json"


def profile_key(model: ModelConfig) -> str:
    """One model on one host (as ``load-times.json`` keys it)."""
    return f"{model.host} {model.key}"


class LearnedStore:
    """The profiles of the learned models, in memory and in ``<state_dir>/learned.json``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILENAME
        self.profiles: dict[str, learned.Profile] = {}
        self._loaded = False
        self._dirty = False
        self._cache: dict[str, tuple[tuple[int, int, int, float], learned.LearnedHours]] = {}

    def load(self, *, set_aside: bool = True) -> None:
        """Read the file once; a missing one is empty, a corrupt one is set aside (or, for a
        reader such as ``ollama-keepwarm learned``, only reported)."""
        if self._loaded:
            return
        self._loaded = True
        try:
            raw = json.loads(self.path.read_text())
            if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
                raise ValueError("no `models` table")
            self.profiles = {str(k): learned.from_json(v) for k, v in raw["models"].items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.profiles = {}
            if set_aside:
                self._set_aside(str(exc))
            else:
                _log.warning("learned_file_unreadable", path=str(self.path), error=str(exc))

    def _set_aside(self, error: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            self.path.replace(target)
        except OSError as exc:
            _log.warning("learned_file_unreadable", path=str(self.path), error=f"{error}; {exc}")
            return
        _log.warning(
            "learned_file_set_aside",
            path=str(self.path),
            moved_to=str(target),
            error=error,
            hint="learning starts again for every learned model",
        )

    def adopt(self, models: Iterable[ModelConfig], now: datetime) -> None:
        """Start a profile for each learned model that has none (its learning starts now)."""
        self.load()
        added = False
        for model in models:
            if model.learned and profile_key(model) not in self.profiles:
                self.profiles[profile_key(model)] = learned.Profile(since=now)
                added = True
        if added:
            self.save()

    def record(self, model: ModelConfig, at: datetime, zone: tzinfo, *, cold: bool) -> bool:
        """Count one use; True when it marked a new slot (the learned hours may change)."""
        key = profile_key(model)
        before = self.profiles.get(key)
        if before is None:
            return False
        after = learned.record(before, at, zone, cold=cold)
        self.profiles[key] = after
        marked = after.slots != before.slots
        self._dirty = True
        if marked:
            self.save()
        return marked

    def hours(self, model: ModelConfig, zone: tzinfo, now: datetime) -> learned.LearnedHours:
        """The model's learned hours now (cached per slot: they change at most every 15 min)."""
        key = profile_key(model)
        profile = self.profiles.get(key) or learned.Profile(since=now)
        week, slot = learned.slot_of(now, zone)
        stamp = (week, slot, profile.uses, model.learn_threshold)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == stamp and not cached[1].learning:
            return cached[1]
        found = learned.hours(profile, zone, now, model.learn_threshold)
        self._cache[key] = (stamp, found)
        return found

    def entry(self, model: ModelConfig, zone: tzinfo, now: datetime) -> dict[str, Any]:
        """What status, check, ``learned`` and /metrics show of one learned model."""
        found = self.hours(model, zone, now)
        profile = self.profiles.get(profile_key(model)) or learned.Profile(since=now)
        return {
            "learning": found.learning,
            "days": round(found.days, 2),
            "hours": found.text,
            "when": learned.when_texts(found.intervals) if found.intervals else [],
            "kept_share": round(learned.kept_share(found), 4),
            "threshold": model.learn_threshold,
            "uses": profile.uses,
            "cold_uses": profile.cold_uses,
            "since": profile.since.isoformat(),
            "last_use": profile.last_use.isoformat() if profile.last_use else None,
        }

    def document(self) -> dict[str, Any]:
        """What the file holds."""
        return {
            "format": 1,
            "models": {k: learned.to_json(p) for k, p in sorted(self.profiles.items())},
        }

    def save(self) -> None:
        """Write the file atomically; a failure is logged (the profiles stay in memory)."""
        write_json_atomically(self.path, self.document())
        self._dirty = False

    def flush(self) -> None:
        """Write what only counted since the last write (at stop)."""
        if self._dirty:
            self.save()
