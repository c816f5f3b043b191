"""core/runners.py as tables: real command lines of both flavours, and the table across rescans.

The command lines are those Ollama builds (v0.24.0 ``llm/server.go``; v0.30-v0.32.15
``startLlamaServer`` in ``llm/llama_server.go``), NUL-separated as ``/proc/<pid>/cmdline``.
"""

from __future__ import annotations

from typing import Any

import pytest

from ollama_keepwarm.core.runners import (
    ParsedRunner,
    RunnerEvent,
    RunnerProcess,
    RunnerTable,
    parse_runner_cmdline,
    proc_limits,
    step,
)

HEX = "6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa"
BLOB = f"sha256-{HEX}"
MODELS = "/usr/share/ollama/.ollama/models/blobs"
LLAMA = "/usr/local/lib/ollama/llama-server"
COMMON = [
    "--model", f"{MODELS}/{BLOB}", "--port", "40121", "--host", "127.0.0.1", "--no-webui",
    "--offline",
]  # fmt: skip
LOGS = ["--log-verbosity", "4", "--no-log-prefix", "--no-log-timestamps"]


def _raw(*argv: str) -> bytes:
    return b"".join(arg.encode() + b"\0" for arg in argv)


@pytest.mark.parametrize(
    ("argv", "flavour", "port", "options", "settings"),
    [
        pytest.param(
            ["/usr/local/bin/ollama", "runner", "--model", f"{MODELS}/{BLOB}", "--port", "38019"],
            "runner", 38019, {}, {}, id="0.24 llama runner",
        ),
        pytest.param(
            ["/usr/bin/ollama", "runner", "--ollama-engine", "--model", f"{MODELS}/{BLOB}",
             "--port", "41555"],
            "runner", 41555, {}, {"ollama_engine": True}, id="0.24 ollama engine",
        ),
        pytest.param(
            # v0.32.15 on a CPU: 4096 x 1 slot, use_mmap turned off automatically, shift on.
            [LLAMA, *COMMON, "-c", "4096", "-np", "1", *LOGS, "--load-mode", "none",
             "--flash-attn", "off", "-b", "512", "-ub", "512", "--context-shift"],
            "llama-server", 40121,
            {"num_ctx": 4096, "num_parallel": 1, "num_batch": 512, "use_mmap": False,
             "shift": True},
            {"flash_attn": "off", "load_mode": "none"},
            id="0.32.15 defaults on a CPU",
        ),
        pytest.param(
            # A client's num_thread, num_gpu, main_gpu, num_keep; 2 slots of 8192.
            [LLAMA, *COMMON, "-c", "16384", "-np", "2", *LOGS, "--flash-attn", "auto",
             "-b", "1024", "-ub", "1024", "-ngl", "20", "-t", "1", "--split-mode", "none",
             "--main-gpu", "1", "--context-shift", "--keep", "24"],
            "llama-server", 40121,
            {"num_ctx": 8192, "num_parallel": 2, "num_batch": 1024, "num_gpu": 20,
             "num_thread": 1, "main_gpu": 1, "shift": True, "num_keep": 24},
            {"flash_attn": "auto"},
            id="0.32.15 explicit options",
        ),
        pytest.param(
            # v0.30-v0.32.5 said --no-mmap; no --context-shift: shift off (deepseek2, shift:false).
            [LLAMA, *COMMON, "-c", "2048", "-np", "1", *LOGS, "--no-mmap", "--cache-type-k",
             "q8_0", "--cache-type-v", "q8_0", "--flash-attn", "on", "-ngl", "0"],
            "llama-server", 40121,
            {"num_ctx": 2048, "num_parallel": 1, "use_mmap": False, "num_gpu": 0, "shift": False},
            {"flash_attn": "on", "kv_cache_type": "q8_0"},
            id="0.30 no-mmap, shift off",
        ),
        pytest.param(
            [LLAMA, *COMMON, "-c", "8192", "-np", "1", *LOGS, "--flash-attn", "auto",
             "--embedding", "-b", "2048", "-ub", "2048"],
            "llama-server", 40121,
            {"num_ctx": 8192, "num_parallel": 1, "num_batch": 2048, "shift": False},
            {"flash_attn": "auto", "embedding": True},
            id="0.32.15 embedding model",
        ),
        pytest.param(
            [LLAMA, *COMMON, "-c", "4096", "-np", "1", *LOGS, "--no-jinja", "--chat-template",
             "chatml", "--mmproj", f"{MODELS}/sha256-abc", "--no-mmproj-offload",
             "--spec-type", "draft-mtp", "--spec-draft-n-max", "3",
             "--spec-draft-backend-sampling", "--lora", "/a", "--lora", "/b",
             "--flash-attn", "auto", "-b", "512", "-ub", "512", "--context-shift"],
            "llama-server", 40121,
            {"num_ctx": 4096, "num_parallel": 1, "draft_num_predict": 3, "num_batch": 512,
             "shift": True},
            {"mmproj": f"{MODELS}/sha256-abc", "spec_type": "draft-mtp", "lora": "/a,/b",
             "flash_attn": "auto"},
            id="0.32.15 projector, draft, adapters",
        ),
        pytest.param(
            # llama-server's long and = forms, as someone might run it by hand.
            ["llama-server", f"--model={MODELS}/{BLOB}", "--port=9", "--ctx-size", "300",
             "--parallel", "3", "--threads", "4", "--n-gpu-layers", "auto"],
            "llama-server", 9,
            {"num_ctx": 100, "num_parallel": 3, "num_thread": 4, "num_gpu": "auto",
             "shift": False},
            {},
            id="long forms",
        ),
    ],
)  # fmt: skip
def test_runner_command_lines(
    argv: list[str],
    flavour: str,
    port: int,
    options: dict[str, Any],
    settings: dict[str, Any],
) -> None:
    parsed = parse_runner_cmdline(_raw(*argv))
    assert parsed is not None
    assert (parsed.blob, parsed.flavour, parsed.port) == (BLOB, flavour, port)
    assert dict(parsed.options) == options
    assert dict(parsed.settings) == settings
    assert parsed.model_path.endswith(BLOB)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_raw("/usr/local/bin/ollama", "serve"), id="ollama serve"),
        pytest.param(_raw(LLAMA, "--list-devices"), id="llama-server --list-devices"),
        pytest.param(
            _raw(LLAMA, "--list-devices", "--model", f"{MODELS}/{BLOB}"), id="list-devices+model"
        ),
        pytest.param(_raw("/usr/bin/ollama", "runner", "--port", "4"), id="0.24 discovery"),
        pytest.param(_raw("sleep", "infinity"), id="another program"),
        pytest.param(b"", id="a zombie or kernel thread: empty"),
        pytest.param(_raw("/usr/bin/python3", "-m", "runner", "--model", "x"), id="not runner"),
    ],
)
def test_what_is_not_a_runner(raw: bytes) -> None:
    assert parse_runner_cmdline(raw) is None


