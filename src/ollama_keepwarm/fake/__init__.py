"""A fake Ollama server that follows ``ollama-behavior.md`` (the reference) to the letter.

Every test, benchmark and demo of the daemon runs against it, so it reproduces the behaviour a
keep-warm daemon has to survive, not just the happy path: Go's ``keep_alive`` parsing and error
texts, last-writer-wins durations, timers that start when the last request ends, the stale-expiry
race (``unload_delay_s`` widens its window), the unload command, serialised FIFO loads that are
invisible in ``/api/ps`` and aborted by a client disconnect, eviction by shortest keep-alive
setting then blob path (not LRU) with revival of a draining victim, reloads on load-time option
differences, aliases sharing one runner, and ``/api/ps`` byte-for-byte as a real server prints it.

Modules: ``versions`` (which Ollama it imitates), ``options`` (load-time options and the reload
rule, pure), ``wire`` (Go JSON, times, errors, ``keep_alive`` parsing), ``catalog`` (models and
manifests), ``clock`` (scaled, suspendable waits), ``scheduler`` (``server/sched.go``),
``prompt_cache`` (slots and prefix reuse), ``api`` (the Ollama routes), ``control``
(``/_fake/`` fault routes), ``server`` (:class:`FakeOllama`),
``records`` (what tests inspect), ``cli`` (``ollama-keepwarm fake-ollama``).

**Versions.** ``FakeOllama(ollama_version=...)`` and ``fake-ollama --ollama-version`` (default
0.32.15, the current stable) set what ``/api/version`` says and which rules apply. Everything
that differs changed in v0.30.0 (the llama-server architecture), except the unload order, which
changed in v0.32.4 (``/api/ps`` took the scheduler's lock); the ≤ 0.29 column was checked
against a real v0.24.0 (reference §9), the ≥ 0.30 one against a real v0.32.15 (§10), both
against ``server/sched.go`` at those tags. A dev build's ``0.0.0`` counts as the newest.

======================================================  =================  =================
behaviour                                               up to 0.29         0.30 and later
======================================================  =================  =================
``num_ctx`` compared (§4.6)                             as requested       clamped to the
                                                                           training context
runner keeps ``num_ctx``                                as requested       as clamped
both automatic ``num_ctx`` / ``num_batch`` are equal    no                 yes
automatic ``num_batch``                                 512                512/1024/2048 by
                                                                           context
embedding model's default ``num_batch``                 512                min(2048, ctx),
                                                                           explicit
``use_mmap`` unset matches the runner's automatic one   (none is chosen)   yes (off on CPU)
``shift`` must match the runner's (default on,          no (ignored)       yes
off for deepseek2)
``main_gpu`` unset differs from 0                       no                 yes
``draft_num_predict`` is a load option                  no                 yes
a negative ``num_gpu`` is ignored                       yes                yes
sampling options, ``keep_alive`` reload                 never              never
additional model must fit in (§4.4)                     all its layers in  80 % of free VRAM;
                                                        free VRAM          explicit partial
                                                                           ``num_gpu`` skips
out-of-memory load                                      500 at once        evict all others
                                                                           (lower automatic
                                                                           ``num_ctx``), retry
                                                                           once
runtime OOM (``runtime_oom()``)                         nothing else       every model expires
loading model absent from ``/api/ps`` (§3.5, §9)        yes (seen: 0.24)   yes
``/api/show`` 404 names                                 ``x``              ``x:latest``
``/api/tags`` ``capabilities``, trained lengths         absent             present
load error texts name the runner                        ``llama runner``   ``llama-server``
an unload (§4.9): process exit and ``/api/ps`` row      exit, then row     row, then exit
(the right column from v0.32.4 only)                    ~1 ms later        ~14 ms later
======================================================  =================  =================

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
- 31: adapters and projectors are not modelled (no LoRA, no vision models).
- 33: ``OLLAMA_CONTEXT_LENGTH`` is not read; the tiered default follows ``memory_bytes``.
- 39 (``/api/pull`` streaming): the fake has a fixed catalogue; ``/api/pull`` answers 404.
- 41 (cloud models): nothing is proxied; cloud names are simply unknown (404), so never listed.
- 44 (old-version mode): the rules in the table above follow the version; ps stalls and crashes
  during unloads (before v0.32.4), listing loading models (which §9 did not see on v0.24.0) and
  the pre-v0.2.0 keep-alive reset are not modelled.
- MLX models (ps blocking during their load) and image-generation models are not modelled.
- The memory model is the weights size only (no KV cache for ``num_ctx`` * parallel, no batch
  surcharge), and the automatic ``num_batch`` is not lowered to fit memory.
- Prompt processing is crude: a word is a token, a chat template is ``<|role|> ... <|end|>``.
  Each runner has ``num_parallel`` slots (``OLLAMA_NUM_PARALLEL``, 1 by default as today), each
  caching its last prompt; a request pays ``seconds_per_prompt_token`` per token past the
  longest common prefix (``prompt_cache``). Generated tokens are not cached.
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
from ollama_keepwarm.fake.versions import CURRENT_STABLE, Behaviour, VersionError

if TYPE_CHECKING:
    from ollama_keepwarm.fake.scheduler import OOM_ERROR
    from ollama_keepwarm.fake.server import FakeOllama

__all__ = [
    "CURRENT_STABLE",
    "OOM_ERROR",
    "Behaviour",
    "Catalog",
    "CatalogError",
    "CatalogModel",
    "EvictionRecord",
    "FakeOllama",
    "LoadRecord",
    "Manifest",
    "RecordedRequest",
    "RunnerInfo",
    "VersionError",
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
