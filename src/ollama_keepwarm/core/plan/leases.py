"""Leases and renewals: when a listed model is called, and whether the call carries ``keep_alive``.

Ollama restarts a runner's timer with its current duration ``d`` whenever its last request ends
(§1.3), and a request without ``keep_alive`` leaves ``d`` alone: once ``d`` is ours, a *ping* (the
same call without ``keep_alive``) renews the lease as well as a renewal does, and it can never
revive a runner Ollama is draining for another load (§4.5: draining sets ``d`` to 0, and only a
request carrying ``keep_alive`` sets it back). So:

* **Due**: ``refresh_before`` ahead of ``expires_at`` (never later than half the lease, ours or a
  shorter one a client set), and at least every ``health_interval`` (a ping: a crashed runner is
  noticed only by a request, §4.8).
* **With ``keep_alive``** only when the runner's duration is not ours (never set by us, or a
  client's request set another one since) *and* the model is idle (``expires_at`` ahead): a
  listed model whose ``expires_at`` has passed is busy or stopping, and a busy model may be the
  one another load waits for. And only *proved* idle: a runner a load marked as its victim
  while busy shows its old ``expires_at`` (§4.5), and a ``keep_alive`` would revive it while
  the load waits. So a client's lease is renewed first by a ping (which cannot revive), and
  claimed at the look right after it only if ``expires_at`` moved past the ping's end: the
  timer restarted, so the runner was idle then with ``d`` > 0, not drained.
* **Frozen**: ``expires_at`` is the value it had when our last call started, after that call
  ended: the model is busy (§1.3, Ollama never expires a busy model). Nothing is due until it
  moves: no renewal storm, no revival of a runner drained for a client's load.
* **Stopping or busy**: ``expires_at`` has passed although a call of ours ended within a stale
  interval. A runner drained for a client's reload has ``d`` = 0, so each request that ends on
  it leaves ``expires_at`` at that moment, in the past, a new value each time (never frozen);
  pinging it again at once would hold it busy while the client's load waits. The next call
  waits a whole stale interval.
* **Draining**: once that interval is over, a lease that still ends within a poll before the
  look (Ollama shows now + ``d`` for a runner whose first request has not ended, §1.5: ``d`` = 0
  gives the look's own time) is a runner whose duration is 0, busy: a drain for another load,
  a client's ``keep_alive: 0``. Ollama unloads it once idle; no call of ours can renew it (a
  ping leaves ``d`` at 0) and any call holds it busy for whoever waits: nothing is due until it
  goes or its ``expires_at`` stops tracking the look. A crashed runner keeps an old value.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta

from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.plan.model import ModelState
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

FOREVER = timedelta(days=100 * 365)
"""An ``expires_at`` this far ahead is a ``keep_alive = -1`` lease (Ollama prints year 2318)."""

LEASE_TOLERANCE_S = 1.0
"""Slack when telling a client's keep-alive duration from ours, beyond one poll interval."""

FROZEN = "busy: its lease is frozen while requests run; Ollama never expires a busy model"
"""The reason given while a kept model is busy."""

STOPPING = "stopping or busy: its lease lapsed again after our call"
"""The reason given while a kept model's lease stays lapsed after a call of ours."""

DRAINING = "draining: its lease ends as each request ends; Ollama unloads it once idle"
"""The reason given while a kept model's ``expires_at`` tracks the look's own time (``d`` = 0)."""

PINGED_MOVED = timedelta(seconds=0.1)
"""How far past our ping's end a restarted ``expires_at`` must lie to prove ``d`` > 0."""

CLAIM = "claim the lease: our ping showed the runner idle"
"""The reason given when a client's lease is taken back, right after the ping that proved it
safe."""


def stale_interval(daemon: DaemonConfig) -> timedelta:
    """The least time between two looks that could show a moved ``expires_at``."""
    return timedelta(seconds=max(daemon.poll_interval_s, daemon.refresh_before_s))


def is_forever(row: RunningModel, now: datetime) -> bool:
    """Whether ``row``'s lease is infinite (``keep_alive = -1``)."""
    return row.expires_at - now > FOREVER


def is_frozen(st: ModelState, row: RunningModel, now: datetime) -> bool:
    """Our last call ended and ``expires_at`` is still what it was when it started: busy."""
    return (
        st.in_flight_since is None
        and st.last_warm_ok_at is not None
        and st.renewed_expiry is not None
        and row.expires_at == st.renewed_expiry
        and not is_forever(row, now)
    )


