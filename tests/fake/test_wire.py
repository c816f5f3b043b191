"""Shapes, texts and formats on the wire, checked against the reference and real captures."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from fake_helpers import call, capture, eventually, parse_time, post, ps, ps_names

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?(Z|[+-]\d\d:\d\d)")


async def test_root_and_version(make_fake, client_for) -> None:
    """GET/HEAD / answer text/plain `Ollama is running`; /api/version answers the version."""
    fake = await make_fake(ollama_version="0.24.0")
    session = client_for(fake)
    async with session.get("/") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await response.read() == b"Ollama is running"
    async with session.head("/") as response:
        assert response.status == 200
    async with session.get("/api/version") as response:
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await response.read() == (
            json.dumps(capture("version.json"), separators=(",", ":")).encode()
        )


async def test_load_reply_matches_capture(session) -> None:
    """An empty-prompt generate answers one object shaped like tiny_load.json, even streamed."""
    async with session.post("/api/generate", json={"model": "tiny", "stream": True}) as response:
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        raw = await response.read()
    body = json.loads(raw)
    expected = capture("tiny_load.json")
    assert list(body) == list(expected)
    assert {k: v for k, v in body.items() if k != "created_at"} == {
        k: v for k, v in expected.items() if k != "created_at"
    }
    assert body["created_at"].endswith("Z")
    assert b"\n" not in raw
    assert await ps_names(session) == ["tiny:latest"]


async def test_chat_load_reply(session) -> None:
    """An empty-messages chat loads the model and answers the assistant-message load object."""
    status, body = await post(session, "/api/chat", {"model": "Tiny", "messages": []})
    assert status == 200
    assert list(body) == ["model", "created_at", "message", "done", "done_reason"]
    assert body["model"] == "Tiny"
    assert body["message"] == {"role": "assistant", "content": ""}
    assert body["done_reason"] == "load"
    assert await ps_names(session) == ["tiny:latest"]


async def test_embed_empty_input_loads_any_model(session) -> None:
    """/api/embed with no input loads even a generative model; /api/embeddings gives []."""
    assert await post(session, "/api/embed", {"model": "tiny", "input": []}) == (
        200,
        {"model": "tiny", "embeddings": []},
    )
    assert await ps_names(session) == ["tiny:latest"]
    status, body = await post(session, "/api/embeddings", {"model": "nomic-embed-text"})
    assert (status, body) == (200, {"embedding": []})
    assert sorted(await ps_names(session)) == ["nomic-embed-text:latest", "tiny:latest"]


async def test_generate_refuses_embedding_models_before_loading(fake, session) -> None:
    """Generate and chat on an embedding-only model give 400 with the Go-quoted name; no load."""
    assert await post(session, "/api/generate", {"model": "nomic-embed-text"}) == (
        400,
        {"error": '"nomic-embed-text" does not support generate'},
    )
    assert await post(session, "/api/chat", {"model": "nomic-embed-text"}) == (
        400,
        {"error": '"nomic-embed-text" does not support chat'},
    )
    assert fake.loads == []
    assert await ps(session) == []


async def test_show_and_tags_expose_capabilities(session) -> None:
    """/api/show lists capabilities, model_info and the blob FROM line; /api/tags lists them too."""
    status, show = await post(session, "/api/show", {"model": "nomic-embed-text"})
    assert status == 200
    assert show["capabilities"] == ["embedding"]
    assert show["model_info"]["nomic_bert.pooling_type"] == 1
    assert re.search(r"^FROM /\S+/blobs/sha256-[0-9a-f]{64}$", show["modelfile"], re.MULTILINE)
    assert {"details", "modified_at", "parameters"} <= set(show)
    assert list(show)[-2:] == ["capabilities", "modified_at"]
    _, tags = await call(session, "GET", "/api/tags")
    by_name = {model["name"]: model for model in tags["models"]}
    assert by_name["llama3.1:8b"]["capabilities"] == ["completion", "tools"]
    assert by_name["nomic-embed-text:latest"]["capabilities"] == ["embedding"]
    assert by_name["tiny:latest"]["details"]["context_length"] == 2048


async def test_ps_shape_matches_capture(make_fake, client_for) -> None:
    """/api/ps prints the fields, order, types and values of ps_tiny.json (CPU-only server)."""
    fake = await make_fake(memory_bytes=0)
    session = client_for(fake)
    async with session.get("/api/ps") as response:
        assert await response.read() == (empty := b'{"models":[]}')
    assert capture("ps_after_unload.json") == json.loads(empty)
    await post(session, "/api/generate", {"model": "tiny"})
    [row] = await ps(session)
    [expected] = capture("ps_tiny.json")["models"]
    assert list(row) == list(expected)
    assert {k: v for k, v in row.items() if k != "expires_at"} == {
        k: v for k, v in expected.items() if k != "expires_at"
    }


async def test_ps_name_is_the_loaders_canonical_name(session) -> None:
    """ps shows `name:tag` of the manifest that loaded the runner, even after alias requests."""
    await post(session, "/api/generate", {"model": "LLAMA3.2"})
    await post(session, "/api/generate", {"model": "llama3.2:3b", "keep_alive": "7m"})
    [row] = await ps(session)
    assert row["name"] == row["model"] == "llama3.2:latest"


async def test_expires_at_format_in_local_zone(make_fake, client_for, monkeypatch) -> None:
    """expires_at is RFC 3339 in the local zone, trimmed fraction; -1 lands around year 2318."""
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        fake = await make_fake()
        session = client_for(fake)
        await post(session, "/api/generate", {"model": "tiny", "keep_alive": "10m"})
        await post(session, "/api/generate", {"model": "llama3.2", "keep_alive": -1})
        rows = await ps(session)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    for row in rows:
        assert _RFC3339.fullmatch(row["expires_at"]), row["expires_at"]
        assert row["expires_at"][-6:] in ("-07:00", "-08:00")
    forever = parse_time(rows[0]["expires_at"])
    expected = datetime.now(UTC) + timedelta(microseconds=((1 << 63) - 1) // 1000)
    assert abs(forever - expected) < timedelta(seconds=5)
    assert forever.year in (2318, 2319)


async def test_created_at_is_utc(session) -> None:
    """created_at in replies is UTC with a Z suffix and nanosecond precision."""
    _, body = await post(session, "/api/generate", {"model": "tiny"})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z", body["created_at"])


async def test_ps_sorted_by_expiry_descending(session) -> None:
    """ps lists the longest-lived model first, whatever the load order."""
    await post(session, "/api/generate", {"model": "llama3.2", "keep_alive": "1h"})
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": -1})
    await post(session, "/api/generate", {"model": "llama3.1", "keep_alive": "2h"})
    assert await ps_names(session) == ["tiny:latest", "llama3.1:latest", "llama3.2:latest"]


async def test_digests_are_manifest_hashes(session) -> None:
    """Digests are 64 hex without prefix; aliases have their own; ps repeats the tags digest."""
    _, tags = await call(session, "GET", "/api/tags")
    digests = {model["name"]: model["digest"] for model in tags["models"]}
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in digests.values())
    assert digests["llama3.2:latest"] != digests["llama3.2:3b"]
    await post(session, "/api/generate", {"model": "llama3.2:3b"})
    [row] = await ps(session)
    assert row["digest"] == digests["llama3.2:3b"]


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/generate", {"model": "nosuch"}, 404, "model 'nosuch' not found"),
        ("/api/generate", {"model": ""}, 404, "model '' not found"),
        ("/api/generate", {"model": "no such"}, 400, "invalid model name"),
        ("/api/chat", {"model": "nosuch"}, 404, "model 'nosuch' not found"),
        ("/api/chat", {}, 400, "model is required"),
        ("/api/embed", {"model": "nosuch"}, 404, 'model "nosuch" not found, try pulling it first'),
        ("/api/embed", {"model": ""}, 404, "model '' not found"),
        (
            "/api/embeddings",
            {"model": "nosuch"},
            404,
            'model "nosuch" not found, try pulling it first',
        ),
        ("/api/embeddings", {"model": ""}, 400, "model is required"),
        ("/api/show", {"model": "nosuch"}, 404, "model 'nosuch:latest' not found"),
        ("/api/show", {}, 400, "model is required"),
        ("/api/generate", {"model": "nosuch", "keep_alive": 0}, 404, "model 'nosuch' not found"),
    ],
)
async def test_unknown_model_errors(session, path, body, status, error) -> None:
    """Unknown, empty and invalid names give the exact per-endpoint status and text."""
    assert await post(session, path, body) == (status, {"error": error})


async def test_show_404_before_v030_uses_name_as_sent(make_fake, client_for) -> None:
    """Emulating v0.24, /api/show's 404 names the model as sent, without a tag."""
    session = client_for(await make_fake(ollama_version="0.24.0"))
    assert await post(session, "/api/show", {"model": "x"}) == (
        404,
        {"error": "model 'x' not found"},
    )


