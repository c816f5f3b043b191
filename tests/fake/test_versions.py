"""Version-faithful behaviour: v0.24.0's rules and v0.32.15's, side by side (issue 11).

Each behaviour that changed in v0.30.0 runs for both versions; the expectations come from the
real servers (reference §9 for v0.24.0, §10 for v0.32.15) and from ``server/sched.go``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import aiohttp
import pytest
from fake_helpers import call, eventually, post, ps, ps_names

from ollama_keepwarm.fake import default_catalog
from ollama_keepwarm.fake.options import at_load, reload_reason, requested
from ollama_keepwarm.fake.versions import CURRENT_STABLE, Behaviour, VersionError

OLD, NEW = "0.24.0", "0.32.15"
VERSIONS = (OLD, NEW)


# --- version strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "modern"),
    [
        ("0.24.0", False),
        ("0.29.9", False),
        ("v0.6.6", False),
        ("0.30.0", True),
        ("0.30.0-rc1", True),
        ("0.32.15", True),
        ("0.0.0", True),  # a dev build is the newest code
    ],
)
def test_behaviour_follows_the_version(version: str, modern: bool) -> None:
    """Every flag but the unload order changed in v0.30.0; the version is kept verbatim."""
    behaviour = Behaviour.for_version(version)
    assert behaviour.version == version
    flags = [
        value
        for name, value in vars(behaviour).items()
        if isinstance(value, bool) and name != "unload_row_first"
    ]
    assert flags == [modern] * len(flags)
    assert behaviour.oom_error.startswith("llama-server" if modern else "llama runner")


@pytest.mark.parametrize(
    ("version", "row_first"),
    [
        ("0.24.0", False),
        ("0.30.0", False),
        ("0.32.3", False),
        ("0.32.4-rc0", True),
        ("0.32.4", True),
        ("0.32.15", True),
        ("0.0.0", True),
    ],
)
def test_unload_order_changed_when_ps_took_the_lock(version: str, row_first: bool) -> None:
    """v0.32.4 (commit 6cd40001a): /api/ps waits for loadedMu, so an unload's row goes first."""
    assert Behaviour.for_version(version).unload_row_first is row_first


@pytest.mark.parametrize("version", ["", "0.32", "latest", "0.32.x", "1.2.3.4"])
def test_bad_version_is_a_clear_error(version: str) -> None:
    """A version the fake cannot place is refused, naming the expected form."""
    with pytest.raises(VersionError, match=r"expected MAJOR\.MINOR\.PATCH, e\.g\. 0\.32\.15"):
        Behaviour.for_version(version)


def test_default_is_the_current_stable() -> None:
    """The fake and its CLI imitate the current stable release unless told otherwise."""
    assert CURRENT_STABLE == "0.32.15"


# --- the reload rule as a table ----------------------------------------------------------------

_CATALOG = default_catalog()

