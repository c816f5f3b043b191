"""Which Ollama the fake imitates: behaviour flags derived from one version string.

The scheduler and the routes ask these flags, never a version number, so the version history
lives here and in the table of the package docstring. Every flag below changed in v0.30.0 (the
llama-server architecture; in Ollama's history one commit, 9db4bdbad, brought all of them), so
today there are two behaviours: up to v0.29 ("legacy", checked against a real v0.24.0, reference
§9) and from v0.30 (checked against a real v0.32.15, §10). One exception: ``unload_row_first``
changed in v0.32.4, where ``/api/ps`` started to take the scheduler's lock (commit 6cd40001a).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CURRENT_STABLE", "Behaviour", "VersionError", "parse_version"]

CURRENT_STABLE = "0.32.15"
"""The version most users run (issue 11); the fake's default."""

_OOM_LLAMA_SERVER = (
    "llama-server reported out-of-memory during startup: cudaMalloc failed: out of memory"
)
_OOM_LLAMA_RUNNER = "llama runner process has terminated: cudaMalloc failed: out of memory"
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.]+)?")


class VersionError(ValueError):
    """A version string the fake cannot place; the message says what it expects."""


def parse_version(text: str) -> tuple[int, int, int]:
    """Return (major, minor, patch) of ``0.32.15``, ``v0.30.0`` or ``0.33.0-rc2``.

    A pre-release counts as its release: a tag like v0.30.0-rc1 already holds the v0.30 code.

    Raises:
        VersionError: for anything else.
    """
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        raise VersionError(
            f"invalid Ollama version {text!r}: expected MAJOR.MINOR.PATCH, e.g. {CURRENT_STABLE}"
        )
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class Behaviour:
    """What one Ollama version does where versions differ (see the package docstring's table)."""

    version: str
    """The version string as given; ``/api/version`` reports it verbatim."""
    clamps_num_ctx: bool
    """``needsReload`` clamps the new ``num_ctx`` to the training context and the runner keeps
    the clamped value; before, both sides were compared as requested (§4.6, §9, §10)."""
    carries_automatic_options: bool
    """Both-automatic ``num_ctx``/``num_batch`` count as equal, an automatic ``use_mmap`` is
    kept when the request names none, and automatic ``num_batch`` follows the context (§4.6)."""
    embedding_batch_default: bool
    """An embedding model's default ``num_batch`` is min(2048, ``num_ctx``), counted explicit."""
    checks_context_shift: bool
    """The request's ``shift`` (default on, off for deepseek2) must match the runner's."""
    optional_main_gpu: bool
    """``main_gpu`` is a pointer: unset differs from an explicit 0."""
    compares_draft_num_predict: bool
    """``draft_num_predict`` is an ``api.Runner`` field (absent before v0.30)."""
    oom_load_evicts_all: bool
    """An out-of-memory load evicts every other model (and lowers an automatic ``num_ctx``),
    then retries once (§4.4 item 4); before, the load just failed."""
    runtime_oom_expires_all: bool
    """An out-of-memory error during generation expires every loaded model (§4.4 item 5)."""
    preflight_80_percent: bool
    """An additional model must fit in 80 % of the free VRAM, unless its ``num_gpu`` is an
    explicit partial offload (§4.4 item 3); before, it had to fit wholly in the free VRAM."""
    show_404_normalised: bool
    """``/api/show`` of an unknown model names it ``x:latest``; before, as sent (§5.6)."""
    tags_capabilities: bool
    """``/api/tags`` lists ``capabilities`` and trained context/embedding lengths (§5.3)."""
    oom_error: str
    """What a load that ran out of GPU memory answers (500): the runner's name changed."""
    unload_row_first: bool
    """An unloaded runner's ``/api/ps`` row goes before its process exits (~14 ms later on
    0.32.15, §4.9); before v0.32.4 the process exits first and the row goes a moment later
    (0.24.0). In ``server/sched.go`` every version kills the runner, waits for its exit and
    then deletes it from the loaded set, all under ``loadedMu``; from v0.32.4 ``/api/ps``
    takes that lock, so a poll made during the kill answers after it, without the row."""

    @classmethod
    def for_version(cls, version: str) -> Behaviour:
        """Return the behaviour of ``version``; ``0.0.0`` (a dev build) is the newest code.

        Raises:
            VersionError: ``version`` is not MAJOR.MINOR.PATCH.
        """
        number = parse_version(version)
        modern = number >= (0, 30, 0) or number == (0, 0, 0)
        locked_ps = number >= (0, 32, 4) or number == (0, 0, 0)
        return cls(
            version=version,
            clamps_num_ctx=modern,
            carries_automatic_options=modern,
            embedding_batch_default=modern,
            checks_context_shift=modern,
            optional_main_gpu=modern,
            compares_draft_num_predict=modern,
            oom_load_evicts_all=modern,
            runtime_oom_expires_all=modern,
            preflight_80_percent=modern,
            show_404_normalised=modern,
            tags_capabilities=modern,
            oom_error=_OOM_LLAMA_SERVER if modern else _OOM_LLAMA_RUNNER,
            unload_row_first=locked_ps,
        )
