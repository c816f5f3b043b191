"""The rendered units as systemd itself reads them: ``systemd-analyze verify`` and ``security``."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from ollama_keepwarm.commands.install import (
    DROPIN_PATH,
    UNIT_NAME,
    UnitOptions,
    exec_command,
    render_dropin,
    render_service,
    render_units,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package: systemd)",
)

STUB_OLLAMA = """\
[Unit]
Description=stand-in for Ollama's own unit

[Service]
ExecStart=/bin/sleep infinity
"""


def _write_units(directory: Path, opts: UnitOptions) -> Path:
    for rel, text in render_units(opts).items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (directory / "ollama.service").write_text(STUB_OLLAMA, encoding="utf-8")
    return directory / UNIT_NAME


@pytest.fixture
def executable(tmp_path: Path) -> Path:
    """An executable file standing in for the installed program (verify checks it exists)."""
    exe = tmp_path / "bin" / "ollama-keepwarm"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    exe.chmod(0o755)
    return exe


def _exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_deploy_files_are_the_rendering_for_usr_local_bin() -> None:
    """deploy/systemd/ holds exactly what `systemd install` renders for /usr/local/bin."""
    opts = UnitOptions(command=("/usr/local/bin/ollama-keepwarm",))
    for rel, text in render_units(opts).items():
        shipped = (DEPLOY / rel).read_text(encoding="utf-8")
        assert shipped == text, (
            f"deploy/systemd/{rel} is stale; regenerate with: python -c 'from pathlib import Path; "
            "from ollama_keepwarm.commands.install import UnitOptions, render_units; "
            '[(Path("deploy/systemd") / r).write_text(t) for r, t in render_units('
            'UnitOptions(command=("/usr/local/bin/ollama-keepwarm",))).items()]\''
        )


def test_service_carries_the_lifecycle_directives() -> None:
    """The companion follows ollama.service, notifies, is watched, never retries a bad config."""
    text = render_service(UnitOptions(command=("/opt/okw/bin/ollama-keepwarm",)))
    for line in (
        "Type=notify",
        "After=ollama.service",
        "BindsTo=ollama.service",
        "PartOf=ollama.service",
        "WantedBy=ollama.service",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/opt/okw/bin/ollama-keepwarm run -c /etc/ollama-keepwarm/config.toml",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "ProtectHome=yes",
    ):
        assert line in text.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+s$", text, re.MULTILINE)


def test_dropin_never_fails_or_stalls_ollama() -> None:
    """The ExecStartPost warm is '-'-prefixed and hard-bounded well under the 90 s start timeout."""
    opts = UnitOptions(command=("/usr/bin/python3", "-m", "ollama_keepwarm"))
    lines = [line for line in render_dropin(opts).splitlines() if line.startswith("ExecStartPost=")]
    assert len(lines) == 1
    match = re.fullmatch(
        r"ExecStartPost=-/usr/bin/timeout --kill-after=(\d+)s (\d+)s "
        r"/usr/bin/python3 -m ollama_keepwarm warm -c \S+ --timeout (\d+)s --deadline (\d+)s "
        r"--load-times /var/lib/ollama-keepwarm/load-times.json",
        lines[0],
    )
    assert match, lines[0]
    kill_after, bound, wait, deadline = (int(g) for g in match.groups())
    assert wait < bound
    assert deadline < bound  # it stops starting loads before timeout(1) would cut one
    assert bound + kill_after <= 70


def test_home_paths_are_exposed_read_only_not_the_whole_home() -> None:
    """A program under /root gets ProtectHome=tmpfs plus a read-only bind of just its tree."""
    opts = UnitOptions(
        command=("/root/.venv/bin/ollama-keepwarm",), read_only_paths=("/root/.venv",)
    )
    text = render_service(opts)
    assert "ProtectHome=tmpfs" in text.splitlines()
    assert "BindReadOnlyPaths=/root/.venv" in text.splitlines()
    assert "ProtectHome=yes" not in text


def test_tmp_paths_are_bound_without_touching_protect_home() -> None:
    """A checkout under /tmp is bound back in past PrivateTmp=, and ProtectHome= stays yes."""
    opts = UnitOptions(command=("/tmp/ci/.venv/bin/ollama-keepwarm",), read_only_paths=("/tmp/ci",))
    lines = render_service(opts).splitlines()
    assert "ProtectHome=yes" in lines
    assert "BindReadOnlyPaths=/tmp/ci" in lines


def test_exec_command_quotes_what_systemd_would_split_or_expand() -> None:
    """Spaces, '%' specifiers and '$' variables in a path survive systemd's command-line parsing."""
    assert exec_command(["/opt/a b/x", "run"]) == '"/opt/a b/x" run'
    assert exec_command(["/opt/100%/$HOME"]) == "/opt/100%%/$$HOME"


