"""The companion under a real systemd (Debian bookworm's 252, PID 1 of an nspawn container).

Inside the container the fake Ollama plays ``ollama.service`` and our units are installed with
``ollama-keepwarm systemd install``, exactly as a user would. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator

import pytest
from nspawn import Container, program, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

UNIT = "ollama-keepwarm.service"
CONFIG = "/etc/ollama-keepwarm/config.toml"
DROPINS = "/run/systemd/system/ollama-keepwarm.service.d"
BASE_MODELS = {"llama3.2:3b", "nomic-embed-text"}
# At 1 s per GB the first warm pass takes about 2.3 s: long enough to see systemd wait for READY.
FAKE_OLLAMA_UNIT = """\
[Unit]
Description=Fake Ollama for the ollama-keepwarm system test

[Service]
ExecStart={program} fake-ollama --host 127.0.0.1 --port 11434 --load-seconds-per-gb 1

[Install]
WantedBy=multi-user.target
"""


def config(*models: str, extra: str = "") -> str:
    """A config keeping ``models`` warm in the container's fake Ollama."""
    tables = "".join(f'\n[[models]]\nname = "{name}"\nkeep_alive = "1h"\n' for name in models)
    return f'[ollama]\nhost = "http://127.0.0.1:11434"\n{extra}{tables}'


BASE_CONFIG = config(*sorted(BASE_MODELS))


def ps(c: Container) -> set[str]:
    """Names of the models the fake Ollama has loaded (GET /api/ps), ':latest' dropped."""
    code = (
        "import json, urllib.request; "
        "print(json.dumps(json.load(urllib.request.urlopen("
        "'http://127.0.0.1:11434/api/ps', timeout=5))))"
    )
    out = c.run(sys.executable, "-c", code, timeout=20).stdout
    return {m["name"].removesuffix(":latest") for m in json.loads(out)["models"]}


def unload(c: Container, name: str) -> None:
    """Ask the fake to unload a model (keep_alive 0), as Ollama's own API allows."""
    body = json.dumps({"model": name, "keep_alive": 0})
    code = (
        "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request("
        "'http://127.0.0.1:11434/api/generate', data=sys.argv[1].encode(), "
        "headers={'Content-Type': 'application/json'}), timeout=10).read()"
    )
    c.run(sys.executable, "-c", code, body, timeout=20)


def state(c: Container, unit: str = UNIT) -> str:
    """ActiveState of a unit."""
    return c.prop(unit, "ActiveState")


def wait_active(c: Container, unit: str = UNIT, timeout: float = 60) -> None:
    """Wait until the unit is active (for a Type=notify unit: READY=1 arrived).

    On a timeout the failure carries the unit's last journal lines: the why, not just the what.
    """
    try:
        wait_for(lambda: state(c, unit) == "active", timeout, f"{unit} to become active")
    except AssertionError as exc:
        journal = c.run("journalctl", "-u", unit, "-n", "40", "--no-pager", check=False).stdout
        raise AssertionError(f"{exc}; its journal:\n{journal}") from None


def exec_start_post_status(c: Container) -> int:
    """Exit status of ollama.service's last ExecStartPost (our warm-up)."""
    text = c.prop("ollama.service", "ExecStartPost")
    match = re.search(r"status=(\d+)", text)
    assert match, text
    return int(match.group(1))


def install(c: Container) -> str:
    """Run `ollama-keepwarm systemd install` inside, as root, and return what it printed."""
    result = c.run(*program(), "systemd", "install", timeout=60)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def system(container: Container) -> Container:
    """The container with the fake as ollama.service and our units installed and running."""
    c = container
    c.write(
        "/etc/systemd/system/ollama.service", FAKE_OLLAMA_UNIT.format(program=" ".join(program()))
    )
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "enable", "--now", "ollama.service")
    c.write(CONFIG, BASE_CONFIG)  # install must keep it
    printed = install(c)
    assert "kept existing config" in printed, printed
    wait_active(c)
    return c


