"""Load-time options: what a request asks for, what a runner keeps, and when they differ.

Pure functions over plain values, so the rule that decides every reload (``needsReload`` in
``server/sched.go``, reference §4.6) is tested as a table for each version. The scheduler only
calls :func:`requested` for each request, :func:`at_load` when it loads a runner and
:func:`reload_reason` when a request meets a loaded runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ollama_keepwarm.fake.versions import Behaviour

__all__ = [
    "LOAD_OPTION_KEYS",
    "LoadOptions",
    "at_load",
    "lower_automatic_context",
    "reload_reason",
    "requested",
]

LOAD_OPTION_KEYS = (
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "use_mmap",
    "num_thread",
    "draft_num_predict",
)
"""The ``api.Runner`` fields whose difference forces a reload (§4.6)."""

_EMBEDDING_NUM_BATCH = 2048  # llm.DefaultEmbeddingNumBatch
_MIN_NUM_CTX = 4  # getRunner raises anything lower to 4


@dataclass(frozen=True)
class LoadOptions:
    """The load-time settings of one request, or of the runner it loaded.

    The ``*_auto`` flags say the value was Ollama's choice, not the request's or the
    Modelfile's; from v0.30 two automatic values never differ (§4.6).
    """

    num_ctx: int
    num_batch: int = 512
    num_gpu: int = -1
    main_gpu: int | None = None
    use_mmap: bool | None = None
    num_thread: int = 0
    draft_num_predict: int = 0
    context_shift: bool = True
    num_ctx_auto: bool = True
    num_batch_auto: bool = True
    use_mmap_auto: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Return the ``api.Runner`` fields, the view tests and ``/_fake/state`` show."""
        return {key: getattr(self, key) for key in LOAD_OPTION_KEYS}


def _coerce(key: str, value: Any) -> Any:
    if key == "use_mmap":
        return bool(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return value


def requested(
    behaviour: Behaviour,
    *,
    default_num_ctx: int,
    modelfile: Mapping[str, Any],
    options: Mapping[str, Any] | None,
    shift: bool | None = None,
    family: str = "llama",
    embedding: bool = False,
) -> LoadOptions:
    """Return what a request asks for: defaults, then the Modelfile, then the request.

    ``num_ctx`` is automatic unless the request or the Modelfile names it (even as null: Go
    checks for the key); likewise ``num_batch``, except that from v0.30 an embedding model's
    default batch counts as explicit.
    """
    request = options or {}
    values: dict[str, Any] = {
        "num_ctx": default_num_ctx,
        "num_batch": 512,
        "num_gpu": -1,
        "main_gpu": None if behaviour.optional_main_gpu else 0,
        "use_mmap": None,
        "num_thread": 0,
        "draft_num_predict": 0,  # v0.30+: forced to 0 for models without a draft model
    }
    keys: tuple[str, ...] = LOAD_OPTION_KEYS
    if not behaviour.compares_draft_num_predict:
        keys = tuple(key for key in keys if key != "draft_num_predict")
    for source in (modelfile, request):
        for key in keys:
            if source.get(key) is not None:
                values[key] = _coerce(key, source[key])
    named = {key for source in (modelfile, request) for key in source}
    num_ctx_auto = "num_ctx" not in named
    num_batch_auto = "num_batch" not in named
    if behaviour.embedding_batch_default and embedding and num_batch_auto:
        values["num_batch"] = min(_EMBEDDING_NUM_BATCH, values["num_ctx"])
        num_batch_auto = False
    values["num_ctx"] = max(_MIN_NUM_CTX, values["num_ctx"])
    context_shift = True
    if behaviour.checks_context_shift:
        context_shift = shift if shift is not None else family != "deepseek2"
    return LoadOptions(
        **values,
        context_shift=context_shift,
        num_ctx_auto=num_ctx_auto,
        num_batch_auto=num_batch_auto,
    )


def _effective_context(num_ctx: int, train_ctx: int) -> int:
    return min(num_ctx, train_ctx) if train_ctx > 0 else num_ctx


def _batch_for_context(context: int) -> int:
    """llama-server's automatic generation batch for a context (``generationBatchForContext``)."""
    if context > 32768:
        return 2048
    if context > 4096:
        return 1024
    return 512


def at_load(
    behaviour: Behaviour, wanted: LoadOptions, *, train_ctx: int, completion: bool, on_cpu: bool
) -> LoadOptions:
    """Return what the runner keeps once it has loaded ``wanted``.

    From v0.30 the runner keeps the context it really got (clamped to the training context), an
    automatic ``num_batch`` that grows with the context (for completion models; the fake skips
    the memory-fit lowering), and ``use_mmap`` off by default on the CPU. Before, it kept the
    options as requested.
    """
    kept = wanted
    if behaviour.clamps_num_ctx:
        kept = replace(kept, num_ctx=_effective_context(kept.num_ctx, train_ctx))
    if behaviour.carries_automatic_options:
        if completion and kept.num_batch_auto:
            kept = replace(kept, num_batch=_batch_for_context(kept.num_ctx))
        if (on_cpu or kept.num_gpu == 0) and kept.use_mmap is None:
            kept = replace(kept, use_mmap=False, use_mmap_auto=True)
    return kept


def lower_automatic_context(wanted: LoadOptions, train_ctx: int) -> LoadOptions | None:
    """Return ``wanted`` with the next lower automatic context for an OOM retry, or ``None``.

    ``reduceAutoNumCtxForLoadOOM`` (v0.30+): only an automatic ``num_ctx`` is lowered: an
    effective context above 32768 to 32768, one above 4096 to 4096; 4096 or less stays.
    """
    if not wanted.num_ctx_auto:
        return None
    effective = _effective_context(wanted.num_ctx, train_ctx)
    lower = 32768 if effective > 32768 else 4096 if effective > 4096 else None
    if lower is None or lower >= wanted.num_ctx:
        return None
    return replace(wanted, num_ctx=lower)


def reload_reason(
    behaviour: Behaviour, runner: LoadOptions, new: LoadOptions, *, train_ctx: int
) -> str | None:
    """Return what differs between a loaded runner and a request (a reload), or ``None``.

    ``needsReload``: a negative new ``num_gpu`` is ignored in every version. From v0.30 the new
    ``num_ctx`` is first clamped to the training context, two automatic ``num_ctx`` (or
    ``num_batch``) values are equal, an automatic ``use_mmap`` matches a request without one,
    and the context-shift setting must match. Sampling options are never looked at.
    """
    if behaviour.checks_context_shift and runner.context_shift != new.context_shift:
        return f"context shift {_on(runner.context_shift)} -> {_on(new.context_shift)}"
    if behaviour.clamps_num_ctx:
        new = replace(new, num_ctx=_effective_context(new.num_ctx, train_ctx))
    if behaviour.carries_automatic_options:
        if runner.num_ctx_auto and new.num_ctx_auto:
            new = replace(new, num_ctx=runner.num_ctx)
        if runner.num_batch_auto and new.num_batch_auto:
            new = replace(new, num_batch=runner.num_batch)
        if runner.use_mmap_auto and new.use_mmap is None:
            new = replace(new, use_mmap=runner.use_mmap)
    if new.num_gpu < 0:
        new = replace(new, num_gpu=runner.num_gpu)
    for key in LOAD_OPTION_KEYS:
        old_value, new_value = getattr(runner, key), getattr(new, key)
        if old_value != new_value:
            return f"{key} {_show(old_value)} -> {_show(new_value)}"
    return None


def _on(value: bool) -> str:
    return "on" if value else "off"


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
