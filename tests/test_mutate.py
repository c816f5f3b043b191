"""The mutation check (tools/mutate.py) runs: one mutant, in a copy, killed by its test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "mutate.py"
PLAN = ROOT / "src" / "ollama_keepwarm" / "core" / "plan"


def mutate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_mutant_still_applies() -> None:
    """--list names every mutant, and each snippet occurs once (else the table is stale)."""
    done = mutate("--list")
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert len(names) == len(set(names)) >= 45
    assert {"rewarm_delay_ignored", "no_jitter", "victim_no_blob_tiebreak"} <= set(names)


def test_one_mutant_is_killed_in_a_copy() -> None:
    """--only runs one mutant against a scratch copy: killed, and the working tree untouched."""
    before = {path: path.read_text() for path in PLAN.glob("*.py")}
    done = mutate("--only", "no_jitter", "--tests", "tests/core/test_plan.py")
    assert {path: path.read_text() for path in PLAN.glob("*.py")} == before
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no_jitter" in done.stdout
    assert "killed" in done.stdout
    assert "score: 1/1 killed" in done.stdout


def test_a_surviving_mutant_fails_the_run() -> None:
    """A mutant no chosen test notices is reported as a survivor, with exit status 1."""
    done = mutate("--only", "no_jitter", "--tests", "tests/core/test_durations.py")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "survived: no_jitter" in done.stdout


def test_an_unknown_mutant_is_a_usage_error() -> None:
    """A typo in --only names the problem instead of running nothing."""
    done = mutate("--only", "nosuch")
    assert done.returncode == 2
    assert "unknown mutant nosuch" in done.stderr