@pytest.fixture
def fresh(system: Container) -> Iterator[Container]:
    """Each test starts from the base config, no test drop-ins, and a just-restarted Ollama."""
    c = system
    c.run("rm", "-rf", DROPINS)
    c.write(CONFIG, BASE_CONFIG)
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "reset-failed", check=False)
    c.run("systemctl", "restart", "ollama.service", timeout=120)
    wait_active(c)
    wait_for(lambda: ps(c) >= BASE_MODELS, 30, "the base models to be warm")
    yield c
    c.run("rm", "-rf", DROPINS)


def test_install_enabled_the_companion_beside_ollama(fresh: Container) -> None:
    """install enabled the unit under ollama.service, added the drop-in, and kept our config."""
    c = fresh
    assert c.run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    assert c.path(f"/etc/systemd/system/ollama.service.wants/{UNIT}").is_symlink()
    assert "ollama-keepwarm.conf" in c.prop("ollama.service", "DropInPaths")
    assert c.path(CONFIG).read_text(encoding="utf-8") == BASE_CONFIG
    result = c.run("systemd-analyze", "security", "--no-pager", UNIT)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= 2.0


def test_active_only_after_ready_with_every_model_warm(fresh: Container) -> None:
    """systemd reports the companion started only once READY=1 came, and by then all are warm."""
    c = fresh
    c.run("systemctl", "stop", UNIT)
    for name in BASE_MODELS:
        unload(c, name)
    wait_for(lambda: not ps(c), 20, "the fake to unload every model")

    c.run("systemctl", "start", "--no-block", UNIT)
    seen: list[str] = []

    def active() -> bool:
        seen.append(state(c))
        return seen[-1] == "active"

    wait_for(active, 60, f"{UNIT} to become active", interval=0.05)
    assert ps(c) >= BASE_MODELS, "active (READY=1) before every model was warm"
    assert "activating" in seen
    times = c.show(UNIT, "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    waited_s = (
        int(times["ActiveEnterTimestampMonotonic"]) - int(times["ExecMainStartTimestampMonotonic"])
    ) / 1e6
    assert waited_s >= 1.5, f"READY after {waited_s:.2f}s: too soon for a 2.3 s warm pass"
    status = c.prop(UNIT, "StatusText")
    assert "2/2" in status, f"STATUS= did not reach systemd: {status!r}"


def test_restart_of_ollama_brings_both_back_warm(fresh: Container) -> None:
    """`systemctl restart ollama` warms through ExecStartPost, then restarts the companion."""
    c = fresh
    before = c.prop(UNIT, "InvocationID")
    c.run("systemctl", "restart", "ollama.service", timeout=120)
    # restart returns once ollama.service is started, ExecStartPost included: already warm.
    assert state(c, "ollama.service") == "active"
    assert exec_start_post_status(c) == 0
    assert ps(c) >= BASE_MODELS
    wait_for(
        lambda: c.prop(UNIT, "InvocationID") != before and state(c) == "active",
        60,
        "a new invocation of the companion to become active",
    )
    assert ps(c) >= BASE_MODELS


