"""Capacity: kept models that do not fit together are settled by priority, never fought."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.names import match_key
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
from ollama_keepwarm.core.runners import RunnerTable

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
    rows: Mapping[str, RunningModel | None] | None = None,
) -> list[Event]:
    """On the second eviction by our own loads, hold the lowest-ranked kept model in the way.

    ``proved``: runner processes showed an eviction by our own load (the victim's runner ended
    and ours started next): no coincidence, so that one settles it. The first pass then costs
    at most one extra load of each kept model.

    Priorities decide among the kept models that take room (``rows``: listed, or loading for
    a call of ours, or just evicted by one): the lowest-ranked of them is held, so a higher
    one never waits while a lower one stays in its room. A kept model that takes no room (not
    loaded yet, or failing) is no help held: chaos 0.24.0 seed 227 held ``tiny``, never
    loaded, while the two 8 GB models it ranked below went on evicting each other. Holding
    repeats, one model at a time, while the rest still does not fit.
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
    in_the_way = [m for m in kept if _takes_room(states[m.key], rows, m.key, now - window)]
    if len(in_the_way) >= 2:
        kept = in_the_way
    if len(kept) < 2:
        return []
    weakest = kept[-1]
    for key, st in states.items():
        states[key] = replace(st, strikes=())
    states[weakest.key] = held(states[weakest.key], now, kept[:-1])
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


def _takes_room(
    st: ModelState,
    rows: Mapping[str, RunningModel | None] | None,
    key: str,
    since: datetime,
) -> bool:
    """Whether a kept model is in the room a conflict is about: listed, loading for a call of
    ours, or evicted by one of our loads lately (a strike). Without rows, every one is."""
    if rows is None:
        return True
    listed = rows.get(key) is not None and not st.foreign
    return listed or st.in_flight_since is not None or any(t >= since for t in st.strikes)


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


FIRST_REQUEST_TOLERANCE = timedelta(seconds=0.05)
"""How closely ``expires_at - taken_at`` must repeat across two looks for a row whose lease
is recomputed at every look (§1.5: a runner serving the request that loaded it, or, before
v0.30, still loading)."""

LOAD_LIMIT_S = 300.0
"""``OLLAMA_LOAD_TIMEOUT``'s default (§2.6): an unlisted runner older than this is not loading
(its load failed, or Ollama will never list it); waiting on it would never end."""


@dataclass(frozen=True, slots=True)
class Room:
    """What the last look showed of the room a cold load of ours would need.

    ``taken``: what of a client's is busy taking room right now and will let it go soon
    (``room_taken``), or None. ``occupied``: the runners listed plus those loading that no row
    lists yet.
    """

    taken: str | None = None
    occupied: int = 0


def room_taken(
    models: Sequence[ModelConfig],
    states: Mapping[str, ModelState],
    previous: PsSnapshot | None,
    current: PsSnapshot,
    table: RunnerTable,
    blobs: Mapping[str, str],
) -> str | None:
    """What of a client's is taking room right now and will let it go soon, or None.

    A client's runner that is loading, or serving the request that loaded it, is busy, and
    Ollama evicts an idle runner first (§4.5): a cold load of ours that needs room, sent now,
    is queued behind that load and then evicts an idle kept model of ours, whose re-warm
    evicts the first again (chaos 0.32.15 seeds 339 and 365: a client's ``keep_alive: 0``
    model in a two-slot box). Once that request ends, the client's model is idle (the victim
    if its keep-alive is the shortest) or gone. Seen two ways: a runner whose blob no row
    lists, that no call of ours is loading and younger than :data:`LOAD_LIMIT_S` (processes
    visible; a listed row whose blob is unknown may be any of them); a row no call of ours is
    serving whose ``expires_at`` moves with the clock (§1.5: ``now + d`` until its loading
    request ends; before v0.30 also while it loads; a victim being drained shows ``now + 0``),
    or a client's model listed for the first time (one look cannot tell).
    """
    calling = {m.key for m in models if states.get(m.key, ModelState()).in_flight_since}
    if table.visible:
        listed = [blobs.get(match_key(row.name)) for row in current.models]
        loading_ours = {blobs.get(key) for key in calling}
        loading = [
            runner
            for runner in table.runners
            if runner.blob not in listed
            and runner.blob not in loading_ours
            and table.at - runner.started_at < LOAD_LIMIT_S
        ]
        if len(loading) > listed.count(None):
            return "a client's runner is loading"
    if previous is None:
        return None
    before = {row.name: row for row in previous.models}
    kept = {m.key for m in models if not states.get(m.key, ModelState()).foreign}
    for row in current.models:
        old, key = before.get(row.name), match_key(row.name)
        if key in calling:
            continue
        if old is None and key not in kept:
            # First listed now: a load is made for a request, which it is likely serving; the
            # next look tells (chaos 0.32.15 seed 206: a 600-token first request).
            return f"{row.name} was just loaded by a client"
        if old is None or row.expires_at <= old.expires_at:
            continue
        ahead, was = row.expires_at - current.taken_at, old.expires_at - previous.taken_at
        if abs(ahead - was) <= FIRST_REQUEST_TOLERANCE:
            return f"{row.name} is busy with the request that loaded it"
    return None


