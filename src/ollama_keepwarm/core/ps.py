"""What ``GET /api/ps`` said, as plain data: the snapshot the planner decides from.

It lives in ``core`` so the planner, the views and the client share one type without the pure
layer importing the client; ``ollama.py`` parses the wire format into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["PsSnapshot", "RunningModel"]


@dataclass(frozen=True, slots=True)
class RunningModel:
    """One row of ``GET /api/ps``."""

    name: str
    size_bytes: int
    size_vram_bytes: int
    digest: str
    expires_at: datetime
    context_length: int | None = None


@dataclass(frozen=True, slots=True)
class PsSnapshot:
    """``/api/ps`` as seen at ``taken_at`` (our wall clock, timezone-aware)."""

    taken_at: datetime
    models: tuple[RunningModel, ...] = ()