async def test_generic_http_errors(session) -> None:
    """Empty body, bad JSON, unknown paths and wrong methods get Go's texts, never a traceback."""
    assert await call(session, "POST", "/api/generate", data=b"") == (
        400,
        {"error": "missing request body"},
    )
    assert await call(session, "POST", "/api/generate", data=b'{"model":') == (
        400,
        {"error": "unexpected EOF"},
    )
    assert await call(session, "POST", "/api/chat", data=b"{x}") == (
        400,
        {"error": "invalid character 'x' looking for beginning of object key string"},
    )
    assert await call(session, "POST", "/api/generate", data=b'{"model":5}') == (
        400,
        {
            "error": "json: cannot unmarshal number into Go struct field "
            "GenerateRequest.model of type string"
        },
    )
    async with session.get("/api/nothing") as response:
        assert response.status == 404
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await response.text() == "404 page not found"
    assert await call(session, "GET", "/api/generate") == (405, "405 method not allowed")
    async with session.head("/api/ps") as response:
        assert response.status == 405


async def test_generate_reply_matches_capture(fake, session) -> None:
    """A generation answers tiny_generate.json's fields in order; load_duration is truthful."""
    _, cold = await post(
        session, "/api/generate", {"model": "llama3.1", "prompt": "hi", "stream": False}
    )
    expected = capture("tiny_generate.json")
    assert list(cold) == list(expected)
    assert all(
        isinstance(cold[key], int) for key in expected if key.endswith(("duration", "count"))
    )
    assert cold["eval_count"] == 16
    assert cold["done_reason"] == "length"
    load_s = 4.920753328 / fake.clock.time_scale
    assert cold["load_duration"] >= load_s * 1e9 * 0.9
    _, warm = await post(
        session, "/api/generate", {"model": "llama3.1", "prompt": "hi", "stream": False}
    )
    assert warm["load_duration"] < load_s * 1e9 / 5


async def test_generate_streams_ndjson(session) -> None:
    """Without stream:false, generate streams num_predict NDJSON chunks then a final object."""
    body = {"model": "tiny", "prompt": "hello", "options": {"num_predict": 3}}
    async with session.post("/api/generate", json=body) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert list(lines[0]) == ["model", "created_at", "response", "done"]
    assert lines[-1]["eval_count"] == 3
    assert lines[-1]["response"] == ""


async def test_busy_runner_waits_no_generation_slot_for_warm_calls(fake, session) -> None:
    """A warm call to a model busy generating answers at once (no generation slot needed)."""
    fake.seconds_per_token = 1.0  # 10 ms real per token at the test scale
    await post(session, "/api/generate", {"model": "tiny"})
    generation = {"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 500}}
    task = asyncio.create_task(post(session, "/api/generate", generation))
    await eventually(lambda: fake.runners()[0].busy == 1)
    status, body = await post(session, "/api/generate", {"model": "tiny"})
    assert (status, body["done_reason"]) == (200, "load")
    assert not task.done()
    task.cancel()
