"""The read-only local HTTP endpoint: ``/healthz``, ``/readyz``, ``/status``, ``/metrics``.

Bound to 127.0.0.1 by default. ``/healthz`` answers from the event loop itself, so it fails when
the loop is wedged; ``/readyz`` is for a Slack bot's unit or a readiness probe: 200 only while
every kept model that is not paused or held back, and is inside its windows, is resident.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

from ollama_keepwarm.daemon.metrics import CONTENT_TYPE, StatusSource

__all__ = ["Exposition", "make_app", "serve"]

_log = structlog.get_logger("ollama_keepwarm")

Exposition = Callable[[], bytes]
"""The Prometheus text of the keeper's metrics."""


READY_STATES = frozenset({"warm", "paused", "conflict", "mismatch", "outside"})
"""Model states that let ``/readyz`` say 200: loaded (a client's runner counts: its clients are
served warm), or left alone on purpose (paused; held because the kept set does not fit; outside
its windows). A model outside its windows is not counted even while it warms for the next."""


def make_app(read_status: StatusSource, read_metrics: Exposition) -> web.Application:
    """Build the aiohttp application over the two readers a running keeper hands it."""
    app = web.Application()

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(_request: web.Request) -> web.Response:
        document = read_status()
        models = [m for host in document["hosts"] for m in host["models"]]
        cold = [
            {"name": m["name"], "state": m["state"], "reason": m["reason"]}
            for m in models
            if m["state"] not in READY_STATES and (m.get("window") is None or m["window"]["inside"])
        ]
        # Loaded but not as configured, or held back on purpose: ready, and said why.
        notes = [
            {"name": m["name"], "state": m["state"], "reason": m["reason"]}
            for m in models
            if m["state"] in {"mismatch", "conflict"}
        ]
        down = [h["host"] for h in document["hosts"] if not h["ollama_up"]]
        # A failed reload does not make the kept models cold: said, not a 503 (issue 24).
        reload = (document.get("config_reload") or {}).get("note")
        extra = {"config_reload_failed": reload} if reload else {}
        if cold or down or not document["hosts"]:
            return web.json_response(
                {"ready": False, "cold": cold, "ollama_down": down, "notes": notes, **extra},
                status=503,
            )
        return web.json_response({"ready": True, "cold": [], "notes": notes, **extra})

    async def status(_request: web.Request) -> web.Response:
        return web.json_response(read_status())

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=read_metrics())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(
    read_status: StatusSource, read_metrics: Exposition, host: str, port: int
) -> web.AppRunner | None:
    """Start the endpoint; a busy port is logged, not fatal (the keeper matters more)."""
    runner = web.AppRunner(
        make_app(read_status, read_metrics), access_log=None, handle_signals=False
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        _log.warning("http_endpoint_failed", host=host, port=port, error=str(exc))
        await runner.cleanup()
        return None
    _log.info("http_endpoint_listening", url=f"http://{host}:{port}")
    return runner