def occupied(
    models: Sequence[ModelConfig],
    states: Mapping[str, ModelState],
    current: PsSnapshot,
    rows: Mapping[str, RunningModel | None],
    loading: int,
) -> int:
    """The runners that take room: every row but a held model's of ours (it is about to be
    unloaded, ``look_for_room``), and ``loading``, the runners no row lists yet."""
    mine = _held_rows(models, states, rows)
    return sum(1 for r in current.models if id(r) not in mine) + loading


def _held_rows(
    models: Sequence[ModelConfig],
    states: Mapping[str, ModelState],
    rows: Mapping[str, RunningModel | None],
) -> set[int]:
    """The rows (by ``id``) of held models of ours: their room is about to be given back. A
    held model a client reloaded with its options is left alone (``mismatch``): its room
    stays taken."""
    return {
        id(row)
        for m in models
        if (row := rows.get(m.key)) is not None
        and is_held(st := states.get(m.key, ModelState()))
        and not st.foreign
    }


def room_full(st: ModelState, room: Room) -> bool:
    """Whether a cold load of this model would have to evict: as many others are resident or
    loading as when a load evicted it, or as while it was held (``full_beside``)."""
    return st.full_beside > 0 and room.occupied >= st.full_beside


def wait_for_room(st: ModelState, room: Room) -> str | None:
    """Why a cold load of this model waits, or None: the room is full and what fills it is a
    client's runner that is busy now (loading, or serving its first request). Sent now, our
    load would evict an idle kept model of ours instead (``room_taken``); once that runner is
    idle, Ollama picks the victim by keep-alive, as it would for any client (§4.5)."""
    if room.taken is None or not room_full(st, room):
        return None
    return f"{CAPACITY}: waiting for room: {room.taken}"


def hold_again(
    models: Sequence[ModelConfig],
    states: dict[str, ModelState],
    rows: Mapping[str, RunningModel | None],
    room: Room,
    now: datetime,
) -> list[Event]:
    """A hold tried again whose room was taken before its load went out is held again.

    A capacity retry goes out on evidence of room (``look_for_room``); a client's load begun
    the moment before, not yet visible, takes that room again (chaos 0.32.15 seed 404: a
    client stopped a model and loaded it again 0.1 s later). The retry's load is withdrawn
    while it is still queued (``acting.withdraw``) or never sent, and the hold stands as
    before: fewer models than while held, again, is the only way out.
    """
    events: list[Event] = []
    for model in models:
        st = states[model.key]
        if st.retried_hold is None or rows.get(model.key) is not None:
            continue
        if st.in_flight_since is not None or not room_full(st, room):
            continue
        states[model.key] = replace(
            st,
            held_since=now,
            held_reason=st.retried_hold,
            held_room=st.full_beside,
            retried_hold=None,
        )
        events.append(
            Event(
                "capacity_held_again", model.name, {"listed": room.occupied, "was": st.full_beside}
            )
        )
    return events


