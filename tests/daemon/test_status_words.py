"""The status table's words for time left read as a person expects (issue 24)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ollama_keepwarm.daemon.status import render_table, until_text

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("left_s", "text"),
    [
        (1, "1 second from now"),
        (45, "45 seconds from now"),
        (60, "1 minute from now"),
        (111, "1 minute 51 seconds from now"),  # not "1 minute": 46% short
        (9 * 60 + 59, "9 minutes 59 seconds from now"),
        (29 * 60 + 30, "29 minutes from now"),  # at ten or more, what is left off is < 10%
        (3600 + 1800, "1 hour 30 minutes from now"),
        (2 * 86400 + 3 * 3600, "2 days 3 hours from now"),
        (0, "Stopping..."),
        (-5, "Stopping..."),
        (10**10, "Forever"),
    ],
)
def test_until_text(left_s: float, text: str) -> None:
    assert until_text(NOW + timedelta(seconds=left_s), NOW) == text


@pytest.mark.parametrize(("next_s", "cell"), [(0.4, "now"), (0, "now"), (111, "in 1 minute 51")])
def test_next_refresh_cell(next_s: float, cell: str) -> None:
    """Under a second is "now", never "in 0 seconds"."""
    model = {
        "name": "m",
        "state": "warm",
        "until": "-",
        "next_refresh_in_s": next_s,
        "last_warm_s": None,
        "processor": "-",
        "reason": "lease ending",
    }
    table = render_table({"hosts": [{"host": "h", "ollama_up": True, "models": [model]}]})
    assert cell in table.splitlines()[2]
