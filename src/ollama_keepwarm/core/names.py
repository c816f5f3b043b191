"""Model names as Ollama compares them.

``/api/ps`` lists a runner under the canonical short name it was loaded under (``llama3.2:latest``,
reference §3.2); users write ``llama3.2``, ``Llama3.2`` or ``library/llama3.2``. Matching happens on
the key below (reference §7.2), never on the ``model`` field that generate echoes verbatim.
"""

from __future__ import annotations

__all__ = ["canonical_name", "is_cloud_model", "match_key", "name_problem"]

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


_PART_MAX = {"host": 350, "namespace": 80, "model": 80, "tag": 80}


def _part_problem(kind: str, part: str) -> str | None:
    """What ``isValidPart`` in Ollama's ``types/model/name.go`` refuses in one part, in words."""
    if not part:
        return f"the {kind} is empty"
    if len(part) > _PART_MAX[kind]:
        return f"the {kind} is {len(part)} characters long (at most {_PART_MAX[kind]})"
    if not (part[0].isascii() and (part[0].isalnum() or part[0] == "_")):
        return f"the {kind} {part!r} must start with a letter, a digit or '_', not {part[0]!r}"
    for char in part[1:]:
        if char.isascii() and (char.isalnum() or char in "_-"):
            continue
        if char == "." and kind != "namespace":
            continue
        if char == ":" and kind == "host":
            continue
        what = "a space" if char.isspace() else repr(char)
        allowed = "letters, digits, '_', '-'" + ("" if kind == "namespace" else " and '.'")
        return f"the {kind} {part!r} contains {what} (allowed: {allowed})"
    return None


def name_problem(name: str) -> str | None:
    """Say what Ollama would refuse in ``name`` (400 ``invalid model name``), or None.

    The rules of ``ParseName`` and ``IsFullyQualified`` in Ollama's ``types/model/name.go``:
    ``[host/][namespace/]model[:tag]``, each part 1-80 characters (the host 350) of ASCII
    letters, digits, ``_``, ``-`` and ``.`` (not in the namespace), starting with a letter, digit
    or ``_``; ``:`` only in the host (a port). The default host, namespace and tag fill what is
    left out. Surrounding whitespace is trimmed, as Ollama does (reference §7.2).
    """
    text = name.strip()
    if not text:
        return "is empty"
    if "@" in text:
        return "names a digest (@...): name the model by its tag instead"
    rest = text
    tag = ""
    if rest.rfind(":") > rest.rfind("/"):
        rest, _, tag = rest.rpartition(":")
        if not tag:
            return "ends in ':' with no tag after it"
    if "://" in rest:
        rest = rest.split("://", 1)[1]
    parts = rest.split("/")
    if len(parts) > 3:
        return "has more than host/namespace/model before the tag"
    kinds = ("host", "namespace", "model")[-len(parts) :]
    for kind, part in zip(kinds, parts, strict=True):
        problem = _part_problem(kind, part)
        if problem:
            return problem
    if tag:
        return _part_problem("tag", tag)
    return None
