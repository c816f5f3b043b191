"""Which kept models someone else used between two looks, from what the keeper can see.

The keeper does not stand in the clients' path, so it learns of a use only from its traces
(reference §1.3, §1.5, §4.9):

* **a foreign load**: the model is listed now and was not at the last look, and no call of ours
  for it was in flight or ended since that look was asked; or a runner process for it started
  with no load of ours (where processes are visible). The client found the model cold.
* **a moved lease**: ``expires_at`` differs from the last look's with no call of ours in
  between. Ollama moves it only when a request *ends* (to end + keep_alive), so a use is seen
  when it finishes; a request still in flight freezes it and is seen later.

What it cannot see: a request that neither loads the model nor moves its lease. Two requests
ending in the same instant are one use; every use within one 15-minute slot counts once anyway
(``core/learned.py``). A look whose snapshot was asked before our own call ended says nothing
about that model: the change may be ours.

Plain data in, plain data out: rows already matched to configured models by the caller
(``plan.match_rows``), the keys our calls touched, and optional runner starts by key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from ollama_keepwarm.core.ps import RunningModel

__all__ = ["Use", "foreign_uses", "started_keys"]

Rows = Mapping[str, RunningModel | None]


@dataclass(frozen=True, slots=True)
class Use:
    """One use of a kept model by someone else: ``cold`` when the client had to load it."""

    key: str
    kind: Literal["loaded", "lease", "runner"]

    @property
    def cold(self) -> bool:
        """The client found the model unloaded and paid a load."""
        return self.kind != "lease"


def foreign_uses(
    before: Rows | None,
    after: Rows,
    ours: Collection[str],
    runner_starts: Collection[str] = (),
) -> tuple[Use, ...]:
    """The kept models (keys of ``after``) someone else used between two looks.

    ``before`` None (the first look, or the first after an outage) says nothing: a model
    listed then may have been loaded by anyone. ``ours`` are the keys with a call of ours in
    flight, or ended after ``before`` was asked. ``runner_starts`` are keys whose runner process
    started since ``before`` (``core/runners.py``), ours excluded by the same rule.
    """
    uses: list[Use] = []
    for key, row in after.items():
        if key in ours:
            continue
        if key in runner_starts:
            uses.append(Use(key, "runner"))
            continue
        if before is None or row is None:
            continue
        old = before.get(key)
        if old is None or old.digest != row.digest:
            uses.append(Use(key, "loaded"))  # absent before, or other weights loaded since
        elif old.expires_at != row.expires_at:
            uses.append(Use(key, "lease"))
    return tuple(uses)


def started_keys(
    started_blobs: Collection[str], blobs: Mapping[str, str], keys: Collection[str]
) -> frozenset[str]:
    """The kept models (``keys``) whose weights blob a runner started with (``runner started``
    events of ``core/runners.py``: ``RunnerProcess.blob``), for ``runner_starts``.

    ``blobs`` maps match keys to blob digests as learnt from ``/api/show``; a model whose blob
    is not known yet cannot be matched (its load is still seen when ``/api/ps`` lists it).
    """
    started = set(started_blobs)
    return frozenset(k for k in keys if blobs.get(k) in started)