def may_carry_keep_alive(row: RunningModel, now: datetime) -> bool:
    """A call may carry ``keep_alive`` only to an idle model: ``expires_at`` still ahead.

    A listed model whose ``expires_at`` has passed is busy (its lease frozen at a past value)
    or being unloaded; either way a ``keep_alive`` could revive what Ollama is draining.
    """
    return row.expires_at > now


def is_draining(row: RunningModel, daemon: DaemonConfig, seen_at: datetime, now: datetime) -> bool:
    """``expires_at`` has passed and lies within a poll before the look that listed it."""
    return seen_at - timedelta(seconds=daemon.poll_interval_s) <= row.expires_at <= now


def next_renewal(
    model: ModelConfig,
    daemon: DaemonConfig,
    st: ModelState,
    row: RunningModel,
    now: datetime,
    seen_at: datetime | None = None,
) -> tuple[datetime | None, str, bool]:
    """When the next call for a listed model is due (None: not until ps changes), why, and
    whether it carries our ``keep_alive``; ``seen_at`` is when ps listed ``row``."""
    assert st.last_warm_ok_at is not None
    if is_frozen(st, row, now):
        return None, FROZEN, False
    quiet_until = st.last_warm_ok_at + stale_interval(daemon)
    if row.expires_at <= now < quiet_until:
        return quiet_until, STOPPING, False
    if seen_at is not None and is_draining(row, daemon, seen_at, now):
        return None, DRAINING, False
    if (
        not st.lease_ours
        and may_carry_keep_alive(row, now)
        and _pinged_idle(daemon, st, row, seen_at)
    ):
        return now, CLAIM, True
    due, reason, renew = row.expires_at - _margin(model, daemon, st, row), "lease ending", False
    health_due = st.last_warm_ok_at + timedelta(seconds=daemon.health_interval_s)
    if health_due < due:
        due, reason, renew = health_due, "health check", False
    return due, reason, renew


def _pinged_idle(
    daemon: DaemonConfig, st: ModelState, row: RunningModel, seen_at: datetime | None
) -> bool:
    """The look right after our last call (a ping: the duration was not ours) shows
    ``expires_at`` restarted past that call's end: the runner was idle then, with ``d`` > 0."""
    ended = st.last_warm_ok_at
    if ended is None or seen_at is None or st.in_flight_since is not None:
        return False
    if st.renewed_expiry is None:
        return False  # our last call was a load (or none), not a call on a listed runner
    since = (seen_at - ended).total_seconds()
    fresh = 0 <= since <= daemon.poll_interval_s + LEASE_TOLERANCE_S
    # d = 0 restarts the timer at the end itself, which the server stamps before we receive it;
    # a little room for the clocks of two hosts.
    moved = row.expires_at != st.renewed_expiry and row.expires_at > ended + PINGED_MOVED
    return fresh and moved


def note_lease(
    model: ModelConfig,
    daemon: DaemonConfig,
    st: ModelState,
    row: RunningModel,
    previous: PsSnapshot | None,
    now: datetime,
) -> ModelState:
    """Notice a lease a client set: a new ``expires_at`` no call of ours explains, whose length
    is not our ``keep_alive``. The next renewal is then a ping, and the claim follows it."""
    if st.lease_seen is not None and st.lease_seen[0] == row.expires_at:
        return st  # the same lease as before
    if previous is None or not st.lease_ours:
        return st
    ours_ended = st.last_warm_ok_at is not None and st.last_warm_ok_at > previous.taken_at
    if ours_ended or st.in_flight_since is not None:
        return st  # our own call's lease (or one about to be)
    longest = (row.expires_at - previous.taken_at).total_seconds()
    shortest = (row.expires_at - now).total_seconds()
    slack = daemon.poll_interval_s + LEASE_TOLERANCE_S
    if math.isinf(model.keep_alive_s):
        ours = is_forever(row, now)
    else:
        ours = (
            not is_forever(row, now)
            and shortest <= model.keep_alive_s + slack
            and longest >= model.keep_alive_s - slack
        )
    return st if ours else replace(st, lease_ours=False)


def _margin(
    model: ModelConfig, daemon: DaemonConfig, st: ModelState, row: RunningModel
) -> timedelta:
    """How long before ``expires_at`` to renew: ``refresh_before``, at most half the lease.

    The lease is ours, or a shorter one a client set (§1.3, last writer wins): its length is
    at least the time from when ps first showed this ``expires_at`` to that time.
    """
    margin = min(daemon.refresh_before_s, model.keep_alive_s / 2)
    if st.lease_seen is not None and st.lease_seen[0] == row.expires_at:
        seen = (row.expires_at - st.lease_seen[1]).total_seconds()
        if seen > 0:
            margin = min(margin, seen / 2)
    return timedelta(seconds=margin)
