"""What to warm, when, and what is unsafe: the keeper's whole judgement, as pure code.

Everything here is a function of plain data: the configured models, the last ``/api/ps``
snapshot, the per-model :class:`ModelState` the keeper carries between looks, and ``now``. No
I/O, no clocks, no asyncio: the keeper (``daemon/host.py``) observes, calls these, and acts.

A newcomer reads this first. Each family of rules lives in one module, named in brackets.
The rules, and the Ollama facts behind them (``ollama-behavior.md``):

* **Absent** and no warm of ours in flight: warm now (``decide``). A model that is loading is
  invisible in ``/api/ps`` (§3.5), so an absent model with our warm in flight is *loading*, not
  gone. A snapshot taken before our last call ended cannot say either: wait for the next look
  (``acting.unconfirmed``).
* **Present** (``leases``): call it ``refresh_before`` ahead of ``expires_at`` (never later than
  half the lease, ours or one a client set), and at least every ``health_interval``: a crashed
  runner stays listed until the next request for it (§4.8). Once the runner's duration is ours,
  the call is a *ping* without ``keep_alive``: Ollama restarts the timer with the duration it
  has (§1.3), and a ping never revives a runner drained for another load (§4.5). ``keep_alive``
  goes out only to claim a lease a client set, only while ``expires_at`` lies ahead (a passed
  one means busy or stopping), and only at the look right after a ping of ours moved it past
  the ping's end (the runner was idle, ``d`` > 0: a load's victim marked while busy shows its
  old lease, and a claim would revive it); and once after a resume.
* **Frozen lease** (``leases``): ``expires_at`` unchanged by our last call means busy (not
  after a call that failed: Ollama may never have served it, ``errors``). Ollama
  never expires a busy model: nothing is due until it moves. When another client's load needs
  the room, the kept model gives way and comes back by the loss rules.
* **Draining** (``leases``): ``expires_at`` passed and still within a poll before the look,
  a stale interval after our last call: a runner with ``d`` = 0, busy (§1.5). No call until it
  goes: none could renew it, and any holds it busy for the load that waits for it.
* **Wall-clock steps** (``jumps``): held times move by the step, and a lease printed before it
  is read corrected: Ollama's timers are monotonic.
* **Options mismatch** (``mismatch``, ``processes``): another ``context_length`` than our warm
  gave, two renewals in a row as long as a load, a client's request that reloaded our runner,
  or (v0.30+) its argv with other values of our configured options (or a ``num_thread`` we
  leave unset): leave that runner alone
  while it is resident, say once what to configure; it lasts while the client keeps reloading
  (a client's runner back at our context too: ps shows no other load option), and ends when
  the model was gone longer than a reload takes, on our own load, or on a config change.
* **Never fight** (``capacity``): Ollama evicts by keep-alive *setting*, not by our priorities
  (§4.5). When our loads evicted kept models twice, or once where runner processes show it (a
  kept model's runner ended and the next runner to start was our load's), the lowest-ranked
  kept model that takes room (listed, loading for us, or just evicted by our load) is held
  (and unloaded if resident); it is tried again only on evidence of room:
  fewer models listed than while it was held (a held model a client reloaded and
  we leave alone still takes its room) and, where its VRAM is known, no more VRAM taken
  than beside it before or than freed since as large as it; a new set of models or
  options, or an operator's refresh. Never on a timer. A config that only ranks again keeps
  as many held, by the new ranks. A retry whose room a client's load took before ours went
  out is held again (its queued load withdrawn). Where a load evicted a kept model (the room
  was full), its re-warm waits, as a conflict, while what fills the room is a client's runner
  loading or serving the request that loaded it: busy, it cannot be Ollama's victim, and our
  load would evict an idle kept model of ours instead (``Room``, ``wait_for_room``). Where
  the room is as full again and every kept model of ours resident ranks above it, a lost
  model is held outright: its load could evict a higher one (``hold_below_higher``).
* **Losses** (``losses``): the cause from evidence. Where runner processes are visible, a loss
  with no client's runner behind it is re-warmed at the next look however soon after our own
  load (once a client was seen reloading it, a lease lapsed after our last call, before the
  one it set, is such a loss: it waits a look); otherwise, or after a client's reload, soon
  after our own load it waits a poll or 1.5 cold loads. Repeats back off, so a user's own big
  model is not thrashed out every minute.
  Only a lease that ran its course expired: one already at its end when first seen (``d`` = 0,
  a runner Ollama drains for an eviction or an ``ollama stop``) was taken away.
* **Runner processes** (``processes``, where visible): an exit whose model a snapshot asked
  ``EXIT_SETTLE_S`` after it still lists is a crash (check that model only); one whose model
  left ps is an unload; a runner for a kept blob we did not start is a client's load, never
  raced (the runners are read again just before a load of ours goes out); a call of ours
  starts one runner, so a second start of its blob during it is a client's, and so is a
  runner whose process had started before our call was sent; a client's runner is a reload
  (other options) only in place of a runner of that model (``reloads``); a call queued
  behind another load is not wedged. Where not visible: a fresh look after an exit, and
  the listed models are checked only if no model left ps.
* **Holds** (``holds``): paused, or outside its calendar windows (``core/windows.py``), a model
  is not called: its lease runs out (``after_window = "expire"``), or it is unloaded once
  (``"unload"``, or ``pause --unload``, once no call of ours is in flight); a model gone then
  is released, not repaired. A release is noted once Ollama took it; a failed one is sent
  once more at the next decision, then after a back-off; only that back-off delays a release
  (a failed load's does not: its room is what a kept model below may wait for).
* **Errors** (``errors``): a model backs off exponentially with jitter; the others carry on. A
  load that timed out was aborted inside Ollama (§2.6): the next one waits longer. A call that
  raised anything backs off too. A failed call on a listed model is tried again before its
  lease ends (at most half what is left, 1 s at least). A ``/api/show`` that timed out is
  asked again later.
* **Around the keeper's calls** (``acting``): a queued call is made only if still wanted; a
  refresh still in flight when the model must be left alone is withdrawn, and so is a cold
  load queued behind a client's runner of it (listed with other options, or started during
  our call before ours) or whose room is full again (Ollama skips a queued request
  whose client left, so it never reloads a client's runner); primes never reach
  a model left alone, nor a slot a client filled (only loads nobody used yet are primed); a
  config change ends holds and mismatches; a resume verifies. Where runners are visible a
  cold load goes out only a moment after the last runner exit and the end of our last call
  (``processes.queue_settles_at``): a client's load Ollama queued behind either starts its
  runner first, and the read just before our send sees it.
"""

