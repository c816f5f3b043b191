"""Load-time options: the ones a warm call can send, per Ollama version (reference §4.6).

A warm call that sends an option Ollama does not compare has no effect, and a typo would be sent
and lost; so ``options`` (in a file or ``OLLAMA_KEEPWARM_MODELS``) takes only these, with their
types and ranges, and says why anything else is refused.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "LEGACY_OPTIONS",
    "LOAD_OPTIONS",
    "MODEL_KEYS",
    "OPTION_SINCE",
    "SAMPLING_OPTIONS",
    "kind_of",
    "option_problem",
    "options_unknown_to",
]


def kind_of(value: object) -> str:
    """A value's TOML type in words, for "must be X, not Y"."""
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


LOAD_OPTIONS: Mapping[str, tuple[type, int | None, int | None]] = MappingProxyType(
    {
        "num_ctx": (int, 1, 2**31 - 1),
        "num_batch": (int, 1, 2**31 - 1),
        "num_gpu": (int, -1, 2**31 - 1),
        "main_gpu": (int, 0, 1024),
        "use_mmap": (bool, None, None),
        "num_thread": (int, 0, 65536),
        "draft_num_predict": (int, 0, 2**31 - 1),
    }
)
"""The load-time options of current Ollama (``api.Runner``, reference §4.6): the only ones a warm
call can usefully send, with their type and range. Any other name is a typo or has no effect."""

OPTION_SINCE: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {"draft_num_predict": (0, 30, 0)}
)
"""Load options younger than the rest: an older Ollama ignores them (``check`` says so)."""


def options_unknown_to(version: str, options: Mapping[str, Any]) -> list[str]:
    """The configured load options ``version`` of Ollama does not read, as "name (since X.Y)".

    An unparsable version, or 0.0.0 (what a build from source reports), is given the benefit of
    the doubt.
    """
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    running = (int(found[1]), int(found[2]), int(found[3])) if found else (0, 0, 0)
    if running == (0, 0, 0):
        return []
    return [
        f"{name} (Ollama {'.'.join(map(str, OPTION_SINCE[name]))}+)"
        for name in options
        if name in OPTION_SINCE and running < OPTION_SINCE[name]
    ]


LEGACY_OPTIONS: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(("low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock"), "0.6.8"),
        **dict.fromkeys(
            ("numa", "num_gqa", "rope_frequency_base", "rope_frequency_scale"), "0.1.33"
        ),
    }
)
"""Load options only older Ollama read (up to the version named); current Ollama ignores them."""

SAMPLING_OPTIONS = frozenset(
    {
        "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p",
        "repeat_last_n", "temperature", "repeat_penalty", "presence_penalty",
        "frequency_penalty", "stop", "penalize_newline", "mirostat", "mirostat_tau",
        "mirostat_eta", "tfs_z",
    }
)  # fmt: skip
"""Per-request options (``api.Options``): a warm call generates nothing, so they do nothing."""


MODEL_KEYS = (
    "name", "host", "keep_alive", "priority", "verify", "when", "after_window", "lead",
    "prime", "prime_file", "prime_endpoint", "prime_raw",
)  # fmt: skip
"""A model's own keys: a misspelt one in the environment lands among the load options."""


def option_problem(name: str, value: object) -> str | None:
    """What is wrong with one load option, in words; None when it is fine."""
    if name in SAMPLING_OPTIONS:
        return (
            "is a per-request sampling option: a warm call generates nothing, so it has no "
            f"effect (load options: {', '.join(LOAD_OPTIONS)})"
        )
    if name in LEGACY_OPTIONS:
        return (
            f"only Ollama up to {LEGACY_OPTIONS[name]} reads it; current Ollama ignores it "
            f"(load options: {', '.join(LOAD_OPTIONS)})"
        )
    if name not in LOAD_OPTIONS:
        close = difflib.get_close_matches(name, [*LOAD_OPTIONS, *MODEL_KEYS], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown load option ({hint}load options: {', '.join(LOAD_OPTIONS)})"
    kind, low, high = LOAD_OPTIONS[name]
    if kind is bool:
        return None if isinstance(value, bool) else f"must be true or false, not {kind_of(value)}"
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, not {kind_of(value)}"
    if low is not None and high is not None and not low <= value <= high:
        return f"must be between {low} and {high}, not {value}"
    return None
