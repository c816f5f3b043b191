"""The models the fake Ollama has "pulled": weights, manifests and what ``/api/show`` tells.

Ollama keys loaded runners by weights blob, not by name (reference §7.1), so a catalogue entry is
one set of weights (:class:`CatalogModel`) and every name over it is a :class:`Manifest` with its
own manifest digest. Digests are deterministic (sha256 of the name) so test expectations are
stable across runs.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_keepwarm.core.names import canonical_name, match_key

__all__ = [
    "BLOB_DIR",
    "Catalog",
    "CatalogError",
    "CatalogModel",
    "Manifest",
    "default_catalog",
    "load_catalog",
    "parse_size",
]

BLOB_DIR = "/root/.ollama/models/blobs"
"""Where Ollama keeps blobs; the fake prints it in ``modelfile`` and sorts evictions by it."""

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNIT_BYTES = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BASE_MODIFIED_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: a fixed, plausible pull time


class CatalogError(ValueError):
    """A catalogue file or size that cannot be used; the message names the offending entry."""


def parse_size(value: int | float | str) -> int:
    """Return bytes for ``4920753328``, ``"4.9GB"`` (10^9) or ``"16GiB"`` (2^30)."""
    if isinstance(value, bool):
        raise CatalogError(f"invalid size {value!r}")
    if isinstance(value, int | float):
        return int(value)
    match = _SIZE.fullmatch(value)
    if match is None:
        raise CatalogError(f"invalid size {value!r}: use bytes or a unit like 4.9GB or 16GiB")
    number, unit = match.groups()
    return int(float(number) * _UNIT_BYTES[(unit or "").lower()])


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _parameter_count(parameter_size: str) -> int:
    match = re.fullmatch(r"([0-9.]+)([KMBT]?)", parameter_size.strip().upper())
    if match is None:
        return 0
    scale = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[match.group(2)]
    return int(float(match.group(1)) * scale)


@dataclass(frozen=True)
class CatalogModel:
    """One set of weights and the names that point at it.

    ``size`` is bytes; ``context_length`` is the *training* context (what ``num_ctx`` is clamped
    to); ``parameters`` are the Modelfile ``PARAMETER`` defaults (``num_ctx`` here makes the
    context explicit, reference §4.6); ``aliases`` are other names over the same weights;
    ``block_count`` is the number of transformer layers (a ``num_gpu`` below it + 1 is a partial
    offload, §4.4).
    """

    name: str
    size: int
    capabilities: tuple[str, ...] = ("completion",)
    context_length: int = 4096
    family: str = "llama"
    parameter_size: str = ""
    quantization_level: str = "Q4_K_M"
    aliases: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    embedding_length: int = 4096
    template: str = "{{ .Prompt }}"
    block_count: int = 32
    digest: str = ""
    """Manifest digest of ``name``; empty means sha256 of the canonical name."""

    @property
    def blob(self) -> str:
        """The weights blob digest (64 hex), shared by every alias."""
        return _sha256("blob:" + canonical_name(self.name))

    @property
    def blob_path(self) -> str:
        """The blob's path on disk: the eviction tie-break sorts by it (§4.5)."""
        return f"{BLOB_DIR}/sha256-{self.blob}"

    @property
    def is_embedding_only(self) -> bool:
        """Tell whether generate and chat refuse this model (§2.4)."""
        return "completion" not in self.capabilities

    @property
    def model_info(self) -> dict[str, Any]:
        """Return GGUF metadata as ``/api/show`` prints it (keys sorted, like a Go map)."""
        arch = self.family.replace("-", "_")
        info: dict[str, Any] = {
            "general.architecture": arch,
            "general.parameter_count": _parameter_count(self.parameter_size),
            f"{arch}.context_length": self.context_length,
            f"{arch}.embedding_length": self.embedding_length,
        }
        if self.is_embedding_only:
            info[f"{arch}.pooling_type"] = 1
        return dict(sorted(info.items()))


@dataclass(frozen=True)
class Manifest:
    """A name on disk: its spelling, its manifest digest, the weights it points at, its mtime."""

    name: str
    digest: str
    model: CatalogModel
    modified_at_ns: int


class Catalog:
    """The set of manifests, looked up the way Ollama resolves names (case-insensitively, §7.2)."""

    def __init__(self, models: Iterable[CatalogModel]) -> None:
        self.models: tuple[CatalogModel, ...] = tuple(models)
        self._manifests: dict[str, Manifest] = {}
        index = 0
        for model in self.models:
            for name in (model.name, *model.aliases):
                display = canonical_name(name)
                key = match_key(display)
                if key in self._manifests:
                    raise CatalogError(f"model name {display!r} appears twice in the catalogue")
                digest = model.digest if name == model.name and model.digest else _sha256(display)
                modified = _BASE_MODIFIED_NS - index * 86_400 * 10**9
                self._manifests[key] = Manifest(display, digest, model, modified)
                index += 1

    def resolve(self, name: str) -> Manifest | None:
        """Find the manifest for ``name`` as a client typed it, or ``None`` (a 404)."""
        return self._manifests.get(match_key(name))

    def manifests(self) -> list[Manifest]:
        """Return every manifest, newest first, the order ``/api/tags`` uses."""
        return sorted(self._manifests.values(), key=lambda m: -m.modified_at_ns)

    def delete(self, name: str) -> bool:
        """Forget a manifest (``DELETE /api/delete``); loaded runners are not touched (§7.5)."""
        return self._manifests.pop(match_key(name), None) is not None

    def copy(self) -> Catalog:
        """Return an independent catalogue, so deleting from one server leaves the other intact."""
        return Catalog(self.models)


