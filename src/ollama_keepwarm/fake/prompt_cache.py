"""Prompt processing: a runner's slots, each caching the tokens of its last prompt.

Ollama's runner keeps, per slot (``OLLAMA_NUM_PARALLEL`` of them), the KV cache of the last
prompt it processed, and a new request on that slot only processes the tokens after the longest
common prefix (seen on 0.24 and 0.32: a ~1300-token prompt took 32 s the first time, 0.55-0.69 s
with the same prefix; ``prompt_eval_count`` still reports the whole prompt). A reload or a crash
starts a new runner with empty slots, which is why priming after every load matters.

Tokens and templates are crude but deterministic: a word is a token, and a chat renders each
message as ``<|role|> words <|end|>`` followed by ``<|assistant|>``, so the same leading messages
give the same leading tokens, as a real template does. At least one token is always processed
(llama.cpp evaluates the last prompt token again to get logits, even on a full match).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["PromptCache", "chat_tokens", "common_prefix", "generate_tokens", "words"]

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Split text into crude tokens: runs of word characters, and each punctuation mark."""
    return _WORD.findall(text)


def _turn(role: str, content: str) -> list[str]:
    return [f"<|{role}|>", *words(content), "<|end|>"]


def chat_tokens(messages: Iterable[Mapping[str, object]]) -> list[str]:
    """Render chat messages as the crude template does, ending with the assistant's turn."""
    tokens: list[str] = []
    for message in messages:
        tokens += _turn(str(message.get("role", "user")), str(message.get("content", "")))
    return [*tokens, "<|assistant|>"]


def generate_tokens(prompt: str, system: str = "", *, raw: bool = False) -> list[str]:
    """Render a generate request: the bare prompt when ``raw``, else system and user turns."""
    if raw:
        return words(prompt)
    turns = _turn("system", system) if system else []
    return [*turns, *_turn("user", prompt), "<|assistant|>"]


def common_prefix(a: list[str], b: list[str]) -> int:
    """How many leading tokens two prompts share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class PromptCache:
    """The slots of one runner; the runner's semaphore guarantees a free slot at ``begin``."""

    size: int = 1
    _slots: list[list[str]] = field(default_factory=list)
    _busy: set[int] = field(default_factory=set)
    _used: list[int] = field(default_factory=list)  # slot indices, least recently used first

    def __post_init__(self) -> None:
        self._slots = [[] for _ in range(self.size)]
        self._used = list(range(self.size))

    def begin(self, tokens: list[str]) -> tuple[int, int]:
        """Take the free slot sharing the longest prefix, as Ollama's multi-slot cache does.

        When using that slot would overwrite more than the shared prefix and another slot is
        free, the prefix is copied into the least recently used free slot instead, so each of
        several fixed prefixes keeps its own slot. Returns the slot and how many tokens must
        be processed; the slot then holds ``tokens``.
        """
        free = [i for i in self._used if i not in self._busy]  # least recently used first
        if not free:
            raise RuntimeError("no free slot: the runner's semaphore should have prevented this")
        best = max(free, key=lambda i: common_prefix(self._slots[i], tokens))  # LRU on a tie
        reused = common_prefix(self._slots[best], tokens)
        slot = best
        if reused < len(self._slots[best]) and free[0] != best:
            slot = free[0]
        self._busy.add(slot)
        self._used.remove(slot)
        self._used.append(slot)
        self._slots[slot] = list(tokens)
        return slot, max(1, len(tokens) - reused)

    def end(self, slot: int) -> None:
        """Give the slot back."""
        self._busy.discard(slot)

    @contextmanager
    def slot(self, tokens: list[str]) -> Iterator[int]:
        """Hold a slot for one request; yields how many prompt tokens it must process."""
        index, uncached = self.begin(tokens)
        try:
            yield uncached
        finally:
            self.end(index)

    def clear(self) -> None:
        """Forget every cached prompt (the runner's process died)."""
        self._slots = [[] for _ in range(self.size)]
