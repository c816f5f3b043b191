"""``ollama-keepwarm learned``: each learned model's hours and profile, from the state file.

It reads ``learned.json`` as the daemon last wrote it (no daemon needed, nothing changed), so a
user can see what was learned and turn it into fixed windows: ``when`` lists windows that parse
as they are. ``check`` prints the same one line per model.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import tzlocal

from ollama_keepwarm.core import learned, windows
from ollama_keepwarm.core.config import Config
from ollama_keepwarm.daemon.learned import LearnedStore, profile_key
from ollama_keepwarm.daemon.state import default_state_dir

__all__ = ["lines", "report", "state_dir_of"]


def state_dir_of(config: Config) -> Path:
    """Where the daemon keeps its state (``daemon.state_dir``, else its default)."""
    return Path(config.daemon.state_dir) if config.daemon.state_dir else default_state_dir()


def _zone(config: Config) -> tzinfo:
    name = config.daemon.timezone
    return ZoneInfo(name) if name else tzlocal.get_localzone()


def _slots(profile: learned.Profile, zone: tzinfo, now: datetime) -> list[dict[str, Any]]:
    """The used slots of the week with their decayed share (what the threshold is held to)."""
    found = []
    for slot, share in enumerate(learned.shares(profile, zone, now)):
        if share > 0:
            day, minute = divmod(slot * learned.SLOT_MINUTES, windows.DAY_MINUTES)
            found.append(
                {
                    "day": windows.DAYS[day],
                    "at": f"{minute // 60:02d}:{minute % 60:02d}",
                    "share": round(share, 3),
                }
            )
    return found


def report(config: Config, directory: Path, now: datetime) -> list[dict[str, Any]]:
    """One entry per learned model: hours, `when` windows, counters and used slots."""
    store = LearnedStore(directory)
    store.load(set_aside=False)  # a reader never moves the daemon's file
    zone = _zone(config)
    entries: list[dict[str, Any]] = []
    for model in config.models:
        if not model.learned:
            continue
        head = {"name": model.name, "host": model.host, "zone": str(zone)}
        profile = store.profiles.get(profile_key(model))
        if profile is None:
            entries.append({**head, "hours": f"no data yet in {store.path}", "slots": []})
            continue
        entry = store.entry(model, zone, now)
        entries.append({**head, **entry, "slots": _slots(profile, zone, now)})
    return entries


def lines(entries: list[dict[str, Any]]) -> list[str]:
    """The text form: one line per model, and the windows it would be as `when`."""
    out = []
    for entry in entries:
        out.append(f"  {entry['name']:<32} {entry['hours']}")
        if entry.get("when"):
            quoted = ", ".join(f'"{w}"' for w in entry["when"])
            out.append(f"    as fixed windows: when = [{quoted}]")
        if "uses" in entry:
            out.append(
                f"    {entry['uses']} uses seen, {entry['cold_uses']} found it cold; "
                f"kept {entry['kept_share']:.0%} of the week (threshold {entry['threshold']:g})"
            )
    return out