# (what, model, first request's options, second request's options, second's shift,
#  reloads on v0.24.0, reloads on v0.32.15). The first request loads the runner.
_RELOAD_TABLE: list[tuple[str, str, Any, Any, bool | None, bool, bool]] = [
    ("num_ctx above training after num_ctx = training", "tiny", {"num_ctx": 2048},
     {"num_ctx": 4096}, None, True, False),
    ("explicit num_ctx = training after an automatic load", "tiny", None,
     {"num_ctx": 2048}, None, True, False),
    ("no options after num_ctx 4096", "tiny", {"num_ctx": 4096}, None, None, False, False),
    ("num_ctx lower than the runner's", "tiny", None, {"num_ctx": 1024}, None, True, True),
    ("shift off after a default load", "tiny", None, None, False, False, True),
    ("shift on after a default load", "tiny", None, None, True, False, False),
    ("a sampling option only", "tiny", None, {"temperature": 0.1, "top_k": 3}, None,
     False, False),
    ("the keeper's default: no options after an automatic load", "tiny", None, None, None,
     False, False),
    ("the keeper's configured num_ctx again", "llama3.1:8b", {"num_ctx": 8192},
     {"num_ctx": 8192}, None, False, False),
    ("no options after a client's explicit larger num_ctx", "llama3.1:8b", {"num_ctx": 8192},
     None, None, True, True),
    ("num_gpu -1 after num_gpu 10 (ignored)", "tiny", {"num_gpu": 10}, {"num_gpu": -1}, None,
     False, False),
    ("num_gpu 0 after the default", "tiny", None, {"num_gpu": 0}, None, True, True),
    ("main_gpu 0 after the default (unset in v0.30+)", "tiny", None, {"main_gpu": 0}, None,
     False, True),
    ("draft_num_predict (an option from v0.30)", "tiny", None, {"draft_num_predict": 4}, None,
     False, True),
    ("use_mmap false after the default, on the CPU", "tiny", None, {"use_mmap": False}, None,
     True, False),
    ("use_mmap true after the default, on the CPU", "tiny", None, {"use_mmap": True}, None,
     True, True),
    ("num_batch 512 after an automatic 8192 context", "llama3.1:8b", {"num_ctx": 8192},
     {"num_ctx": 8192, "num_batch": 512}, None, False, True),
    ("num_batch 512 on an embedding model", "nomic-embed-text", None, {"num_batch": 512}, None,
     False, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "model", "first", "second", "shift", "old", "new"),
    _RELOAD_TABLE,
    ids=[row[0] for row in _RELOAD_TABLE],
)
def test_reload_rule_table(
    what: str, model: str, first: Any, second: Any, shift: bool | None, old: bool, new: bool
) -> None:
    """needsReload per version: as requested up to v0.29; clamp, carry-over, shift from v0.30."""
    entry = _CATALOG.resolve(model)
    assert entry is not None
    weights = entry.model
    for version, expected in ((OLD, old), (NEW, new)):
        behaviour = Behaviour.for_version(version)

        def ask(options: Any, shift: bool | None = None, behaviour: Behaviour = behaviour) -> Any:
            return requested(
                behaviour,
                default_num_ctx=4096,
                modelfile=weights.parameters,
                options=options,
                shift=shift,
                family=weights.family,
                embedding="embedding" in weights.capabilities,
            )

        runner = at_load(
            behaviour,
            ask(first),
            train_ctx=weights.context_length,
            completion=not weights.is_embedding_only,
            on_cpu=True,
        )
        changed = reload_reason(
            behaviour, runner, ask(second, shift), train_ctx=weights.context_length
        )
        assert (changed is not None) == expected, f"{version}: {what}: {changed}"


# --- the issue's table, over HTTP ----------------------------------------------------------------


async def _reloads(session: aiohttp.ClientSession, first: Any, second: Any) -> bool:
    """Load tiny with ``first``, send ``second``; tell whether that reloaded it. Unloads after."""
    _, state = await call(session, "GET", "/_fake/state")
    before = len(state["loads"])
    assert (await post(session, "/api/generate", {"model": "tiny", **first}))[0] == 200
    assert (await post(session, "/api/generate", {"model": "tiny", **second}))[0] == 200
    _, state = await call(session, "GET", "/_fake/state")
    reasons = [load["reason"] for load in state["loads"][before:]]
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": 0})
    await eventually(lambda: _empty(session))
    assert reasons in (["cold"], ["cold", "reload"])
    return reasons == ["cold", "reload"]


async def _empty(session: aiohttp.ClientSession) -> bool:
    return await ps(session) == []


# (first request, second request, reloads on v0.24.0, on v0.32.15): the issue 11 table.
_ISSUE_TABLE = [
    ({"options": {"num_ctx": 2048}}, {"options": {"num_ctx": 4096}}, True, False),
    ({}, {"options": {"num_ctx": 2048}}, True, False),
    ({}, {"options": {"num_ctx": 1024}}, True, True),
    ({}, {"shift": False}, False, True),
    ({}, {"options": {"temperature": 0.1}}, False, False),
    ({}, {}, False, False),  # the keeper's default path
]


@pytest.mark.parametrize("version", VERSIONS)
async def test_issue_table_over_http(make_fake, client_for, version: str) -> None:
    """The fake answers the issue's table as the real v0.24.0 and v0.32.15 servers did."""
    session = client_for(await make_fake(ollama_version=version))
    for first, second, old, new in _ISSUE_TABLE:
        expected = old if version == OLD else new
        assert await _reloads(session, first, second) == expected, (version, first, second)


