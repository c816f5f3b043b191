"""A fake Ollama server that follows ``ollama-behavior.md`` (the reference) to the letter.

Every test, benchmark and demo of the daemon runs against it, so it reproduces the behaviour a
keep-warm daemon has to survive, not just the happy path: Go's ``keep_alive`` parsing and error
texts, last-writer-wins durations, timers that start when the last request ends, the stale-expiry
race (``unload_delay_s`` widens its window), the unload command, serialised FIFO loads that are
invisible in ``/api/ps`` and aborted by a client disconnect, eviction by shortest keep-alive
setting then blob path (not LRU) with revival of a draining victim, reloads on load-time option
differences compared as requested (v0.24, §9), aliases sharing one runner, and ``/api/ps``
byte-for-byte as a real server prints it.

Modules: ``wire`` (Go JSON, times, errors, ``keep_alive`` parsing), ``catalog`` (models and
manifests), ``clock`` (scaled, suspendable waits), ``scheduler`` (``server/sched.go``), ``api``
(the Ollama routes), ``control`` (``/_fake/`` fault routes), ``server`` (:class:`FakeOllama`),
``records`` (what tests inspect), ``cli`` (``ollama-keepwarm fake-ollama``).

**Time.** ``time_scale`` (default 1.0, real time, so any client can use the fake as an Ollama)
divides every duration the fake *waits for*: keep-alive timers, the default keep-alive, loads
(size in GB of 10^9 bytes times ``load_seconds_per_gb``), tokens (``seconds_per_token``), unload
delay, restart downtime, suspend length and injected delays. Times it *reports* are the real
wall clock, so ``expires_at`` = real now + d / ``time_scale``. Infinite keep-alive is not scaled:
it is real now + 2^63-1 ns (year ~2318), as Ollama prints it. Measured durations in replies
(``load_duration``, ``total_duration``, ...) are real nanoseconds too.

**Checklist items (§8) left out, and why.**

- 4 (overflowing numeric ``keep_alive``) is implemented as on amd64 (wraps negative, so the model
  unloads when idle) but not separately tested.
- 30, second half: an OOM during a load with others loaded does evict all and retry once; the
  automatic ``num_ctx`` lowering on that retry is not modelled (the fake has no KV-cache maths).
- 31: context-shift, adapters and projectors are not modelled (no ``shift`` field, no LoRA,
  no vision); v0.30's clamp-before-compare and automatic carry-over are not either: options are
  compared as requested, which is what the v0.24 server in §9 did.
- 33: ``OLLAMA_CONTEXT_LENGTH`` is not read; the tiered default follows ``memory_bytes``.
- 39 (``/api/pull`` streaming): the fake has a fixed catalogue; ``/api/pull`` answers 404.
- 41 (cloud models): nothing is proxied; cloud names are simply unknown (404), so never listed.
- 44 (old-version mode): only ``/api/tags`` capabilities and the ``/api/show`` 404 text follow
  ``version``; no ps stalls, no listing while loading, no pre-v0.2.0 keep-alive reset.
- MLX models (ps blocking during their load) and image-generation models are not modelled.
- The memory model is the weights size only (no KV cache for ``num_ctx`` * parallel), and an
  explicit partial ``num_gpu`` does not skip the 80 % check.
- One generation slot per runner (``OLLAMA_NUM_PARALLEL`` = 1, the current default).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ollama_keepwarm.fake.catalog import (
    Catalog,
    CatalogError,
    CatalogModel,
    Manifest,
    default_catalog,
    load_catalog,
    parse_size,
)
from ollama_keepwarm.fake.records import EvictionRecord, LoadRecord, RecordedRequest, RunnerInfo

if TYPE_CHECKING:
    from ollama_keepwarm.fake.scheduler import OOM_ERROR
    from ollama_keepwarm.fake.server import FakeOllama

__all__ = [
    "OOM_ERROR",
    "Catalog",
    "CatalogError",
    "CatalogModel",
    "EvictionRecord",
    "FakeOllama",
    "LoadRecord",
    "Manifest",
    "RecordedRequest",
    "RunnerInfo",
    "default_catalog",
    "load_catalog",
    "parse_size",
]

_LAZY = {"FakeOllama": "ollama_keepwarm.fake.server", "OOM_ERROR": "ollama_keepwarm.fake.scheduler"}


def __getattr__(name: str) -> Any:
    # The server (and aiohttp) load on first use, so `ollama-keepwarm run`, whose CLI registers
    # the fake-ollama subcommand, does not carry the fake in memory.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