@needs_analyze
@pytest.mark.parametrize(
    "home", [(), ("/root/.pyenv",), ("/tmp/ci",)], ids=["system", "under-home", "under-tmp"]
)
def test_systemd_analyze_verify_accepts_the_units(
    tmp_path: Path, executable: Path, home: tuple[str, ...]
) -> None:
    """`systemd-analyze verify` loads the unit and the drop-in with no error and no warning."""
    unit = _write_units(
        tmp_path / "units", UnitOptions(command=(str(executable),), read_only_paths=home)
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit), str(unit.parent / "ollama.service")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert ours == [], "\n".join(ours)
    assert (unit.parent / DROPIN_PATH).is_file()


@needs_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path, executable: Path) -> None:
    """The verify check can fail: a misspelt key in our unit is reported."""
    unit = _write_units(tmp_path / "units", UnitOptions(command=(str(executable),)))
    unit.write_text(unit.read_text().replace("RestartSec=", "RestartSecs="), encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit), str(unit.parent / "ollama.service")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert "RestartSecs" in result.stderr


@needs_analyze
@pytest.mark.parametrize(
    "home", [(), ("/root/.pyenv",), ("/tmp/ci",)], ids=["system", "under-home", "under-tmp"]
)
def test_security_exposure_is_at_most_two(
    tmp_path: Path, executable: Path, home: tuple[str, ...]
) -> None:
    """`systemd-analyze security --offline=true` scores the companion 2.0 or better."""
    unit = _write_units(
        tmp_path / "units", UnitOptions(command=(str(executable),), read_only_paths=home)
    )
    assert _exposure(unit) <= MAX_EXPOSURE


@needs_analyze
def test_security_score_reflects_the_sandbox(tmp_path: Path, executable: Path) -> None:
    """The score check can fail: without its sandbox lines the same unit scores far worse."""
    unit = _write_units(tmp_path / "units", UnitOptions(command=(str(executable),)))
    text = unit.read_text(encoding="utf-8")
    head, _, tail = text.partition("DynamicUser=yes")
    unit.write_text(head + tail[tail.index("[Install]") :], encoding="utf-8")
    assert _exposure(unit) > 5.0


def test_units_are_keyed_by_path_under_etc_systemd_system() -> None:
    """render_units returns the service and the ollama.service drop-in, nothing else."""
    units = render_units(UnitOptions(command=("/x",)))
    assert set(units) == {PurePosixPath(UNIT_NAME), DROPIN_PATH}


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found.setdefault(key, []).append(value)
    return found


def test_the_keeper_may_read_the_runners_command_lines() -> None:
    """Issue 21: the runner table reads ollama.service's /proc/<pid>/cmdline.

    hidepid in any form hides them (invisible, ptraceable: another user's processes are not
    ptraceable; noaccess: their files are unreadable). ProcSubset=pid keeps /proc/<pid>.
    """
    service = render_units(UnitOptions(command=("/x",)))[PurePosixPath(UNIT_NAME)]
    directives = _directives(service)
    assert directives["ProtectProc"] == ["default"]
    assert directives["ProcSubset"] == ["pid"]
    assert directives["PrivateMounts"] == ["yes"]
    assert "PrivatePIDs" not in directives  # the cgroup's pids must be those of our namespace


@needs_analyze
def test_reading_command_lines_costs_no_exposure(tmp_path: Path, executable: Path) -> None:
    """1.1 with ProtectProc=invisible before issue 21; still 1.1 with default + PrivateMounts."""
    unit = _write_units(tmp_path / "units", UnitOptions(command=(str(executable),)))
    now = _exposure(unit)
    text = unit.read_text(encoding="utf-8")
    before = text.replace("ProtectProc=default", "ProtectProc=invisible").replace(
        "PrivateMounts=yes\n", ""
    )
    unit.write_text(before, encoding="utf-8")
    assert now <= _exposure(unit)
