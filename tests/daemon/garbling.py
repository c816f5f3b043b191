"""A loopback proxy in front of the fake Ollama that garbles chosen answers at the HTTP level.

Real proxies and half-broken servers send answers aiohttp cannot even frame (a bad header, a
length that is not a number): the client raises errors that are not "unreachable" and not
"malformed JSON". Each request goes to the fake on its own connection (``Connection: close``),
so every request is seen and can be answered with garbage instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from urllib.parse import urlsplit

GARBAGE = b"HTTP/1.1 200 OK\r\nContent-Length: not-a-number\r\n\r\n{}"


class GarblingProxy:
    """Forward to ``target``; answer with :data:`GARBAGE` when ``garble(line, body)`` says so.

    ``line`` is the request line, e.g. ``"POST /api/generate HTTP/1.1"``; ``body`` its bytes.
    """

    def __init__(self, target: str, garble: Callable[[str, bytes], bool]) -> None:
        parts = urlsplit(target)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self.garble = garble
        self.garbled: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> GarblingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    (
                        int(x.split(":", 1)[1])
                        for x in lines
                        if x.lower().startswith("content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length) if length else b""
                if self.garble(lines[0], body):
                    self.garbled.append(lines[0])
                    writer.write(GARBAGE)
                    await writer.drain()
                    return
                kept = [x for x in lines[1:] if x and not x.lower().startswith("connection:")]
                request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode()
                up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
                up_writer.write(request + body)
                await up_writer.drain()
                answer = await up_reader.read()
                up_writer.close()
                writer.write(answer)
                await writer.drain()
                return
        finally:
            writer.close()
