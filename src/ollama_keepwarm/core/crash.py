"""What a runner's death means for the keeper, as pure code: checks to ask for, the wedge bound.

Ollama does not notice a dead runner until a request reaches it (§4.8): ``/api/ps`` keeps
listing it, unchanged. The crash watch (``daemon/crashwatch.py``) sees a process of Ollama's
end, within a poll of ``cgroup.procs`` or ``/proc``; these functions turn that into plain
decisions:

* **Which exit is a crash** is decided in ``core/plan/processes.py`` from the runner table: the
  runner of a listed kept model gone while a snapshot asked after its exit still lists it. That
  model gets a *check*, a ping without ``keep_alive`` (``plan.RUNNER_CHECK``) that expects a
  reload: a dead runner is reloaded by that very request. An exit whose model leaves
  ``/api/ps`` is an unload, and the usual loss rules apply: no ping, no reload.
* **A repaired runner** came back with Ollama's default keep-alive (the ping carried none):
  renew our lease at once, a cheap call.
* **A wedged runner** is one whose ping does not answer while ``/api/version`` does (a hung
  GPU). A dead runner's ping may take Ollama's health-ping timeout, its wait for GPU memory to
  recover and then a whole load, so the bound is those plus twice the measured load time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import ModelConfig

__all__ = [
    "OLLAMA_PING_TIMEOUT_S",
    "OLLAMA_RECOVERY_S",
    "after_call",
    "cgroup_candidates",
    "record_wedged",
    "wedge_bound_s",
]

OLLAMA_PING_TIMEOUT_S = 10.0
"""Ollama gives up on a runner's health ping after this long, then replaces the runner (§4.6)."""

OLLAMA_RECOVERY_S = 5.0
"""Ollama may wait this long for a dead runner's GPU memory to recover before reloading (§4.8)."""

UNKNOWN_LOAD_S = 30.0
"""The load time assumed for a model we never loaded ourselves (a client loaded it)."""


def after_call(
    st: plan.ModelState, events: Iterable[plan.Event], now: datetime, *, ok: bool
) -> plan.ModelState:
    """Update ``st`` after one of our calls ended: a wedge is over; a repaired runner is renewed.

    ``ok`` says the call succeeded; ``events`` are what ``plan.record_warm_finished`` said.
    """
    if not ok:
        return st
    repaired = any(e.name == "runner_reloaded" and e.fields.get("expected") for e in events)
    st = replace(st, wedged_since=None)
    if repaired and st.check_requested_at is not None:
        # The reload took Ollama's default keep_alive (our ping sent none): claim ours back.
        return replace(st, refresh_requested_at=now, check_requested_at=None)
    return st


def record_wedged(
    model: ModelConfig,
    st: plan.ModelState,
    now: datetime,
    cold_load_s: float | None,
    *,
    ollama_answers: bool,
) -> tuple[plan.ModelState, list[plan.Event], bool]:
    """A refresh outlasted its wedge bound: is it a wedged runner, and is the hook run?

    Only while ``/api/version`` answers (else Ollama itself is away: not this runner's fault),
    and once per episode (until a call of ours succeeds again, :func:`after_call`). Returns the
    state, the events, and whether ``on_runner_wedged`` runs.
    """
    if not ollama_answers or st.wedged_since is not None:
        return st, [], False
    waited = (now - (st.in_flight_since or now)).total_seconds()
    event = plan.Event(
        "runner_wedged",
        model.name,
        {
            "waited_s": round(waited, 3),
            "cold_load_s": cold_load_s,
            "hint": "a refresh of this loaded model gets no answer while Ollama does: "
            "its runner hangs (a hung GPU?). Restarting Ollama frees it.",
        },
    )
    return replace(st, wedged_since=now), [event], True


def wedge_bound_s(cold_load_s: float | None, *, slack_s: float | None = None) -> float:
    """How long a refresh of a listed model may take before its runner counts as wedged.

    ``slack_s`` replaces Ollama's own waits (ping timeout plus GPU recovery), for tests.
    """
    slack = OLLAMA_PING_TIMEOUT_S + OLLAMA_RECOVERY_S if slack_s is None else slack_s
    load = UNKNOWN_LOAD_S if cold_load_s is None else cold_load_s
    return slack + 2.0 * load


def cgroup_candidates(self_cgroup: str, mountinfo: str, unit: str) -> list[str]:
    """Where ``unit``'s cgroup directory may be, most likely first.

    ``self_cgroup`` is ``/proc/self/cgroup`` (``ID:controllers:path`` lines) and ``mountinfo``
    ``/proc/self/mountinfo``. For each mounted hierarchy (v2, or v1 with any controller), the
    unit is looked for beside our own unit (the same slice), then in ``system.slice``.
    """
    ours: dict[str, str] = {}  # controllers field -> our path in that hierarchy
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            ours[parts[1]] = parts[2]
    v2: list[str] = []
    v1: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount_point = fields[4]
        fstype, _source, options = [*line.split(" - ", 1)[1].split(), "", "", ""][:3]
        if fstype == "cgroup2":
            key = ""
        elif fstype == "cgroup":
            given = set(options.split(","))
            key = next((k for k in ours if k and set(k.split(",")) <= given), "")
            if not key:
                continue
        else:
            continue
        root = fields[3]  # the hierarchy's path that is mounted there (a cgroup namespace)
        mine = ours.get(key, "/")
        relative = mine[len(root) :] if root != "/" and mine.startswith(root) else mine
        parent = relative.rsplit("/", 1)[0] if relative.endswith(".service") else ""
        found = v2 if fstype == "cgroup2" else v1
        for slice_path in (parent, "/system.slice"):
            candidate = f"{mount_point.rstrip('/')}{slice_path}/{unit}"
            if slice_path and candidate not in found:
                found.append(candidate)
    # cgroup v2 first (one hierarchy holds every process), then v1's in mount order.
    return v2 + v1
