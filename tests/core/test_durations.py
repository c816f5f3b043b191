"""Go's duration syntax and texts (reference §1.1), shared by our config and the fake."""

from __future__ import annotations

import pytest

from ollama_keepwarm.core.durations import (
    INFINITE_NS,
    DurationError,
    format_go_duration,
    parse_go_duration,
)
from ollama_keepwarm.core.names import canonical_name, is_cloud_model, match_key

S = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("-0", 0),
        ("0s", 0),
        ("300ms", 300_000_000),
        ("10s", 10 * S),
        ("5m", 300 * S),
        ("1h30m", 5400 * S),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("-1m", -60 * S),
        ("1us", 1_000),
        ("1\u00b5s", 1_000),
        ("1\u03bcs", 1_000),
        ("2h45m30.5s", (2 * 3600 + 45 * 60 + 30) * S + S // 2),
    ],
)
def test_parses_like_go(text: str, ns: int) -> None:
    """Valid Go durations parse to the same nanoseconds as time.ParseDuration."""
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", 'time: missing unit in duration "-1"'),
        ("300", 'time: missing unit in duration "300"'),
        ("abc", 'time: invalid duration "abc"'),
        ("", 'time: invalid duration ""'),
        (" 5m", 'time: invalid duration " 5m"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        (".s", 'time: invalid duration ".s"'),
        ("99999999999999999h", 'time: invalid duration "99999999999999999h"'),
        ('5"m', 'time: unknown unit "\\"m" in duration "5\\"m"'),
    ],
)
def test_errors_are_gos_texts(text: str, message: str) -> None:
    """Invalid strings give Go's exact message, which Ollama returns in its 400 body."""
    with pytest.raises(DurationError) as caught:
        parse_go_duration(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (300 * S, "5m0s"),
        (5400 * S, "1h30m0s"),
        (1_500_000_000, "1.5s"),
        (1_500_000, "1.5ms"),
        (INFINITE_NS, "2562047h47m16.854775807s"),
        (-60 * S, "-1m0s"),
    ],
)
def test_formats_like_go(ns: int, text: str) -> None:
    """Durations print as Go's Duration.String(), as the Go CLI sends them."""
    assert format_go_duration(ns) == text
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("library/llama3.2:3b", "llama3.2:3b"),
        ("registry.ollama.ai/library/x", "x:latest"),
        ("myuser/model", "myuser/model:latest"),
        ("host:5000/ns/m", "host:5000/ns/m:latest"),
        (" llama3.2 ", "llama3.2:latest"),
    ],
)
def test_canonical_names(name: str, canonical: str) -> None:
    """Names print as /api/ps prints them (§3.2); a registry port is not a tag."""
    assert canonical_name(name) == canonical
    assert match_key(name.upper()) == canonical.lower()


def test_cloud_models() -> None:
    """:cloud and -cloud tags are proxied, never loaded locally (§7.3)."""
    assert is_cloud_model("gpt-oss:120b-cloud")
    assert is_cloud_model("x:cloud")
    assert not is_cloud_model("cloudy:latest")
