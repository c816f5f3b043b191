"""``systemd install|uninstall`` into a temporary root, with systemctl replaced by a recorder."""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pytest

from ollama_keepwarm.commands import install
from ollama_keepwarm.commands.install import (
    CONFIG_PATH,
    DEFAULT_CONFIG,
    DROPIN_PATH,
    MARKER,
    UNIT_NAME,
    Installer,
    SetupError,
    UnitOptions,
    home_exposures,
    render_units,
    resolve_command,
)

UNITS = render_units(UnitOptions(command=("/opt/okw/bin/ollama-keepwarm",)))


class Recorder:
    """Stands in for systemctl: records each command and answers with a fixed exit status."""

    def __init__(self, codes: dict[str, int] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.codes = codes or {}

    def __call__(self, command: Sequence[str]) -> int:
        self.calls.append(list(command))
        verb = next(arg for arg in command[1:] if not arg.startswith("--"))
        return self.codes.get(verb, 0)


def make(
    root: Path,
    *,
    runner: Recorder | None = None,
    euid: int = 0,
    booted: bool = True,
    live: bool = False,
    dry_run: bool = False,
) -> tuple[Installer, Recorder, io.StringIO]:
    runner = runner or Recorder()
    out = io.StringIO()
    installer = Installer(
        root=root,
        dry_run=dry_run,
        runner=runner,
        euid=lambda: euid,
        booted=lambda: booted,
        out=out,
        live=live,
    )
    return installer, runner, out


def files_under(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_install_writes_units_and_config_and_enables_offline(tmp_path: Path) -> None:
    """Into another root: both units, the default config, and `systemctl --root=R enable`."""
    installer, runner, _ = make(tmp_path)
    installer.install(UNITS, DEFAULT_CONFIG, enable=True)
    assert files_under(tmp_path) == {
        f"etc/systemd/system/{UNIT_NAME}": UNITS[PurePosixPath(UNIT_NAME)],
        f"etc/systemd/system/{DROPIN_PATH}": UNITS[DROPIN_PATH],
        CONFIG_PATH.lstrip("/"): DEFAULT_CONFIG,
    }
    assert runner.calls == [["systemctl", f"--root={tmp_path}", "enable", UNIT_NAME]]
    assert (tmp_path / "etc/systemd/system" / UNIT_NAME).stat().st_mode & 0o777 == 0o644


def test_install_on_the_live_root_reloads_enables_and_starts_beside_a_running_ollama(
    tmp_path: Path,
) -> None:
    """On the running system: daemon-reload, enable, and (Ollama active) a non-blocking restart."""
    installer, runner, _ = make(tmp_path, live=True)
    installer.install(UNITS, DEFAULT_CONFIG, enable=True)
    assert runner.calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", UNIT_NAME],
        ["systemctl", "is-active", "--quiet", "ollama.service"],
        ["systemctl", "restart", "--no-block", UNIT_NAME],
    ]


def test_install_does_not_start_when_ollama_is_down(tmp_path: Path) -> None:
    """With ollama.service inactive the companion is enabled but not started."""
    installer, runner, _ = make(tmp_path, live=True, runner=Recorder({"is-active": 3}))
    installer.install(UNITS, DEFAULT_CONFIG, enable=True)
    assert ["systemctl", "restart", "--no-block", UNIT_NAME] not in runner.calls


def test_no_enable_only_reloads(tmp_path: Path) -> None:
    """--no-enable writes and reloads but neither enables nor starts."""
    installer, runner, _ = make(tmp_path, live=True)
    installer.install(UNITS, DEFAULT_CONFIG, enable=False)
    assert runner.calls == [["systemctl", "daemon-reload"]]


def test_dry_run_changes_nothing_and_calls_nothing(tmp_path: Path) -> None:
    """--dry-run says what it would write and run, and writes and runs nothing, even as non-root."""
    installer, runner, out = make(tmp_path, live=True, dry_run=True, euid=1000, booted=False)
    installer.install(UNITS, DEFAULT_CONFIG, enable=True)
    assert files_under(tmp_path) == {}
    assert runner.calls == []
    text = out.getvalue()
    assert f"would write: {tmp_path / 'etc/systemd/system' / UNIT_NAME}" in text
    assert "would run: systemctl daemon-reload" in text
    assert f"would run: systemctl enable {UNIT_NAME}" in text


def test_install_is_idempotent(tmp_path: Path) -> None:
    """A second install rewrites nothing and leaves the same tree."""
    installer, _, _ = make(tmp_path)
    installer.install(UNITS, DEFAULT_CONFIG, enable=True)
    before = files_under(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again, runner, out = make(tmp_path)
    again.install(UNITS, DEFAULT_CONFIG, enable=True)
    assert files_under(tmp_path) == before
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes
    assert "wrote:" not in out.getvalue()
    assert runner.calls == [["systemctl", f"--root={tmp_path}", "enable", UNIT_NAME]]


def test_install_updates_a_changed_unit(tmp_path: Path) -> None:
    """A re-install with another program path replaces the unit text."""
    make(tmp_path)[0].install(UNITS, DEFAULT_CONFIG, enable=False)
    moved = render_units(UnitOptions(command=("/usr/bin/ollama-keepwarm",)))
    make(tmp_path)[0].install(moved, DEFAULT_CONFIG, enable=False)
    text = (tmp_path / "etc/systemd/system" / UNIT_NAME).read_text(encoding="utf-8")
    assert "ExecStart=/usr/bin/ollama-keepwarm run" in text


def test_install_never_overwrites_an_existing_config(tmp_path: Path) -> None:
    """A config already in /etc/ollama-keepwarm is kept byte for byte."""
    config = tmp_path / CONFIG_PATH.lstrip("/")
    config.parent.mkdir(parents=True)
    config.write_text('[[models]]\nname = "mine"\n', encoding="utf-8")
    installer, _, out = make(tmp_path)
    installer.install(UNITS, DEFAULT_CONFIG, enable=True)
    assert config.read_text(encoding="utf-8") == '[[models]]\nname = "mine"\n'
    assert f"kept existing config: {config}" in out.getvalue()


def test_not_root_is_refused_before_any_change(tmp_path: Path) -> None:
    """A non-root user gets exit 77 and a clear message, and nothing is written or run."""
    installer, runner, _ = make(tmp_path, live=True, euid=1000)
    with pytest.raises(SetupError, match="must be run as root") as caught:
        installer.install(UNITS, DEFAULT_CONFIG, enable=True)
    assert caught.value.code == 77
    assert files_under(tmp_path) == {}
    assert runner.calls == []


def test_missing_systemd_is_refused_before_any_change(tmp_path: Path) -> None:
    """Without a running systemd the live install exits 69 and writes nothing."""
    installer, runner, _ = make(tmp_path, live=True, booted=False)
    with pytest.raises(SetupError, match="systemd is not running") as caught:
        installer.install(UNITS, DEFAULT_CONFIG, enable=True)
    assert caught.value.code == 69
    assert files_under(tmp_path) == {}
    assert runner.calls == []


def test_failed_systemctl_call_is_an_error(tmp_path: Path) -> None:
    """A failing `systemctl enable` surfaces as exit 1 naming the command."""
    installer, _, _ = make(tmp_path, live=True, runner=Recorder({"enable": 1}))
    with pytest.raises(SetupError, match="systemctl enable") as caught:
        installer.install(UNITS, DEFAULT_CONFIG, enable=True)
    assert caught.value.code == 1


def test_uninstall_removes_what_install_wrote_but_not_the_config(tmp_path: Path) -> None:
    """Uninstall disables, removes both units and the emptied drop-in folder, keeps the config."""
    make(tmp_path)[0].install(UNITS, DEFAULT_CONFIG, enable=True)
    installer, runner, _ = make(tmp_path, live=True)
    installer.uninstall(UNITS)
    assert files_under(tmp_path) == {CONFIG_PATH.lstrip("/"): DEFAULT_CONFIG}
    assert not (tmp_path / "etc/systemd/system/ollama.service.d").exists()
    assert runner.calls == [
        ["systemctl", "disable", "--now", UNIT_NAME],
        ["systemctl", "daemon-reload"],
    ]


def test_uninstall_is_idempotent_and_spares_foreign_files(tmp_path: Path) -> None:
    """Nothing installed: no disable call; a same-named file without our marker stays."""
    foreign = tmp_path / "etc/systemd/system" / DROPIN_PATH
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Service]\nExecStartPost=/bin/true\n", encoding="utf-8")
    installer, runner, out = make(tmp_path)
    installer.uninstall(UNITS)
    assert foreign.exists()
    assert runner.calls == []
    assert "left in place (not written by us)" in out.getvalue()
    assert all(MARKER in text for text in UNITS.values())


def test_resolve_command_prefers_the_console_script(tmp_path: Path) -> None:
    """argv[0] naming the console script wins; symlinks are kept, not resolved."""
    assert resolve_command("/opt/v/bin/ollama-keepwarm", "/opt/v/bin/python", lambda _: None) == (
        "/opt/v/bin/ollama-keepwarm",
    )
    assert resolve_command(
        "ollama-keepwarm", "/x/python", lambda _: "/usr/bin/ollama-keepwarm"
    ) == ("/usr/bin/ollama-keepwarm",)


def test_resolve_command_under_python_dash_m(tmp_path: Path) -> None:
    """Under `python -m`, the script beside the interpreter, else `python -m ollama_keepwarm`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = str(bin_dir / "python")
    main = "/src/ollama_keepwarm/__main__.py"
    assert resolve_command(main, python, lambda _: None) == (python, "-m", "ollama_keepwarm")
    (bin_dir / "ollama-keepwarm").write_text("#!/bin/sh\n", encoding="utf-8")
    assert resolve_command(main, python, lambda _: None) == (str(bin_dir / "ollama-keepwarm"),)


def test_home_exposures_keeps_only_outermost_home_paths() -> None:
    """Only paths the sandbox hides (homes, /tmp, /var/tmp) are exposed, each tree once."""
    paths = ["/usr", "/root/.pyenv/versions/3.11.7", "/root/.pyenv", "/home/a/venv/", "/rootfs"]
    assert home_exposures(paths) == ("/home/a/venv", "/root/.pyenv")
    assert home_exposures(["/tmp/ci/src", "/var/tmp/x", "/tmpfoo"]) == ("/tmp/ci/src", "/var/tmp/x")


def test_cli_dry_run_prints_the_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`systemd install --dry-run --root DIR` parses, prints both units and writes nothing."""
    parser = argparse.ArgumentParser()
    install.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["systemd", "install", "--dry-run", "--root", str(tmp_path)])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert f"--- etc/systemd/system/{UNIT_NAME}" in printed
    assert "ExecStartPost=-/usr/bin/timeout" in printed
    assert files_under(tmp_path) == {}


def test_cli_reports_not_root_with_exit_77(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI a non-root user sees one clear error line and exit status 77."""
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    parser = argparse.ArgumentParser()
    install.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["systemd", "uninstall", "--root", str(tmp_path)])
    assert args.run(args) == 77
    assert "systemd uninstall: error: must be run as root" in capsys.readouterr().err
