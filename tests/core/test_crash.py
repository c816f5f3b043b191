"""core/crash.py as tables: checks after a process exit, the wedge bound, the unit's cgroup."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ollama_keepwarm.core import crash, plan
from ollama_keepwarm.core.config import ConfigError, DaemonConfig, ModelConfig, parse_config
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

NOW = datetime(2026, 1, 1, tzinfo=UTC)
V2 = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V1 = (
    "32 31 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    "33 31 0:30 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
    "34 31 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
)


@pytest.mark.parametrize(
    ("self_cgroup", "mountinfo", "unit", "expected"),
    [
        (
            "0::/system.slice/ollama-keepwarm.service\n",
            V2,
            "ollama.service",
            ["/sys/fs/cgroup/system.slice/ollama.service"],
        ),
        (  # another slice: beside us first, then system.slice
            "0::/custom.slice/ollama-keepwarm.service\n",
            V2,
            "ollama-rocm.service",
            [
                "/sys/fs/cgroup/custom.slice/ollama-rocm.service",
                "/sys/fs/cgroup/system.slice/ollama-rocm.service",
            ],
        ),
        (  # hybrid v1: v2 first, then each v1 hierarchy we are in
            "2:pids:/system.slice/k.service\n1:name=systemd:/system.slice/k.service\n0::/\n",
            V1,
            "ollama.service",
            [
                "/sys/fs/cgroup/unified/system.slice/ollama.service",
                "/sys/fs/cgroup/systemd/system.slice/ollama.service",
                "/sys/fs/cgroup/pids/system.slice/ollama.service",
            ],
        ),
        ("0::/\n", "", "ollama.service", []),  # no cgroup mounted
    ],
)
def test_cgroup_candidates(
    self_cgroup: str, mountinfo: str, unit: str, expected: list[str]
) -> None:
    assert crash.cgroup_candidates(self_cgroup, mountinfo, unit) == expected


@pytest.mark.parametrize(
    ("cold_load_s", "slack_s", "bound"),
    [
        (None, None, 15.0 + 60.0),  # never loaded by us: 30 s assumed
        (4.9, None, 15.0 + 9.8),  # an 8B: Ollama's 10 s ping + 5 s recovery + two loads
        (0.25, 0.2, 0.7),
    ],
)
def test_wedge_bound(cold_load_s: float | None, slack_s: float | None, bound: float) -> None:
    assert crash.wedge_bound_s(cold_load_s, slack_s=slack_s) == pytest.approx(bound)


@pytest.mark.parametrize(
    ("expected_reload", "ok", "renew_at"),
    [
        (True, True, NOW),  # a repair: claim our keep_alive back at once
        (False, True, None),  # a live runner answered: nothing more
        (True, False, None),  # the call failed: the usual back-off handles it
    ],
)
def test_after_a_check(expected_reload: bool, ok: bool, renew_at: datetime | None) -> None:
    st = plan.ModelState(check_requested_at=NOW, wedged_since=NOW)
    events = [plan.Event("runner_reloaded", "m", {"expected": True})] if expected_reload else []
    after = crash.after_call(st, events, NOW, ok=ok)
    assert after.refresh_requested_at == renew_at
    assert (after.wedged_since is None) is ok


def test_a_check_is_a_ping_that_leaves_the_lease_alone() -> None:
    model = ModelConfig("m")
    row = RunningModel(
        name="m:latest",
        size_bytes=1,
        size_vram_bytes=1,
        digest="d" * 64,
        expires_at=datetime(2026, 1, 1, 1, tzinfo=UTC),
        context_length=4096,
    )
    snapshot = PsSnapshot(NOW, (row,))
    earlier = datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
    st = plan.ModelState(last_warm_ok_at=earlier, check_requested_at=NOW)
    (decision,) = plan.decide([model], DaemonConfig(), snapshot, {model.key: st}, NOW)
    assert (decision.action, decision.reason, decision.renew) == (
        plan.Action.REFRESH,
        plan.RUNNER_CHECK,
        False,
    )


@pytest.mark.parametrize("value", ["auto", "", "ollama-rocm.service", "/sys/fs/cgroup/x"])
def test_cgroup_setting_accepts(value: str) -> None:
    assert parse_config({"ollama": {"cgroup": value}}, environ={}).ollama.cgroup == value


@pytest.mark.parametrize("value", ["ollama", "relative/path", 3])
def test_cgroup_setting_refuses(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^ollama\.cgroup: "):
        parse_config({"ollama": {"cgroup": value}}, environ={})


def test_on_runner_wedged_is_a_command() -> None:
    config = parse_config({"daemon": {"on_runner_wedged": ["systemctl", "restart", "ollama"]}})
    assert config.daemon.on_runner_wedged == ("systemctl", "restart", "ollama")
    with pytest.raises(ConfigError, match=r"^daemon\.on_runner_wedged: "):
        parse_config({"daemon": {"on_runner_wedged": "systemctl restart ollama"}})
