"""The benchmark's cost-to-others metric on hand-made cell records (times in trace seconds).

The other client asks for the 70B at 1000 s; what evicted it before decides whose fault its
cold start is: a strategy's warm (any path but ``/api/chat``), or a client's own request.
"""

from __future__ import annotations

import pytest
from bench.cell import CellResult, ClientResult, EvictionSpan, LoadSpan
from bench.metrics import measure
from bench.traces import BIG_MODEL, Request, Trace

M = "llama3.1:8b"
TRACE = Trace("t", "test", 0, 2000.0, (M,), (Request(1000.0, BIG_MODEL, 5, "other"),), ())
BIG_LOADED = LoadSpan(BIG_MODEL, "cold", "/api/chat", 100.0, 142.5, ok=True)
BIG_AGAIN = LoadSpan(BIG_MODEL, "cold", "/api/chat", 1000.0, 1042.5, ok=True)
OTHER_COLD = ClientResult(1000.0, BIG_MODEL, "other", 200, 50.0, 42.5)


def _cell(loads: list[LoadSpan], evictions: list[EvictionSpan]) -> CellResult:
    return CellResult(
        "t",
        "s",
        1.0,
        (OTHER_COLD,),
        (BIG_LOADED, *loads, BIG_AGAIN),
        (),
        tuple(evictions),
        0,
        1.0,
        1.0,
    )


@pytest.mark.parametrize(
    ("loads", "evictions", "caused"),
    [
        ([], [], 0),  # it expired: nobody's fault
        ([LoadSpan(M, "cold", "/api/generate", 500.0, 504.9, ok=True)], [], 0),
        (  # a keeper's warm evicted it
            [LoadSpan(M, "cold", "/api/generate", 500.0, 504.9, ok=True)],
            [EvictionSpan(BIG_MODEL, M, 500.0)],
            1,
        ),
        (  # a client's own chat evicted it
            [LoadSpan(M, "cold", "/api/chat", 500.0, 504.9, ok=True)],
            [EvictionSpan(BIG_MODEL, M, 500.0)],
            0,
        ),
        (  # evicted by a warm, but loaded again since: this time it left another way
            [
                LoadSpan(M, "cold", "/api/generate", 500.0, 504.9, ok=True),
                LoadSpan(BIG_MODEL, "cold", "/api/chat", 600.0, 642.5, ok=True),
            ],
            [EvictionSpan(BIG_MODEL, M, 500.0)],
            0,
        ),
    ],
)
def test_other_clients_cold_requests_caused_by_a_strategy(
    loads: list[LoadSpan], evictions: list[EvictionSpan], caused: int
) -> None:
    """Only an eviction for a strategy's own load, with no reload since, is its cost."""
    m = measure(_cell(loads, evictions), TRACE)
    assert (m.other_requests, m.other_cold, m.other_cold_caused) == (1, 1, caused)
