"""Leases and renewals: when a listed model is renewed (with ``keep_alive``) or pinged (without).

Renew ``refresh_before`` ahead of ``expires_at`` (never later than half the lease, ours or a
client's), ping at least every ``health_interval``; a lease frozen while busy is not renewed again
before ``stale_interval``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.plan.model import ModelState
from ollama_keepwarm.core.ps import RunningModel


def stale_interval(daemon: DaemonConfig) -> timedelta:
    """The least time between two renewals that could not move ``expires_at``."""
    return timedelta(seconds=max(daemon.poll_interval_s, daemon.refresh_before_s))


def next_renewal(
    model: ModelConfig, daemon: DaemonConfig, st: ModelState, row: RunningModel
) -> tuple[datetime, str, bool]:
    """When the next call for a listed model is due, why, and whether it renews the lease."""
    assert st.last_warm_ok_at is not None
    due, reason, renew = row.expires_at - _margin(model, daemon, st, row), "lease ending", True
    health_due = st.last_warm_ok_at + timedelta(seconds=daemon.health_interval_s)
    if health_due < due:
        due, reason, renew = health_due, "health check", False
    frozen = st.renewed_expiry is not None and row.expires_at == st.renewed_expiry
    if frozen and st.last_warm_ok_at >= due:
        # We renewed, yet expires_at is the very value it had then: the model is busy (or we
        # were suspended). Ollama restarts the full lease when its requests end (§1.3).
        due, reason, renew = (
            st.last_warm_ok_at + stale_interval(daemon),
            "lease frozen while busy",
            True,
        )
    return due, reason, renew


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
