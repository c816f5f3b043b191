"""Model names as Ollama compares them.

``/api/ps`` lists a runner under the canonical short name it was loaded under (``llama3.2:latest``,
reference §3.2); users write ``llama3.2``, ``Llama3.2`` or ``library/llama3.2``. Matching happens on
the key below (reference §7.2), never on the ``model`` field that generate echoes verbatim.
"""

from __future__ import annotations

__all__ = ["canonical_name", "is_cloud_model", "match_key"]

_DEFAULT_REGISTRY = "registry.ollama.ai/"
_DEFAULT_NAMESPACE = "library/"


def canonical_name(name: str) -> str:
    """Return the name as ``/api/ps`` prints it: no default registry or namespace, a tag."""
    name = name.strip()
    if name.lower().startswith(_DEFAULT_REGISTRY):
        name = name[len(_DEFAULT_REGISTRY) :]
    if name.lower().startswith(_DEFAULT_NAMESPACE):
        name = name[len(_DEFAULT_NAMESPACE) :]
    last_part = name.rsplit("/", 1)[-1]
    if ":" not in last_part:
        name += ":latest"
    return name


def match_key(name: str) -> str:
    """Return the case-insensitive key two names share when they mean the same model."""
    return canonical_name(name).lower()


def is_cloud_model(name: str) -> bool:
    """Tell whether Ollama proxies ``name`` to a remote host: it never loads locally (§7.3)."""
    tag = canonical_name(name).rsplit("/", 1)[-1].partition(":")[2].lower()
    return tag == "cloud" or tag.endswith("-cloud")