def hold_below_higher(
    models: Sequence[ModelConfig],
    states: dict[str, ModelState],
    rows: Mapping[str, RunningModel | None],
    listed: int,
    now: datetime,
) -> list[Event]:
    """A lost kept model whose room is full is held, not loaded, where its load may evict a
    higher-ranked kept model of ours and cannot evict a lower one.

    Ollama picks the victim among idle runners by keep-alive, then by name (§4.5), not by our
    ranks; a client's keep-alive is unknown (its row shows only a lower bound). Chaos
    0.32.15 seed 206 (two slots, a client's 30-minute model in one): ``llama3.2:3b``, lost to
    the client's load, re-warmed and evicted ``tiny``, ranked above it, whose re-warm evicted
    it back. Held, it waits for fewer models (``look_for_room``), as any hold does. Where a
    lower-ranked model of ours is resident too, its load goes out: priorities say the lower
    one gives way (the conflict rule settles it if the victim is the wrong one), as where
    our own load evicted it (``settle_conflict``: one eviction may be chance).

    The room counts the runners ps lists (``listed``, held ones of ours left out), not those
    still loading: a runner of the lost model's own blob that no row lists (its own, ending or
    loading again) would fill it (beside a CPU hog, an ``ollama stop`` made a conflict).
    """
    order = ranked(models)
    ours = [
        m
        for m in order
        if rows.get(m.key) is not None and not states[m.key].foreign and not is_held(states[m.key])
    ]
    events: list[Event] = []
    for i, model in enumerate(order):
        st = states[model.key]
        if rows.get(model.key) is not None or st.in_flight_since is not None or st.foreign:
            continue
        if is_held(st) or is_paused(st, now) or off_window(st):
            continue
        if not room_full(st, Room(occupied=listed)):
            continue
        if st.strikes and st.strikes[-1] == st.last_vanished_at:
            continue  # our own load evicted it: the conflict rule's to settle (one may be chance)
        if _back_since(st):
            continue  # loaded again since: its own runner, not listed yet, fills the room
        higher = [m for m in ours if order.index(m) < i]
        if not higher or len(higher) < len(ours):
            continue
        states[model.key] = held(st, now, higher, room=st.full_beside)
        events.append(
            Event(
                "capacity_conflict",
                model.name,
                {
                    "keeps": [m.name for m in higher],
                    "priority": model.priority,
                    "listed": listed,
                    "hint": "its load would evict a kept model ranked above it: it is held until "
                    "fewer models are loaded",
                },
            )
        )
    return events


def _back_since(st: ModelState) -> bool:
    """Whether our load of it ended since it was lost: the next look lists it. Until then its
    own runner counts among those no row lists (``Room.occupied``), which fills the room."""
    return (
        st.last_warm_ok_at is not None
        and st.last_vanished_at is not None
        and st.last_warm_ok_at >= st.last_vanished_at
    )


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
    waiting = [m for m in ranked(models) if is_held(states[m.key])]
    if not waiting:
        return []
    # A held model's row is its own room, or (ours) about to be unloaded (``_held_rows``).
    # A model a client is (re)loading is absent from ps but takes its room all the same.
    mine = _held_rows(waiting, states, rows)
    room: dict[str, tuple[int, int]] = {}
    for model in waiting:
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
    first = states[waiting[0].key]
    count, vram = room[waiting[0].key]
    if not settled or count >= first.held_room or not _vram_fits(first, vram, loading_elsewhere):
        return []
    states[waiting[0].key] = replace(
        unheld(first), full_beside=first.held_room, retried_hold=first.held_reason or CAPACITY
    )
    return [
        Event(
            "capacity_retry",
            waiting[0].name,
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


def held(
    st: ModelState, since: datetime, stronger: Sequence[ModelConfig], room: int = 0
) -> ModelState:
    """``st`` held for capacity since ``since``, beside the ``stronger`` models: the one shape
    every capacity hold takes (``held_room``: the room known full, else learnt while held)."""
    names = ", ".join(m.name for m in stronger)
    return replace(
        st,
        held_since=since,
        held_reason=f"{CAPACITY}: does not fit beside {names}; held until there is room",
        held_room=room,
        held_vram=0,
        release_sent=False,
        rewarm_not_before=None,
    )


def unheld(st: ModelState) -> ModelState:
    """A hold ended: tried again. Its room is not known to be full until a load shows it
    (``full_beside`` forgotten): an operator's refresh or a new config is the operator's
    word, and ``hold_below_higher`` would otherwise hold it again at once."""
    return replace(
        st,
        held_since=None,
        held_reason=None,
        held_room=0,
        held_vram=0,
        release_sent=False,
        full_beside=0,
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
    holds = [st for st in states.values() if is_held(st)]
    eligible = [m for m in ranked(new) if not off_window(states.get(m.key, ModelState()))]
    if not holds or len(holds) >= len(eligible):
        return None
    since = min(st.held_since for st in holds if st.held_since is not None)
    cut = len(eligible) - len(holds)
    again = dict(states)
    for model in eligible:
        st = states.get(model.key, ModelState())
        if model not in eligible[cut:]:
            again[model.key] = unheld(st) if is_held(st) else st
        elif not is_held(st):
            again[model.key] = held(st, since, eligible[:cut])
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