def test_failing_warm_leaves_ollama_active(fresh: Container) -> None:
    """A warm-up that fails (an unknown model) is ignored: ollama.service still starts."""
    c = fresh
    c.write(CONFIG, config("no-such-model:1b", *sorted(BASE_MODELS)))
    result = c.run("systemctl", "restart", "ollama.service", check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert state(c, "ollama.service") == "active"
    assert exec_start_post_status(c) != 0
    assert ps(c) >= BASE_MODELS, "the warm-up should still warm the models that exist"


def test_reload_applies_a_new_config_and_keeps_the_old_on_error(fresh: Container) -> None:
    """`systemctl reload` warms a newly listed model in the same process; a bad file is refused."""
    c = fresh
    pid = c.prop(UNIT, "MainPID")
    cursor = c.cursor()
    c.write(CONFIG, config(*sorted(BASE_MODELS), "tiny"))
    c.run("systemctl", "reload", UNIT)
    wait_for(lambda: "tiny" in ps(c), 30, "the newly listed model to be warmed")
    wait_for(lambda: "config_reloaded" in c.journal(UNIT, cursor), 10, "config_reloaded")
    assert c.prop(UNIT, "MainPID") == pid

    c.write(CONFIG, "[[models]\nname = broken\n")
    c.run("systemctl", "reload", UNIT)
    wait_for(lambda: "config_reload_failed" in c.journal(UNIT, cursor), 10, "config_reload_failed")
    assert state(c) == "active"
    assert c.prop(UNIT, "MainPID") == pid


def test_watchdog_restarts_a_frozen_daemon(fresh: Container) -> None:
    """A healthy loop keeps pinging; a frozen one (SIGSTOP) is killed and restarted by systemd."""
    c = fresh
    c.write(
        f"{DROPINS}/watchdog.conf",
        "[Service]\nWatchdogSec=2s\nRestartSec=500ms\nTimeoutAbortSec=2s\n",
    )
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "restart", UNIT, timeout=60)
    wait_active(c)
    pid = c.prop(UNIT, "MainPID")
    restarts = int(c.prop(UNIT, "NRestarts"))

    # Three watchdog periods alive: WATCHDOG=1 does arrive from the running loop.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        now = c.show(UNIT, "ActiveState", "MainPID", "NRestarts")
        assert now == {"ActiveState": "active", "MainPID": pid, "NRestarts": str(restarts)}
        time.sleep(0.5)

    cursor = c.cursor()
    c.run("kill", "-STOP", pid)
    wait_for(
        lambda: (
            int(c.prop(UNIT, "NRestarts")) > restarts
            and c.prop(UNIT, "MainPID") not in ("0", pid)
            and state(c) == "active"
        ),
        60,
        "the watchdog to kill and restart the frozen daemon",
    )
    assert "Failed with result 'watchdog'" in c.journal(UNIT, cursor)


def test_bad_config_exits_78_and_is_not_restarted(fresh: Container) -> None:
    """An invalid config ends the daemon with 78 and RestartPreventExitStatus keeps it down."""
    c = fresh
    restarts = int(c.prop(UNIT, "NRestarts"))
    c.write(CONFIG, '[daemon]\npoll_interval = "soon"\n')
    result = c.run("systemctl", "restart", UNIT, check=False, timeout=60)
    assert result.returncode != 0
    wait_for(lambda: state(c) == "failed", 20, f"{UNIT} to be failed (no auto-restart)")
    assert c.show(UNIT, "ExecMainStatus", "NRestarts") == {
        "ExecMainStatus": "78",
        "NRestarts": str(restarts),
    }


def test_journal_has_structured_lines(fresh: Container) -> None:
    """journalctl shows logfmt lines with stable event names, without a timestamp of our own."""
    c = fresh
    lines = [line for line in c.journal(UNIT).splitlines() if line.startswith("level=")]
    warmed = [line for line in lines if "event=model_warmed" in line]
    assert warmed, "no event=model_warmed line in the journal"
    assert re.search(r"\bmodel=\S+", warmed[0])
    assert all(re.match(r"level=\w+ event=\w+", line) for line in lines), lines[:5]
    assert not any(re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", line) for line in lines[:20])


def test_stop_of_ollama_stops_the_companion_cleanly(fresh: Container) -> None:
    """Stopping Ollama stops the companion with it (BindsTo), which exits 0 after STOPPING=1."""
    c = fresh
    c.run("systemctl", "stop", "ollama.service", timeout=60)
    wait_for(lambda: state(c) == "inactive", 30, f"{UNIT} to stop with ollama.service")
    assert c.show(UNIT, "Result", "ExecMainStatus") == {"Result": "success", "ExecMainStatus": "0"}


def test_uninstall_removes_the_units_and_keeps_the_config(fresh: Container) -> None:
    """uninstall stops and removes the companion and the drop-in; a re-install brings it back.

    It starts from ``fresh`` like the others: in random order it may follow the reload test,
    which leaves a broken config behind, or the bad-config test, which leaves the unit failed.
    """
    c = fresh
    c.run(*program(), "systemd", "uninstall", timeout=60)
    assert c.prop(UNIT, "LoadState") == "not-found"
    assert "ollama-keepwarm.conf" not in c.prop("ollama.service", "DropInPaths")
    assert state(c, "ollama.service") == "active"
    assert c.path(CONFIG).is_file()

    printed = install(c)
    assert "kept existing config" in printed
    wait_active(c)
    printed = install(c)
    assert "wrote:" not in printed, "a second install should change nothing"