@pytest.mark.parametrize("version", VERSIONS)
async def test_cli_imitates_the_version_it_is_told(version: str) -> None:
    """`fake-ollama --ollama-version V` reports V and gives V's answers to the issue's table."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_keepwarm", "fake-ollama", "--port", "0",
        "--time-scale", "100", "--ollama-version", version,
        env=os.environ.copy(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 10)).decode()
        assert f"fake ollama {version} listening on" in line
        async with aiohttp.ClientSession(line.split()[-1]) as session:
            assert await call(session, "GET", "/api/version") == (200, {"version": version})
            for first, second, old, new in _ISSUE_TABLE:
                expected = old if version == OLD else new
                assert await _reloads(session, first, second) == expected, (first, second)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def test_cli_refuses_a_bad_version() -> None:
    """A bad --ollama-version exits 2 with a message, before listening."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_keepwarm", "fake-ollama", "--port", "0",
        "--ollama-version", "latest", stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 2
    assert err.decode().strip() == (
        "fake-ollama: invalid Ollama version 'latest': expected MAJOR.MINOR.PATCH, e.g. 0.32.15"
    )


async def test_shift_back_to_default_reloads_again(make_fake, client_for) -> None:
    """v0.32.15: shift off reloads a default runner, and the next default request reloads back."""
    fake = await make_fake(ollama_version=NEW)
    session = client_for(fake)
    for body in ({}, {"shift": False}, {}, {"shift": True}):
        assert (await post(session, "/api/generate", {"model": "tiny", **body}))[0] == 200
    assert [load.reason for load in fake.loads] == ["cold", "reload", "reload"]
    assert fake.loads[1].changed == "context shift on -> off"
    assert fake.runners()[0].context_shift is True
    assert (await post(session, "/api/generate", {"model": "tiny", "shift": "no"}))[0] == 400


# --- catalogue, texts, tags ------------------------------------------------------------------


def test_catalogue_training_contexts() -> None:
    """Each model has its own training context: the captures' models 2048, the rest as pulled."""
    trained = {model.name: model.context_length for model in default_catalog().models}
    assert trained == {
        "llama3.1:8b": 131072,
        "qwen2.5-coder:7b": 32768,
        "nomic-embed-text": 2048,
        "llama3.2:3b": 131072,
        "llama3.3:70b": 131072,
        "tiny": 2048,
        "medium": 2048,
    }


@pytest.mark.parametrize(
    ("version", "error"),
    [(OLD, "model 'no-such-model' not found"), (NEW, "model 'no-such-model:latest' not found")],
)
async def test_show_404_text(make_fake, client_for, version: str, error: str) -> None:
    """/api/show of an unknown model: the name as sent before v0.30, normalised from v0.30."""
    session = client_for(await make_fake(ollama_version=version))
    assert await post(session, "/api/show", {"model": "no-such-model"}) == (404, {"error": error})


@pytest.mark.parametrize("version", VERSIONS)
async def test_tags_capabilities_from_v030(make_fake, client_for, version: str) -> None:
    """/api/tags lists capabilities and the trained context length from v0.30 only."""
    session = client_for(await make_fake(ollama_version=version))
    _, tags = await call(session, "GET", "/api/tags")
    tiny = next(model for model in tags["models"] if model["name"] == "tiny:latest")
    if version == NEW:
        assert tiny["capabilities"] == ["completion"]
        assert tiny["details"]["context_length"] == 2048
    else:
        assert "capabilities" not in tiny
        assert "context_length" not in tiny["details"]


@pytest.mark.parametrize("version", VERSIONS)
async def test_loading_model_absent_from_ps(make_fake, client_for, version: str) -> None:
    """A loading model is absent from ps in both (seen on a real v0.24.0 too, §9)."""
    fake = await make_fake(ollama_version=version, load_seconds_per_gb=10.0)
    session = client_for(fake)
    task = asyncio.create_task(post(session, "/api/generate", {"model": "llama3.1:8b"}))
    await eventually(lambda: fake.scheduler.loading is not None)
    assert await ps(session) == []
    assert (await task)[0] == 200
    assert await ps_names(session) == ["llama3.1:8b"]


# --- memory: the pre-flight rule and the OOM paths -------------------------------------------


