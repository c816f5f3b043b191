"""Foreign use from two looks as a table: loads, moved leases, our own calls, runner starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ollama_keepwarm.core.ps import RunningModel
from ollama_keepwarm.core.usage import Use, foreign_uses, started_keys

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def row(expires_in_min: float, digest: str = "a" * 64) -> RunningModel:
    return RunningModel("llama3.2:latest", 1, 1, digest, T0 + timedelta(minutes=expires_in_min))


R60 = row(60)


@pytest.mark.parametrize(
    ("before", "after", "ours", "starts", "expected"),
    [
        # First look: nothing to compare with.
        (None, {"m": R60}, (), (), ()),
        # Loaded by someone else: the client found it cold.
        ({"m": None}, {"m": R60}, (), (), (Use("m", "loaded"),)),
        ({}, {"m": R60}, (), (), (Use("m", "loaded"),)),
        # ...but not when our call for it was in flight or ended since.
        ({"m": None}, {"m": R60}, {"m"}, (), ()),
        # A lease moved with no call of ours: a client request ended.
        ({"m": R60}, {"m": row(5)}, (), (), (Use("m", "lease"),)),
        ({"m": R60}, {"m": row(61)}, (), (), (Use("m", "lease"),)),
        # Our own renewal moved it.
        ({"m": R60}, {"m": row(61)}, {"m"}, (), ()),
        # Unchanged: idle, or a request still in flight (the lease is frozen, §1.5).
        ({"m": R60}, {"m": R60}, (), (), ()),
        # Gone: expired or evicted, not a use.
        ({"m": R60}, {"m": None}, (), (), ()),
        # Other weights under the name: someone loaded them.
        ({"m": R60}, {"m": row(60, "b" * 64)}, (), (), (Use("m", "loaded"),)),
        # A runner that started with no load of ours, even before ps lists it.
        ({"m": None}, {"m": None}, (), {"m"}, (Use("m", "runner"),)),
        (None, {"m": None}, (), {"m"}, (Use("m", "runner"),)),
        ({"m": None}, {"m": None}, {"m"}, {"m"}, ()),
        # Only the kept models (the keys of `after`) are judged.
        ({"m": R60, "n": None}, {"m": R60, "n": row(3)}, (), {"x"}, (Use("n", "loaded"),)),
    ],
)
def test_foreign_uses(
    before: dict[str, RunningModel | None] | None,
    after: dict[str, RunningModel | None],
    ours: set[str] | tuple[()],
    starts: set[str] | tuple[()],
    expected: tuple[Use, ...],
) -> None:
    assert foreign_uses(before, after, ours, starts) == expected


def test_cold() -> None:
    assert Use("m", "loaded").cold
    assert Use("m", "runner").cold
    assert not Use("m", "lease").cold


def test_started_keys() -> None:
    blobs = {"m": "sha256-a", "alias": "sha256-a", "n": "sha256-b"}
    assert started_keys({"sha256-a", "sha256-c"}, blobs, ["m", "n", "o"]) == {"m"}
    assert started_keys((), blobs, ["m"]) == frozenset()
