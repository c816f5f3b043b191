"""Model names as Ollama's types/model/name.go takes or refuses them (reference §7.2)."""

from __future__ import annotations

import pytest

from ollama_keepwarm.core.names import name_problem


@pytest.mark.parametrize(
    "name",
    [
        "llama3.1:8b",
        "Llama3.2",
        "nomic-embed-text",
        "library/llama3.2:latest",
        "registry.ollama.ai/library/llama3.2",
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        "localhost:5000/team/model:v1.2",
        "_private/m_1",
        "  llama3.2  ",  # Ollama trims surrounding whitespace
    ],
)
def test_names_ollama_takes(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        ("llama 3.1:8b", "the model 'llama 3.1' contains a space"),
        ("m:", "ends in ':' with no tag after it"),
        ("m:t t", "the tag 't t' contains a space"),
        ("a/b/c/d", "has more than host/namespace/model before the tag"),
        ("my.team/m", "the namespace 'my.team' contains '.'"),
        ("-m", "the model '-m' must start with a letter, a digit or '_'"),
        ("m@sha256:00", "names a digest (@...)"),
        ("m" * 81, "the model is 81 characters long (at most 80)"),
        ("ns//m", "the namespace is empty"),
        ("caf\u00e9", "the model 'caf\u00e9' contains '\u00e9'"),
    ],
)
def test_names_ollama_refuses(name: str, problem: str) -> None:
    """Each refusal says what is wrong, not only that Ollama would answer 400."""
    found = name_problem(name)
    assert found is not None
    assert found.startswith(problem), found