def test_a_title_joined_by_spaces_and_padding_nuls_are_tolerated() -> None:
    spaced = f"{LLAMA} --model {MODELS}/{BLOB} --port 7 -c 4096 -np 2 --context-shift".encode()
    padded = _raw("/usr/bin/ollama", "runner", "--model", f"{MODELS}/{BLOB}", "--port", "8")
    for raw, flavour, port in ((spaced, "llama-server", 7), (padded + b"\0\0\0", "runner", 8)):
        parsed = parse_runner_cmdline(raw)
        assert parsed is not None
        assert (parsed.blob, parsed.flavour, parsed.port) == (BLOB, flavour, port)
    parsed = parse_runner_cmdline(spaced)
    assert parsed is not None
    assert dict(parsed.options) == {"num_ctx": 2048, "num_parallel": 2, "shift": True}


def test_a_windows_path_and_a_non_utf8_byte() -> None:
    raw = _raw(r"C:\Ollama\lib\ollama\llama-server.exe", "--model", rf"C:\m\blobs\{BLOB}")
    parsed = parse_runner_cmdline(raw)
    assert parsed is not None
    assert (parsed.blob, parsed.port) == (BLOB, None)
    odd = parse_runner_cmdline(b"/opt/\xff/ollama\0runner\0--model\0/m/\xfe" + BLOB.encode())
    assert odd is not None
    assert odd.blob.endswith(BLOB)


def _parsed(blob: str, port: int = 1) -> ParsedRunner:
    return ParsedRunner(blob, "runner", port, {})


A, B = "sha256-aa", "sha256-bb"


def test_step_reports_starts_and_exits_in_pid_order() -> None:
    empty = RunnerTable(True, "cgroup /x", (), 0.0)
    events, table = step(empty, frozenset({10, 11, 12}), {12: _parsed(B), 11: _parsed(A)}, 5.0)
    assert [(e.kind, e.runner.pid, e.at) for e in events] == [
        ("started", 11, 5.0),
        ("started", 12, 5.0),
    ]
    assert [r.blob for r in table.runners] == [A, B]
    assert (table.visible, table.source, table.at) == (True, "cgroup /x", 5.0)
    # 11 (A) exits while 13 (A again: a reload) starts; 10 is not a runner and stays ignored.
    events, table = step(table, frozenset({10, 12, 13}), {13: _parsed(A, 2)}, 6.0)
    assert events == (
        RunnerEvent("exited", RunnerProcess(11, A, "runner", 1, {}, 5.0), 6.0),
        RunnerEvent("started", RunnerProcess(13, A, "runner", 2, {}, 6.0), 6.0),
    )
    assert [(r.pid, r.started_at) for r in table.by_blob(A)] == [(13, 6.0)]
    assert table.by_pid(12) is not None
    assert table.by_pid(11) is None
    # Nothing changes: no events; a runner listed as new again is not started twice.
    events, again = step(table, frozenset({10, 12, 13}), {13: _parsed(A, 2)}, 7.0)
    assert events == ()
    assert again.runners == table.runners


def test_by_blob_lists_the_old_runner_first_while_both_live() -> None:
    table = RunnerTable(
        True,
        "process table",
        (RunnerProcess(30, A, "runner", 1, {}, 9.0), RunnerProcess(20, A, "runner", 2, {}, 3.0)),
        9.0,
    )
    assert [r.pid for r in table.by_blob(A)] == [20, 30]
    assert table.by_blob(B) == ()


def test_a_runner_is_hashable_despite_its_options_mapping() -> None:
    runner = RunnerProcess(1, A, "llama-server", 2, {"num_ctx": 4096}, 0.0)
    assert runner in {runner}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("22 1 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw", ()),
        (
            "22 1 0:5 / /proc rw,nosuid - proc proc rw,hidepid=invisible,subset=pid",
            ("hidepid=invisible", "subset=pid"),
        ),
        ("22 1 0:5 / /proc rw - proc proc rw,hidepid=2", ("hidepid=2",)),
        ("22 1 0:5 / /proc rw - proc proc rw,hidepid=noaccess", ("hidepid=noaccess",)),
        ("30 22 0:5 / /proc/sys ro - proc proc rw,hidepid=2", ()),  # not /proc itself
    ],
)
def test_what_the_proc_mount_hides(line: str, words: tuple[str, ...]) -> None:
    limits = proc_limits(line + "\n")
    assert len(limits) == len(words)
    for limit, word in zip(limits, words, strict=True):
        assert limit.startswith(word)