@pytest.mark.parametrize(("version", "evicted"), [(OLD, False), (NEW, True)])
async def test_preflight_80_percent_rule(make_fake, client_for, version, evicted) -> None:
    """An extra model must fit in 80 % of the free VRAM from v0.30, wholly before."""
    fake = await make_fake(ollama_version=version, memory_bytes=10 * 10**9)
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "llama3.1:8b"})  # 4.92 GB
    await post(session, "/api/generate", {"model": "qwen2.5-coder:7b"})  # 4.68 of 5.08 GB free
    survivors = ["qwen2.5-coder:7b"] if evicted else ["llama3.1:8b", "qwen2.5-coder:7b"]
    assert sorted(await ps_names(session)) == survivors
    assert [e.reason for e in fake.evictions] == (["memory"] if evicted else [])


@pytest.mark.parametrize(("version", "evicted"), [(OLD, True), (NEW, False)])
async def test_explicit_partial_offload(make_fake, client_for, version, evicted) -> None:
    """v0.30+ skips the pre-flight check for an explicit partial num_gpu; v0.24 needs its layers.

    llama3.3:70b asks for 40 of its 81 layers (21 GB) beside an 8B model on 24 GB: v0.24 evicts
    the 8B model (the layers do not fit in the 19 GB free); v0.32 loads it beside, partially.
    """
    fake = await make_fake(ollama_version=version, memory_bytes=24 * 10**9)
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "llama3.1:8b"})
    body = {"model": "llama3.3:70b", "options": {"num_gpu": 40}}
    assert (await post(session, "/api/generate", body))[0] == 200
    assert ("llama3.1:8b" in await ps_names(session)) is not evicted
    big = next(row for row in await ps(session) if row["name"] == "llama3.3:70b")
    assert 0 < big["size_vram"] < big["size"]


@pytest.mark.parametrize("version", VERSIONS)
async def test_oom_load(make_fake, client_for, version: str) -> None:
    """An OOM load with others loaded: v0.32 evicts them all and retries once; v0.24 fails."""
    fake = await make_fake(ollama_version=version)
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny"})
    await post(session, "/api/generate", {"model": "llama3.2"})
    fake.fail_next_load()
    status, body = await post(session, "/api/generate", {"model": "llama3.1"})
    if version == NEW:
        assert status == 200
        assert await ps_names(session) == ["llama3.1:latest"]
        assert sorted(e.reason for e in fake.evictions) == ["oom", "oom"]
        fake.fail_next_load(times=2)  # the retry fails too: the 500 comes then
        status, body = await post(session, "/api/generate", {"model": "tiny"})
    assert (status, body) == (500, {"error": fake.behaviour.oom_error})
    assert fake.loads[-1].ok is False
    if version == OLD:
        assert fake.evictions == []
        assert sorted(await ps_names(session)) == ["llama3.2:latest", "tiny:latest"]


async def test_oom_alone_fails_without_a_lower_context(make_fake, client_for) -> None:
    """v0.32: an OOM with nothing else loaded and no automatic context to lower is a 500."""
    fake = await make_fake(ollama_version=NEW)
    session = client_for(fake)
    fake.fail_next_load()
    assert await post(session, "/api/generate", {"model": "tiny"}) == (
        500,
        {"error": fake.behaviour.oom_error},
    )
    assert await ps(session) == []


async def test_oom_lowers_an_automatic_context_and_retries(make_fake, client_for) -> None:
    """v0.32 on 24 GiB: an OOM at the automatic 32768 context retries at 4096, loaded alone."""
    fake = await make_fake(ollama_version=NEW, memory_bytes=24 * 2**30)
    session = client_for(fake)
    fake.fail_next_load()
    assert (await post(session, "/api/generate", {"model": "llama3.1"}))[0] == 200
    [row] = await ps(session)
    assert row["context_length"] == 4096
    assert [load.ok for load in fake.loads] == [True]
    # Still automatic: a request without options does not reload it back to 32768.
    await post(session, "/api/generate", {"model": "llama3.1"})
    assert len(fake.loads) == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_runtime_oom(make_fake, client_for, version: str) -> None:
    """A runtime OOM expires every loaded model from v0.30; before, the loaded set stays."""
    fake = await make_fake(ollama_version=version)
    session = client_for(fake)
    for name in ("tiny", "llama3.2", "nomic-embed-text"):
        await post(session, "/api/embed", {"model": name, "keep_alive": -1})
    expired = fake.runtime_oom()
    if version == NEW:
        assert expired == 3
        await eventually(lambda: not fake.runners())
    else:
        assert expired == 0
        assert len(await ps(session)) == 3
