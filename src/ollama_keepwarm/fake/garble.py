"""Broken answers, for the fault that garbles the next answer to a path (issue 22 item 5).

A real Ollama answers valid HTTP and JSON, but what sits between it and a client may not: a
proxy that breaks, a connection cut mid-answer, another program on the port. Each kind below is
one such answer, as the client's socket sees it:

``http``        not HTTP at all (a bad status line)
``disconnect``  the connection closed without a byte
``cut``         a 200 whose body stops short of its ``Content-Length``
``charset``     a 200 whose body does not decode in its declared (unknown) charset
``nested``      a 200 whose JSON nests deeper than a parser's recursion limit
``shape``       a 200 with valid JSON of the wrong shape for every endpoint
``html``        a 200 with an HTML page (a captive portal, a proxy's error page)
``utf8``        a 200 whose JSON is cut short and is not UTF-8 (what a bad proxy sends)
``500``         Ollama's error shape with an internal error, the request not served
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["KINDS", "garbled"]

KINDS = ("http", "disconnect", "cut", "charset", "nested", "shape", "html", "utf8", "500")

_SHAPE = (
    b'{"models": [{"name": 7, "size": "big", "expires_at": 1e999}], "version": 7,'
    b' "capabilities": 5, "modelfile": 3}'
)


async def garbled(request: web.Request, kind: str) -> web.StreamResponse:
    """Answer ``request`` broken the way ``kind`` says (one of :data:`KINDS`)."""
    transport = request.transport
    if kind in {"http", "disconnect"}:
        if transport is not None:
            if kind == "http":
                transport.write(b"HTTP/1.1 2OO NOT A STATUS\r\n\r\n")
            transport.close()
        return web.Response()  # never sent: the connection is gone
    if kind == "cut":
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Content-Length": "100"}
        )
        await response.prepare(request)
        await response.write(b'{"models": [')
        if transport is not None:
            transport.close()
        return response
    if kind == "charset":
        return web.Response(
            body=b'{"models": []}\xff\xfe',
            headers={"Content-Type": "application/json; charset=x-no-such-charset"},
        )
    if kind == "nested":
        return web.Response(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
    if kind == "shape":
        return web.Response(body=_SHAPE, content_type="application/json")
    if kind == "html":
        return web.Response(
            text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
        )
    if kind == "utf8":
        return web.Response(body=b'{"models":[{"name":"\xff\xfe', content_type="application/json")
    if kind == "500":
        return web.json_response({"error": "injected internal error"}, status=500)
    raise ValueError(f"unknown garble kind {kind!r}: one of {', '.join(KINDS)}")