_STOP_LLAMA3 = {"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}


def default_catalog() -> Catalog:
    """Return a realistic built-in catalogue (sizes and contexts as pulled from ollama.com)."""
    return Catalog(
        [
            CatalogModel(
                "llama3.1:8b",
                4_920_753_328,
                ("completion", "tools"),
                131072,
                "llama",
                "8.0B",
                "Q4_K_M",
                aliases=("llama3.1",),
                parameters=_STOP_LLAMA3,
                block_count=32,
            ),
            CatalogModel(
                "qwen2.5-coder:7b",
                4_683_087_332,
                ("completion", "tools", "insert"),
                32768,
                "qwen2",
                "7.6B",
                "Q4_K_M",
                parameters={"stop": ["<|im_start|>", "<|im_end|>"]},
                embedding_length=3584,
                block_count=28,
            ),
            CatalogModel(
                "nomic-embed-text",
                274_302_450,
                ("embedding",),
                2048,
                "nomic-bert",
                "137M",
                "F16",
                parameters={"num_ctx": 8192},
                embedding_length=768,
                template="",
                block_count=12,
            ),
            CatalogModel(
                "llama3.2:3b",
                2_019_393_189,
                ("completion", "tools"),
                131072,
                "llama",
                "3.2B",
                "Q4_K_M",
                aliases=("llama3.2",),
                parameters=_STOP_LLAMA3,
                embedding_length=3072,
                block_count=28,
            ),
            CatalogModel(
                "llama3.3:70b",
                42_520_413_916,
                ("completion", "tools"),
                131072,
                "llama",
                "70.6B",
                "Q4_K_M",
                aliases=("llama3.3",),
                parameters=_STOP_LLAMA3,
                embedding_length=8192,
                block_count=80,
            ),
            CatalogModel(
                "tiny",
                32_557_056,
                ("completion",),
                2048,
                "llama",
                "12.36M",
                "F16",
                embedding_length=256,
                # The real manifest digest of the model in /work/shared/ollama-captures.
                digest="fc92edf79514f22aa74ac1e6e20c1b855929874dc89b07a469be823cd4ee60f8",
            ),
            # The captures' second model (711M parameters, "1.4 GB", training context 2048).
            # Not captured, so made up: the size (711M F16 weights), the digest, the embedding
            # length and the block count (the defaults).
            CatalogModel(
                "medium",
                1_422_000_000,
                ("completion",),
                2048,
                "llama",
                "711M",
                "F16",
            ),
        ]
    )


def _as_tuple(entry: Mapping[str, Any], key: str, default: Sequence[str]) -> tuple[str, ...]:
    value = entry.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise CatalogError(f"{entry.get('name')!r}: {key} must be a list of strings")
    return tuple(value)


def _model_from_toml(entry: Mapping[str, Any]) -> CatalogModel:
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CatalogError("every [[models]] entry needs a name")
    if "size" not in entry:
        raise CatalogError(f"{name!r}: size is required")
    known = {
        "name",
        "size",
        "capabilities",
        "context_length",
        "family",
        "parameter_size",
        "quantization_level",
        "aliases",
        "parameters",
        "embedding_length",
        "template",
        "block_count",
        "digest",
    }
    unknown = sorted(set(entry) - known)
    if unknown:
        raise CatalogError(f"{name!r}: unknown keys {', '.join(unknown)}")
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise CatalogError(f"{name!r}: parameters must be a table")
    return CatalogModel(
        name=name,
        size=parse_size(entry["size"]),
        capabilities=_as_tuple(entry, "capabilities", ("completion",)),
        context_length=int(entry.get("context_length", 4096)),
        family=str(entry.get("family", "llama")),
        parameter_size=str(entry.get("parameter_size", "")),
        quantization_level=str(entry.get("quantization_level", "Q4_K_M")),
        aliases=_as_tuple(entry, "aliases", ()),
        parameters=parameters,
        embedding_length=int(entry.get("embedding_length", 4096)),
        template=str(entry.get("template", "{{ .Prompt }}")),
        block_count=int(entry.get("block_count", 32)),
        digest=str(entry.get("digest", "")),
    )


def load_catalog(path: str | Path) -> Catalog:
    """Read a TOML catalogue: ``[[models]]`` tables with the fields of :class:`CatalogModel`.

    Raises:
        CatalogError: on a missing name or size, an unknown key, or a duplicate name.
    """
    with Path(path).open("rb") as handle:
        data = tomllib.load(handle)
    entries = data.get("models", [])
    if not isinstance(entries, list):
        raise CatalogError("the catalogue needs [[models]] tables")
    return Catalog(_model_from_toml(entry) for entry in entries)
