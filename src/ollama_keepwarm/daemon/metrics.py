"""Prometheus metrics: counters fed by the keeper's events, gauges read from its state at scrape.

Each :class:`Metrics` has its own registry (not prometheus-client's global one), so two keepers in
one test process do not collide. Names are prefixed ``ollama_keepwarm_`` and labelled by
``host`` and ``model`` (the configured name).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "ollama_keepwarm"
# Loads take from ~10 ms (already loaded) through seconds (8B) to about a minute (70B).
_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, math.inf)

StatusSource = Callable[[], Mapping[str, Any]]


class _StateCollector(Collector):
    """Gauges computed from the keeper's status document at each scrape."""

    def __init__(self, status: StatusSource) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        def model_gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{_PREFIX}_{name}", doc, labels=["host", "model"])

        resident = model_gauge("model_resident", "1 while the model is listed in /api/ps")
        lease = model_gauge(
            "model_lease_seconds", "Seconds until the model's expires_at (+Inf: forever)"
        )
        # One 0/1 gauge per state the status document names.
        by_state = {
            "paused": model_gauge("model_paused", "1 while paused by an operator"),
            "conflict": model_gauge("model_conflict", "1 while held back by a capacity conflict"),
            "mismatch": model_gauge(
                "model_options_mismatch",
                "1 while a client's runner with other load options is resident (left alone)",
            ),
        }
        in_window = model_gauge(
            "model_in_window", "1 while inside one of the model's windows (always 1 without `when`)"
        )
        primed = model_gauge(
            "model_primed", "1 while the model's configured prefix is cached since its last load"
        )
        up = GaugeMetricFamily(f"{_PREFIX}_ollama_up", "1 while Ollama answers", labels=["host"])
        poll_errors = CounterMetricFamily(
            f"{_PREFIX}_poll_errors",
            "Failed /api/ps polls (unreachable or malformed)",
            labels=["host"],
        )
        ready = GaugeMetricFamily(f"{_PREFIX}_ready", "1 once the first warm pass is done")
        # Learned hours (issue 25): read from the persisted profile, so they survive restarts.
        kept_share = model_gauge(
            "learned_kept_share", "Share of the week a learned model is kept (1 while learning)"
        )
        uses = CounterMetricFamily(
            f"{_PREFIX}_learned_uses",
            "Uses of a learned model by other clients seen (a foreign load or a moved lease)",
            labels=["host", "model"],
        )
        cold_uses = CounterMetricFamily(
            f"{_PREFIX}_learned_cold_uses",
            "Uses of a learned model that found it unloaded (the client paid a load)",
            labels=["host", "model"],
        )
        document = self._status()
        ready.add_metric([], 1.0 if document.get("ready") else 0.0)
        for host in document.get("hosts", []):
            up.add_metric([host["host"]], 1.0 if host["ollama_up"] else 0.0)
            poll_errors.add_metric([host["host"]], float(host["poll_errors"]))
            for model in host["models"]:
                labels = [host["host"], model["name"]]
                resident.add_metric(labels, 1.0 if model["listed_as"] else 0.0)
                if model["listed_as"]:
                    left = model["lease_left_s"]
                    lease.add_metric(labels, math.inf if left is None else float(left))
                for state, gauge in by_state.items():
                    gauge.add_metric(labels, 1.0 if model["state"] == state else 0.0)
                if model.get("prime"):
                    primed.add_metric(labels, 1.0 if model["prime"]["primed"] else 0.0)
                window = model.get("window")
                in_window.add_metric(labels, 1.0 if window is None or window["inside"] else 0.0)
                if model.get("learned"):
                    kept_share.add_metric(labels, float(model["learned"]["kept_share"]))
                    uses.add_metric(labels, float(model["learned"]["uses"]))
                    cold_uses.add_metric(labels, float(model["learned"]["cold_uses"]))
        yield from (resident, lease, *by_state.values(), primed, in_window, up, poll_errors, ready)
        yield from (kept_share, uses, cold_uses)


class Metrics:
    """The daemon's metrics."""

    def __init__(self, status: StatusSource) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["host", "model"]

        def counter(name: str, doc: str, *extra: str) -> Counter:
            return Counter(f"{_PREFIX}_{name}", doc, [*labels, *extra], registry=self.registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(
                f"{_PREFIX}_{name}", doc, labels, buckets=_BUCKETS, registry=self.registry
            )

        self.warms = counter("warms", "Warm calls by result (ok, error, timeout)", "result")
        self.warm_seconds = histogram("warm_duration_seconds", "Wall time of successful warms")
        self.cold_loads = counter("cold_loads", "Warms that loaded a model that was not listed")
        self.repairs = counter(
            "repairs",
            "Models lost and re-warmed, by cause (expired, evicted, restart, oom, reload, resume)",
            "cause",
        )
        self.reloads = counter(
            "reloads_suspected",
            "Refreshes that took as long as a load (Ollama reloaded the model)",
        )
        self.conflicts = counter(
            "capacity_conflicts", "Times a model was held back because it does not fit"
        )
        self.wedged = counter(
            "runners_wedged",
            "Refreshes of a loaded model that hung while Ollama answered (once per episode)",
        )
        self.primes = counter(
            "primes",
            "Priming requests (the clients' prefix after a load) by result (ok, error)",
            "result",
        )
        self.prime_seconds = histogram(
            "prime_duration_seconds", "Wall time of successful priming requests"
        )
        self.resumes = Counter(
            f"{_PREFIX}_resumes", "Resumes from suspend seen", registry=self.registry
        )
        self.registry.register(_StateCollector(status))

    def on_event(self, name: str, host: str, model: str, fields: Mapping[str, Any]) -> None:
        """Count one keeper event."""
        labels = (host, model)
        if name == "model_warmed":
            self.warms.labels(*labels, "ok").inc()
            if fields.get("loaded", True):  # an alias found resident was no load (§7.1)
                self.cold_loads.labels(*labels).inc()
            self.warm_seconds.labels(*labels).observe(float(fields.get("duration_s", 0.0)))
        elif name == "model_refreshed":
            self.warms.labels(*labels, "ok").inc()
            self.warm_seconds.labels(*labels).observe(float(fields.get("duration_s", 0.0)))
        elif name == "warm_failed":
            self.warms.labels(*labels, "error").inc()
        elif name == "model_vanished":
            self.repairs.labels(*labels, str(fields.get("cause", "unknown"))).inc()
        elif name == "runner_reloaded":
            self.reloads.labels(*labels).inc()
            self.repairs.labels(*labels, "reload").inc()
        elif name == "runner_wedged":
            self.wedged.labels(*labels).inc()
        elif name == "warm_timed_out":
            self.warms.labels(*labels, "timeout").inc()
        elif name == "model_primed":
            self.primes.labels(*labels, "ok").inc()
            self.prime_seconds.labels(*labels).observe(float(fields.get("duration_s", 0.0)))
        elif name == "prime_failed":
            self.primes.labels(*labels, "error").inc()
        elif name == "capacity_conflict":
            self.conflicts.labels(*labels).inc()
        elif name == "resumed_from_suspend":
            self.resumes.inc()
        elif name == "refreshed_after_resume":
            self.repairs.labels(*labels, "resume").inc()

    def exposition(self) -> bytes:
        """Render the Prometheus text format."""
        return generate_latest(self.registry)
