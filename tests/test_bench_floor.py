"""The benchmark's floor as tables: which requests no keeper could have served warm.

llama3.1:8b loads in 4.92 s and llama3.3:70b in 42.52 s on the bench's clock; the cold
threshold is 1.5 s, so after a loss at ``t`` an 8B request is unavoidably cold before
``t + 3.42`` (``t + 45.94`` behind the 70B's first load).
"""

from __future__ import annotations

import pytest
from bench.floor import floor, windows
from bench.traces import BIG_MODEL, Disruption, Request, Trace

M = "llama3.1:8b"
S = "llama3.2:3b"  # 2.02 s


def _trace(
    at: list[float],
    disruptions: list[Disruption],
    other: list[float],
    small: tuple[float, ...] = (),
) -> Trace:
    requests = [Request(t, M, 1) for t in at] + [Request(t, BIG_MODEL, 5, "other") for t in other]
    requests += [Request(t, S, 1) for t in small]
    return Trace(
        "t",
        "test",
        0,
        10_000.0,
        (M, S) if small else (M,),
        tuple(sorted(requests, key=lambda r: r.at_s)),
        tuple(disruptions),
    )


RESTART = Disruption(100.0, "restart", 20.0)  # down 100-120
SUSPEND = Disruption(100.0, "suspend", 600.0)  # asleep 100-700


@pytest.mark.parametrize(
    ("at", "disruptions", "other", "expected"),
    [
        ([0.0, 3.4, 3.5, 50.0], [], [], [0.0, 3.4]),  # Ollama's own start
        ([99.9, 100.0, 119.9, 123.4, 123.5], [RESTART], [], [100.0, 119.9, 123.4]),
        ([99.9, 100.0, 400.0, 703.4, 703.5], [SUSPEND], [], [100.0, 400.0, 703.4]),
        ([499.9, 500.0, 545.9, 546.0], [], [500.0], [500.0, 545.9]),  # behind the 70B
        ([800.0, 845.0], [], [500.0, 800.0], []),  # its second load is no certainty
        ([800.0, 845.0], [RESTART], [50.0, 800.0], [800.0, 845.0]),  # but it is after a restart
    ],
)
def test_floor(
    at: list[float], disruptions: list[Disruption], other: list[float], expected: list[float]
) -> None:
    """A request is in the floor when it came before loss + loads ahead + its load - 1.5 s."""
    assert [r.at_s for r in floor(_trace(at, disruptions, other))] == expected


def test_two_kept_models_load_one_after_the_other_in_the_kindest_order() -> None:
    """Back at 120 s: 8B first spares the 8B request, 3B first spares both 3B ones: it wins."""
    trace = _trace([124.0], [RESTART], [], small=(121.0, 122.0))
    assert [(r.at_s, r.model) for r in floor(trace)] == [(124.0, M)]


def test_windows_name_every_loss_in_time_order() -> None:
    """One window per start, disruption and certain 70B load, so the report can show them."""
    trace = _trace([], [RESTART, Disruption(900.0, "suspend", 60.0)], [500.0, 600.0])
    assert [(w.kind, w.opens_s) for w in windows(trace)] == [
        ("start", 0.0),
        ("restart", 100.0),
        ("eviction", 500.0),
        ("suspend", 900.0),
    ]
