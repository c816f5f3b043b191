"""The client's edge (issue 22 item 5): whatever comes back, a call raises one of our errors.

Through real sockets: the fake garbles the next answer to a path (``fake/garble.py``), as a
broken proxy, a cut connection or another program on the port would. Before, aiohttp's
``ClientResponseError``, a ``LookupError`` from an unknown charset, a ``RecursionError`` from
deep JSON and a ``ValueError`` from a wrong-shaped ``/api/tags`` escaped the client and ended
whichever task called it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from ollama_keepwarm.fake import FakeOllama
from ollama_keepwarm.fake.garble import KINDS
from ollama_keepwarm.ollama import (
    OllamaBadAnswerError,
    OllamaClient,
    OllamaError,
    OllamaUnreachableError,
)

MODEL = "llama3.1:8b"
Call = Callable[[OllamaClient], Awaitable[object]]
CALLS: dict[str, tuple[str, Call]] = {
    "version": ("/api/version", lambda c: c.version()),
    "ps": ("/api/ps", lambda c: c.ps()),
    "sizes": ("/api/tags", lambda c: c.sizes()),
    "show": ("/api/show", lambda c: c.show(MODEL)),
    "load": (
        "/api/generate",
        lambda c: c.load(MODEL, keep_alive="1h", options={}, embedding_only=False),
    ),
    "unload": ("/api/generate", lambda c: c.unload(MODEL)),
    "prime": ("/api/chat", lambda c: c.prime("/api/chat", {"model": MODEL, "messages": []})),
    "one token": (
        "/api/generate",
        lambda c: c.generate_one_token(MODEL, keep_alive="1h", options={}),
    ),
}
# What each kind is: unreachable (status 0) only when the server closed without a byte.
EXPECTED: dict[str, tuple[type[OllamaError], str]] = {
    "http": (OllamaBadAnswerError, "not valid HTTP"),
    "disconnect": (OllamaUnreachableError, "closed the connection without answering"),
    "cut": (OllamaBadAnswerError, "broke off or was garbled"),
    "charset": (OllamaBadAnswerError, "malformed"),
    "nested": (OllamaBadAnswerError, "malformed"),
    "shape": (OllamaBadAnswerError, ""),
    "html": (OllamaBadAnswerError, "malformed"),
    "utf8": (OllamaBadAnswerError, "malformed"),
    "500": (OllamaError, "injected internal error"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("call", list(CALLS))
async def test_a_garbled_answer_is_one_of_our_errors_in_words(
    fake: FakeOllama, kind: str, call: str
) -> None:
    path, make = CALLS[call]
    tolerated = kind == "shape" and call not in {"version", "ps", "sizes"}
    # aiohttp sends an idempotent GET once more when the server closed a reused connection.
    retried = kind == "disconnect" and call in {"version", "ps", "sizes"}
    async with aiohttp.ClientSession() as session:
        client = OllamaClient(session, fake.url, request_timeout_s=10, load_timeout_s=10)
        fake.garble_next(path, kind, times=2 if retried else 1)
        if tolerated:  # reads no field it needs from a JSON object: a sane default, no error
            await make(client)
            return
        with pytest.raises(OllamaError) as caught:
            await make(client)
        error = caught.value
        expected, words = EXPECTED[kind]
        assert isinstance(error, expected), repr(error)
        assert words in error.message
        assert "\n" not in error.message
        assert error.status != 0 or kind == "disconnect"
        await make(client)  # the next answer is whole again: the client is not broken


async def test_a_url_that_is_not_http_is_unreachable_in_words() -> None:
    async with aiohttp.ClientSession() as session:
        client = OllamaClient(session, "ftp://127.0.0.1:1")
        with pytest.raises(OllamaUnreachableError, match="not an http"):
            await client.ps()


async def test_any_other_exception_becomes_an_ollama_error(fake: FakeOllama) -> None:
    """A closed session (shutdown) raises RuntimeError inside aiohttp: ours says so."""
    session = aiohttp.ClientSession()
    client = OllamaClient(session, fake.url)
    await session.close()
    with pytest.raises(OllamaError, match="RuntimeError"):
        await client.version()


async def test_the_garble_route_arms_the_fault(fake: FakeOllama) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{fake.url}/_fake/garble", json={"path_prefix": "/api/ps", "kind": "nope"}
        ) as response:
            assert response.status == 400
        async with session.post(
            f"{fake.url}/_fake/garble", json={"path_prefix": "/api/ps", "kind": "cut"}
        ) as response:
            assert response.status == 200
        client = OllamaClient(session, fake.url)
        with pytest.raises(OllamaBadAnswerError, match="broke off"):
            await client.ps()
        await client.ps()
