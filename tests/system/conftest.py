"""Fixtures for the real-systemd tests: one booted container per module, torn down always.

The tests skip, saying why, without root, systemd-nspawn or debootstrap; with
OKW_REQUIRE_SYSTEM_TEST=1 (for CI) they fail instead, so a missing install step cannot hide.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest
from nspawn import Container, booted, missing_requirement


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    """A booted Debian bookworm container whose PID 1 is systemd (skips when it cannot be)."""
    reason = missing_requirement()
    if reason and os.environ.get("OKW_REQUIRE_SYSTEM_TEST"):
        pytest.fail(f"real-systemd test required (OKW_REQUIRE_SYSTEM_TEST) but {reason}")
    if reason:
        pytest.skip(f"real-systemd test skipped: {reason}")
    with booted() as booted_container:
        yield booted_container


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the container's journal to a failed test's report: what systemd saw."""
    report = yield
    if report.when != "call" or not report.failed:
        return report
    funcargs = getattr(item, "funcargs", {})
    found = [value for value in funcargs.values() if isinstance(value, Container)]
    if found:
        result = found[0].run("journalctl", "--no-pager", "-n", "200", check=False, timeout=20)
        report.sections.append(
            ("container journal (last 200 lines)", result.stdout + result.stderr)
        )
    return report