from __future__ import annotations

from ollama_keepwarm.core.plan.acting import (
    adopt_config,
    leave_alone,
    prime_cause,
    queue_order,
    record_verify_failed,
    repulled,
    still_wanted,
    unconfirmed,
    verify_after,
    withdraw,
)
from ollama_keepwarm.core.plan.calls import (
    record_call_withdrawn,
    record_warm_finished,
    record_warm_started,
)
from ollama_keepwarm.core.plan.capacity import (
    CONFLICT_STRIKES,
    Room,
    occupied,
    release_holds,
    room_taken,
)
from ollama_keepwarm.core.plan.decide import decide
from ollama_keepwarm.core.plan.errors import (
    backoff_delay_s,
    classify_error,
    down_poll_delay_s,
    forgive_timeouts,
    load_timeout_s,
    record_call_crashed,
    record_warm_failed,
    record_warm_timed_out,
    retry_delay_s,
    show_failure,
)
from ollama_keepwarm.core.plan.holds import (
    apply_pause,
    apply_window,
    pause_with_unload,
    record_release_failed,
    record_release_sent,
)
from ollama_keepwarm.core.plan.jumps import remap_leases, remember_leases, shift_times, wall_step
from ollama_keepwarm.core.plan.leases import CLAIM, stale_interval
from ollama_keepwarm.core.plan.losses import observe
from ollama_keepwarm.core.plan.model import (
    CAPACITY,
    MISMATCH,
    OUTSIDE,
    RESUMED,
    RUNNER_CHECK,
    Action,
    Decision,
    Event,
    ModelState,
    Observation,
    match_rows,
    ranked,
)
from ollama_keepwarm.core.plan.processes import (
    EVICTION_GAP_S,
    EXIT_SETTLE_S,
    QUEUE_SETTLE_S,
    attribute_starts,
    client_loading,
    evicted_by_ours,
    exit_settles_at,
    loading_elsewhere,
    note_argv_mismatch,
    note_client_reload,
    note_runner_exits,
    queue_settles_at,
    queued_not_wedged,
    reloads,
    settle_runner_exits,
    unlisted_runners,
)
from ollama_keepwarm.core.plan.views import all_warm, describe_state, first_pass_done, summarize

__all__ = [
    "CAPACITY",
    "CLAIM",
    "CONFLICT_STRIKES",
    "EVICTION_GAP_S",
    "EXIT_SETTLE_S",
    "MISMATCH",
    "OUTSIDE",
    "QUEUE_SETTLE_S",
    "RESUMED",
    "RUNNER_CHECK",
    "Action",
    "Decision",
    "Event",
    "ModelState",
    "Observation",
    "Room",
    "adopt_config",
    "all_warm",
    "apply_pause",
    "apply_window",
    "attribute_starts",
    "backoff_delay_s",
    "classify_error",
    "client_loading",
    "decide",
    "describe_state",
    "down_poll_delay_s",
    "evicted_by_ours",
    "exit_settles_at",
    "first_pass_done",
    "forgive_timeouts",
    "leave_alone",
    "load_timeout_s",
    "loading_elsewhere",
    "match_rows",
    "note_argv_mismatch",
    "note_client_reload",
    "note_runner_exits",
    "observe",
    "occupied",
    "pause_with_unload",
    "prime_cause",
    "queue_order",
    "queue_settles_at",
    "queued_not_wedged",
    "ranked",
    "record_call_crashed",
    "record_call_withdrawn",
    "record_release_failed",
    "record_release_sent",
    "record_verify_failed",
    "record_warm_failed",
    "record_warm_finished",
    "record_warm_started",
    "record_warm_timed_out",
    "release_holds",
    "reloads",
    "remap_leases",
    "remember_leases",
    "repulled",
    "retry_delay_s",
    "room_taken",
    "settle_runner_exits",
    "shift_times",
    "show_failure",
    "stale_interval",
    "still_wanted",
    "summarize",
    "unconfirmed",
    "unlisted_runners",
    "verify_after",
    "wall_step",
    "withdraw",
]
