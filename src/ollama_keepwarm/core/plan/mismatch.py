"""Options mismatch: a resident runner loaded with other load-time options than ours (§4.6).

Leave it alone while it is resident, say once what to put in the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.plan.model import MISMATCH, Event, ModelState
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

SUSPECT_RELOAD_FRACTION = 0.5
"""A refresh of a listed model taking this share of its cold load time probably reloaded it."""

SUSPECT_RELOAD_FLOOR_S = 0.1
"""...and at least this long: a refresh of a loaded model answers in ~10-20 ms (§9)."""

MISMATCH_RELOADS = 2
"""Reloading renewals in a row that mean an options mismatch (one alone is a crash repair)."""


def mismatch_reason(st: ModelState) -> str:
    if st.foreign_context is not None:
        return (
            f"{MISMATCH}: a client's runner (context {st.foreign_context}) is resident; "
            "not touching it"
        )
    return f"{MISMATCH}: a client's runner with other load options is resident; not touching it"


def check_context(
    model: ModelConfig, st: ModelState, row: RunningModel, previous: PsSnapshot | None
) -> tuple[ModelState, list[Event]]:
    """Learn the context length our own warm gives; another one means a client's runner.

    ``context_length`` in ps is the runner's ``num_ctx`` after clamping (§3.1), so it differs
    only when the load options really differ, on every version (§4.6, §9, §10). We never copy
    it into our options (§9): we say what to configure, and leave the runner alone. Our
    context again does not end a mismatch: the other load options are not in ps.
    """
    ours_just_finished = (
        st.last_warm_ok_at is not None
        and st.in_flight_since is None
        and not st.foreign
        and (previous is None or st.last_warm_ok_at > previous.taken_at)
    )
    if ours_just_finished:
        return replace(st, own_context=row.context_length), []
    if st.own_context is None or row.context_length is None:
        return st, []
    if row.context_length == st.own_context:
        if st.foreign and st.foreign_context is not None:
            # A client's runner at our context is not one with our options: ps shows num_ctx
            # only, and num_thread, num_batch, use_mmap... may still differ (§4.6); a call of
            # ours would reload it (chaos 0.32.15 seed 62). The mismatch stays, naming no
            # context, until the model is gone longer than a reload or we load it ourselves.
            return replace(st, foreign_context=None), []
        return st, []
    if st.foreign and st.foreign_context == row.context_length:
        return st, []
    st = replace(st, foreign=True, foreign_context=row.context_length)
    return report_mismatch(
        model, st, {"context_length": row.context_length, "ours": st.own_context}
    )


def report_mismatch(
    model: ModelConfig, st: ModelState, seen: Mapping[str, object]
) -> tuple[ModelState, list[Event]]:
    """Warn once, with the exact fix; later episodes only change the state."""
    if st.mismatch_reported:
        return st, []
    context = seen.get("context_length")
    if isinstance(context, int):
        options = {**model.options, "num_ctx": context}
        line = "options = { " + ", ".join(f"{k} = {_toml(v)}" for k, v in options.items()) + " }"
        fix = (
            f"a client runs {model.name} with num_ctx {context}; every call of ours with the "
            f"configured options would reload it. To agree with it, write under its "
            f"[[models]] entry: {line} (or set OLLAMA_CONTEXT_LENGTH / a Modelfile num_ctx so "
            "everyone agrees). Until then the keeper leaves that runner alone."
        )
    elif "seen" in seen or "argv" in seen:
        fix = (
            f"a client's request reloaded {model.name} (Ollama reloads a loaded model only for "
            "other load-time options: num_ctx, num_batch, num_gpu, num_thread, use_mmap, "
            "shift): make its [[models]] options identical to the client's. Until then the "
            "keeper leaves that runner alone while it is loaded."
        )
    else:
        fix = (
            f"two renewals in a row reloaded {model.name}: its clients send other load-time "
            "options (num_ctx, num_batch, num_gpu, num_thread, use_mmap, shift) than its "
            "[[models]] options; make them identical. Until then the keeper leaves the runner "
            "alone while it is loaded."
        )
    return replace(st, mismatch_reported=True), [
        Event("options_mismatch", model.name, {**seen, "fix": fix})
    ]


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def mismatch_outlasted(st: ModelState, daemon: DaemonConfig, now: datetime) -> bool:
    """A client's runner with other options is gone for longer than a reload takes: the
    mismatch is over, warm with ours. Until then the client may be reloading it (issue 21).
    A runner of it that ended and is not judged yet (``runner_exit_at``) was there a moment
    ago: not gone (chaos 0.24.0 seed 28: two clients reloading it in turn, never listed at a
    look in between)."""
    if st.runner_exit_at is not None:
        return False
    if st.last_vanished_at is None:
        return True
    reload_s = max(2 * daemon.poll_interval_s, 2.0 * (st.cold_load_s or 0.0), 1.0)
    return (now - st.last_vanished_at).total_seconds() > reload_s
