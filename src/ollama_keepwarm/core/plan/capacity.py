"""Capacity: kept models that do not fit together are settled by priority, never fought."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.plan.model import (
    CAPACITY,
    Event,
    ModelState,
    is_held,
    is_paused,
    off_window,
    ranked,
)
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

CONFLICT_STRIKES = 2
"""How many evictions of kept models by our own loads (within ``2 x conflict_retry``) make a
capacity conflict. One alone may be a coincidence: an ``ollama stop`` during our load. Where
runner processes show the eviction (``processes.evicted_by_ours``), one is enough."""


def settle_conflict(
    models: Sequence[ModelConfig],
    states: dict[str, ModelState],
    daemon: DaemonConfig,
    now: datetime,
    *,
    proved: bool = False,
) -> list[Event]:
    """On the second eviction by our own loads, hold the lowest-ranked kept model.

    ``proved``: runner processes showed an eviction by our own load (the victim's runner ended
    and ours started next): no coincidence, so that one settles it. The first pass then costs
    at most one extra load of each kept model.

    Priorities decide for the whole kept set, not for the pair that collided: the model held
    is always the lowest-ranked one still kept, so a higher one never waits while a lower one
    stays. Holding it repeats, one model at a time, while the rest still does not fit.
    """
    window = timedelta(seconds=daemon.conflict_retry_s * 2)
    recent = {t for st in states.values() for t in st.strikes if now - t < window}
    if len(recent) < (1 if proved else CONFLICT_STRIKES):
        return []
    kept = [
        m
        for m in ranked(models)
        if not is_held(states[m.key])
        and not is_paused(states[m.key], now)
        and not off_window(states[m.key])
    ]
    if len(kept) < 2:
        return []
    weakest = kept[-1]
    stronger = ", ".join(m.name for m in kept[:-1])
    reason = f"{CAPACITY}: does not fit beside {stronger}; held until there is room"
    for key, st in states.items():
        states[key] = replace(st, strikes=())
    states[weakest.key] = replace(
        states[weakest.key],
        held_since=now,
        held_reason=reason,
        held_room=0,
        held_vram=0,
        release_sent=False,
        rewarm_not_before=None,
    )
    return [
        Event(
            "capacity_conflict",
            weakest.name,
            {
                "keeps": [m.name for m in kept[:-1]],
                "priority": weakest.priority,
                "hint": "not every kept model fits: it is held (and unloaded) until fewer models "
                "are loaded, the config changes or `ollama-keepwarm refresh` names it; raise "
                "OLLAMA_MAX_LOADED_MODELS, free VRAM, or remove a model from the config",
            },
        )
    ]


def note_room(st: ModelState, row: RunningModel, current: PsSnapshot) -> ModelState:
    """Remember the VRAM a listed model's runner takes and how much fit beside it.

    Only a runner with our options counts (a client's, with another context, has another
    size). ``vram_beside`` is proof of room: Ollama let this model and that much else be
    resident at once (§4.4), so the model fits beside as much again.
    """
    if st.foreign:
        return st
    beside = sum(r.size_vram_bytes for r in current.models if r is not row)
    return replace(st, vram_bytes=row.size_vram_bytes, vram_beside=max(st.vram_beside, beside))


def look_for_room(
    models: Sequence[ModelConfig],
    states: dict[str, ModelState],
    current: PsSnapshot,
    rows: Mapping[str, RunningModel | None],
    now: datetime,
    loading_elsewhere: int = 0,
) -> list[Event]:
    """Release the highest-ranked held model once there is evidence of room for it.

    Evidence of room is the loaded set shrinking while every other kept model is warm: a
    model of another client expired or was stopped. A timer is no evidence, nor is a model a
    client is reloading: ``loading_elsewhere`` counts the runners (where processes are
    visible) whose model ps does not list yet, nor another held model a client reloaded with
    its options: it is left alone (``mismatch``), so its runner stays.

    Fewer models is room where Ollama's count cap decides (§4.4 step 1); where memory decides
    (step 3), a small model gone leaves no room for a big one. So where the held model's VRAM
    is known, the VRAM of the others must also be no more than either what was resident
    beside it before (``vram_beside``) or what the others took since the hold less its own
    size: room freed as large as it is. Otherwise its load would evict a kept model again.
    """
    held = [m for m in ranked(models) if is_held(states[m.key])]
    if not held:
        return []
    # A held model's row is its own room, or (ours) about to be unloaded; but a held model a
    # client reloaded with its options is left alone (``mismatch``), so its room stays taken.
    # A model a client is (re)loading is absent from ps but takes its room all the same.
    mine = {id(rows[m.key]) for m in held if rows[m.key] is not None and not states[m.key].foreign}
    room: dict[str, tuple[int, int]] = {}
    for model in held:
        own = id(rows[model.key])
        others = [r for r in current.models if id(r) != own and id(r) not in mine]
        room[model.key] = (
            len(others) + loading_elsewhere,
            sum(r.size_vram_bytes for r in others),
        )
        st = states[model.key]
        states[model.key] = replace(
            st,
            held_room=max(st.held_room, room[model.key][0]),
            held_vram=max(st.held_vram, room[model.key][1]),
        )
    settled = all(
        rows[m.key] is not None
        or is_paused(states[m.key], now)
        or off_window(states[m.key])
        or states[m.key].failures
        for m in models
        if not is_held(states[m.key])
    ) and not any(st.in_flight_since for st in states.values())
    first = states[held[0].key]
    count, vram = room[held[0].key]
    if not settled or count >= first.held_room or not _vram_fits(first, vram, loading_elsewhere):
        return []
    states[held[0].key] = unheld(first)
    return [
        Event(
            "capacity_retry",
            held[0].name,
            {"listed": count, "was": first.held_room, "vram": vram, "needs": first.vram_bytes},
        )
    ]


def _vram_fits(st: ModelState, others_vram: int, loading_elsewhere: int) -> bool:
    """Whether a held model's VRAM fits beside ``others_vram``, on evidence (see above)."""
    if st.vram_bytes <= 0:
        return True  # unknown, or a CPU runner: the count decides
    if loading_elsewhere:
        return False  # a runner loading takes VRAM that ps does not show yet
    return others_vram <= max(st.vram_beside, st.held_vram - st.vram_bytes)


