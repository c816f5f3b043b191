"""Holds: models deliberately left alone (paused, outside their windows, released)."""

from __future__ import annotations

from dataclasses import replace

from ollama_keepwarm.core.plan.model import ModelState
from ollama_keepwarm.core.windows import WindowVerdict


def apply_window(st: ModelState, verdict: WindowVerdict | None) -> ModelState:
    """Note the calendar's verdict; a change between kept and not allows one new unload."""
    changed = (st.window is None or st.window.kept) != (verdict is None or verdict.kept)
    return replace(st, window=verdict, release_sent=False if changed else st.release_sent)


def record_release_sent(st: ModelState) -> ModelState:
    """Note that we asked Ollama to unload a held model (once per hold)."""
    return replace(st, release_sent=True)
