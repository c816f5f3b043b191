"""What to warm, when, and what is unsafe: the keeper's whole judgement, as pure code.

Everything here is a function of plain data: the configured models, the last ``/api/ps``
snapshot, the per-model :class:`ModelState` the keeper carries between looks, and ``now``. No
I/O, no clocks, no asyncio: the keeper (``daemon/host.py``) observes, calls these, and acts.

The rules, and the Ollama facts behind them (``ollama-behavior.md``):

* **Absent** and no warm of ours in flight: warm now. A model that is loading is invisible in
  ``/api/ps`` (§3.5), so an absent model with our warm in flight is *loading*, not gone. A
  snapshot taken before our last warm ended cannot say either: wait for the next look.
* **Present**: renew the lease ``refresh_before`` ahead of ``expires_at`` (never later than half
  the lease, ours or one a client set), and ping it at least every ``health_interval``: a crashed
  runner stays listed until the next request for it, which makes Ollama notice and reload it
  (§4.8). A ping carries no ``keep_alive``, so it never revives a runner Ollama is draining for
  an eviction (§4.5, §1.3); only a lease renewal carries it.
* **Frozen lease**: while a client's request is in flight ``expires_at`` does not move, and after
  a suspend it lies in the past (§1.5, §7.7). Only when it is the very value it had when we last
  renewed is it frozen: then wait a whole ``stale_interval`` before the next renewal, never a
  storm. A lease a client moved (a shorter ``keep_alive``) is renewed before it ends.
* **Options mismatch**: a runner listed with another ``context_length`` than our warm gave, or
  two renewals in a row that took as long as a load, was loaded with other load-time options
  than ours; every call of ours would reload it (§4.6). Leave it alone while it is resident, say
  once what to put in the config, and warm it again only when it is gone.
* **Never fight**: Ollama evicts by keep-alive *setting*, not by our priorities (§4.5), so kept
  models that do not fit together evict each other forever if re-warmed blindly. When our loads
  evicted kept models twice, the lowest-ranked kept model is held (and unloaded if resident, so
  the higher ones fit); it is tried again only when there is evidence of room: fewer models
  listed than while it was held, a new config, or an operator's refresh. Never on a timer.
* **Losses** to other clients are re-warmed at once, then with growing delays if they repeat,
  so a user's own big model is not thrashed out every minute.
* **Windows** (``core/windows.py``): outside its calendar windows a model is held like a
  paused one: not renewed, so its lease runs out (``after_window = "expire"``), or unloaded
  once (``"unload"``); a model gone while outside is released, not repaired. A pause wins
  over a window: the window never resumes a paused model.
* **Errors** back a model off exponentially with jitter; the other models carry on. A load that
  timed out was aborted inside Ollama (§2.6): the next one waits longer, never at once.
"""

from __future__ import annotations

from ollama_keepwarm.core.plan.acting import (
    adopt_config,
    leave_alone,
    record_verify_failed,
    still_wanted,
    unconfirmed,
    verify_after,
)
from ollama_keepwarm.core.plan.calls import record_warm_finished, record_warm_started
from ollama_keepwarm.core.plan.capacity import CONFLICT_STRIKES, release_holds
from ollama_keepwarm.core.plan.decide import decide
from ollama_keepwarm.core.plan.errors import (
    backoff_delay_s,
    classify_error,
    forgive_timeouts,
    load_timeout_s,
    record_call_crashed,
    record_warm_failed,
    record_warm_timed_out,
    show_failure,
)
from ollama_keepwarm.core.plan.holds import (
    apply_pause,
    apply_window,
    pause_with_unload,
    record_release_failed,
    record_release_sent,
)
from ollama_keepwarm.core.plan.jumps import remap_leases, remember_leases, shift_times
from ollama_keepwarm.core.plan.leases import stale_interval
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
    loading_elsewhere,
    note_argv_mismatch,
    note_client_reload,
    note_runner_exits,
    queued_not_wedged,
    settle_runner_exits,
    started_by_others,
)
from ollama_keepwarm.core.plan.views import describe_state, summarize

__all__ = [
    "CAPACITY",
    "CONFLICT_STRIKES",
    "MISMATCH",
    "OUTSIDE",
    "RESUMED",
    "RUNNER_CHECK",
    "Action",
    "Decision",
    "Event",
    "ModelState",
    "Observation",
    "adopt_config",
    "apply_pause",
    "apply_window",
    "backoff_delay_s",
    "classify_error",
    "decide",
    "describe_state",
    "forgive_timeouts",
    "leave_alone",
    "load_timeout_s",
    "loading_elsewhere",
    "match_rows",
    "note_argv_mismatch",
    "note_client_reload",
    "note_runner_exits",
    "observe",
    "pause_with_unload",
    "queued_not_wedged",
    "ranked",
    "record_call_crashed",
    "record_release_failed",
    "record_release_sent",
    "record_verify_failed",
    "record_warm_failed",
    "record_warm_finished",
    "record_warm_started",
    "record_warm_timed_out",
    "release_holds",
    "remap_leases",
    "remember_leases",
    "settle_runner_exits",
    "shift_times",
    "show_failure",
    "stale_interval",
    "started_by_others",
    "still_wanted",
    "summarize",
    "unconfirmed",
    "verify_after",
]