def unheld(st: ModelState) -> ModelState:
    return replace(
        st, held_since=None, held_reason=None, held_room=0, held_vram=0, release_sent=False
    )


def rank_holds_again(
    old: Sequence[ModelConfig], new: Sequence[ModelConfig], states: Mapping[str, ModelState]
) -> dict[str, ModelState] | None:
    """A new config with the same models and options: as many held as before, by the new ranks.

    Only priorities or leases changed, so the room did not: ending every hold would make the
    kept set fight its way to the same number of holds again, our loads evicting our own
    runners (chaos 0.24.0 seed 125: a reload that rotated priorities, three evictions of one
    model). The lowest-ranked models under the new config are held; one held before that now
    ranks higher is tried again (and one newly held is unloaded by the hold). ``None`` when the
    set or the options changed (the room may differ: every hold is tried again) or nothing
    was held.
    """
    if {m.key: m.options for m in old} != {m.key: m.options for m in new}:
        return None
    held = [st for st in states.values() if is_held(st)]
    eligible = [m for m in ranked(new) if not off_window(states.get(m.key, ModelState()))]
    if not held or len(held) >= len(eligible):
        return None
    since = min(st.held_since for st in held if st.held_since is not None)
    weakest = eligible[len(eligible) - len(held) :]
    stronger = ", ".join(m.name for m in eligible[: len(eligible) - len(held)])
    again = dict(states)
    for model in eligible:
        st = states.get(model.key, ModelState())
        if model not in weakest:
            again[model.key] = unheld(st) if is_held(st) else st
        elif not is_held(st):
            reason = f"{CAPACITY}: does not fit beside {stronger}; held until there is room"
            again[model.key] = replace(
                st,
                held_since=since,
                held_reason=reason,
                held_room=0,
                held_vram=0,
                release_sent=False,
                rewarm_not_before=None,
            )
    return again


def release_holds(
    states: Mapping[str, ModelState], only: str | None = None
) -> dict[str, ModelState]:
    """End every capacity hold (or only the hold of ``only``, a model key): a new config is a
    reason to try them all; an operator's ``refresh`` tries the models it names, and no other
    (a refresh of the top model that freed the lowest would let its load evict the top one)."""
    return {
        key: unheld(st) if is_held(st) and only in (None, key) else st for key, st in states.items()
    }
