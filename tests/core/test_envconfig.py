"""Configuration from the environment: the same tables as a file, errors naming the variable."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from ollama_keepwarm.core.config import (
    ConfigError,
    DaemonConfig,
    HttpConfig,
    OllamaConfig,
    find_config,
    load_config,
)
from ollama_keepwarm.core.config import load as config_module
from ollama_keepwarm.core.envconfig import VARIABLES, EnvError, parse_models, read_env

MODELS = "OLLAMA_KEEPWARM_MODELS"


@pytest.mark.parametrize(
    ("text", "tables"),
    [
        ("llama3.1:8b", [{"name": "llama3.1:8b"}]),
        (
            "llama3.1:8b?keep_alive=1h&num_ctx=8192&priority=10,nomic-embed-text",
            [
                {
                    "name": "llama3.1:8b",
                    "keep_alive": "1h",
                    "priority": 10,
                    "options": {"num_ctx": 8192},
                },
                {"name": "nomic-embed-text"},
            ],
        ),
        # The spelling of Ollama's own preload proposal, and a forever lease.
        (
            "phi3?keepalive=-1&temperature=0.2",
            [{"name": "phi3", "keep_alive": -1, "options": {"temperature": 0.2}}],
        ),
        # One model a line, as a YAML block scalar gives it; a trailing comma is harmless.
        ("a\n  b?verify=true ,\n", [{"name": "a"}, {"name": "b", "verify": True}]),
        (
            "m?host=gpu2:11434&use_mmap=false",
            [{"name": "m", "host": "gpu2:11434", "options": {"use_mmap": False}}],
        ),
        ("m?stop=%2C%20end", [{"name": "m", "options": {"stop": ", end"}}]),
    ],
)
def test_models_syntax(text: str, tables: list[dict[str, Any]]) -> None:
    """A comma list with query parameters per model gives the [[models]] tables of a file."""
    assert [dict(m) for m in parse_models(text)] == tables


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("?keep_alive=1h", "model 1 ('?keep_alive=1h'): no model name before '?'"),
        ("a,b?keep_alive", "model 2 (\"b\"): 'keep_alive' is not key=value&key=value"),
        ("a?keep_alive=1h&keepalive=2h", 'model 1 ("a"): keepalive: given twice'),
        ("a?prompt=hi", 'model 1 ("a"): prompt: not a parameter (the keeper loads models'),
        ("a?options=x", 'model 1 ("a"): options: not a parameter'),
    ],
)
def test_models_syntax_errors(text: str, message: str) -> None:
    """Malformed entries are refused, naming the variable and the model by number and name."""
    with pytest.raises(EnvError) as caught:
        parse_models(text)
    assert str(caught.value).startswith(f"{MODELS}: {message}")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {MODELS: "llama3.1:8b?keep_alive=1d"},
            f'{MODELS}: model 1 ("llama3.1:8b"): keep_alive: '
            'time: unknown unit "d" in duration "1d"',
        ),
        ({MODELS: "a,x?keep_alive=0"}, f'{MODELS}: model 2 ("x"): keep_alive: 0 would unload'),
        ({MODELS: "a,b?priority=high"}, f'{MODELS}: model 2 ("b"): priority: must be an integer'),
        ({MODELS: "a?num_ctx=1&num_ctx=2"}, f'{MODELS}: model 1 ("a"): num_ctx: given twice'),
        (
            {MODELS: "a,A:latest"},
            f"{MODELS}: model 2 (\"A:latest\"): name: 'A:latest' is already listed as model 1",
        ),
        ({MODELS: "gpt-oss:120b-cloud"}, f'{MODELS}: model 1 ("gpt-oss:120b-cloud"): name: '),
        (
            {MODELS: "a", "OLLAMA_KEEPWARM_HTTP_PORT": "99999"},
            "OLLAMA_KEEPWARM_HTTP_PORT: must be between 0 and 65535",
        ),
        (
            {MODELS: "a", "OLLAMA_KEEPWARM_HTTP_PORT": "http"},
            "OLLAMA_KEEPWARM_HTTP_PORT: must be an integer, not 'http'",
        ),
        (
            {MODELS: "a", "OLLAMA_KEEPWARM_HTTP_ENABLED": "maybe"},
            "OLLAMA_KEEPWARM_HTTP_ENABLED: must be true or false, not 'maybe'",
        ),
        (
            {MODELS: "a", "OLLAMA_KEEPWARM_POLL_INTERVAL": "5 minutes"},
            'OLLAMA_KEEPWARM_POLL_INTERVAL: time: unknown unit " minutes"',
        ),
        (
            {MODELS: "a", "OLLAMA_KEEPWARM_POLL_INTERVAL": "3m"},
            "daemon.refresh_before: must be longer than OLLAMA_KEEPWARM_POLL_INTERVAL",
        ),
        (
            {MODELS: "a", "OLLAMA_KEEPWARM_ON_GPU_LOST": "systemctl 'restart"},
            "OLLAMA_KEEPWARM_ON_GPU_LOST: cannot split into a command",
        ),
        (
            {MODELS: "a", "OLLAMA_KEEPWARM_POLINTERVAL": "5s"},
            "OLLAMA_KEEPWARM_POLINTERVAL: unknown variable (known: OLLAMA_KEEPWARM_MODELS, ",
        ),
    ],
)
def test_errors_name_the_variable(environ: dict[str, str], message: str | None) -> None:
    """config.py's own rules apply to the environment, and their errors name the variable."""
    if message is None:
        load_config(None, environ=environ)
        return
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ=environ)
    assert str(caught.value).startswith(message), str(caught.value)


def test_environment_alone_is_a_whole_config() -> None:
    """Every [daemon] and [http] key, the [ollama] timeouts and OLLAMA_HOST, with no file."""
    config = load_config(
        None,
        environ={
            "OLLAMA_HOST": "0.0.0.0:11500",
            MODELS: "llama3.1:8b?keep_alive=1h&num_ctx=8192&priority=10,"
            "nomic-embed-text?keepalive=-1",
            "OLLAMA_KEEPWARM_LOAD_TIMEOUT": "2m",
            "OLLAMA_KEEPWARM_REQUEST_TIMEOUT": "10",
            "OLLAMA_KEEPWARM_POLL_INTERVAL": "250ms",
            "OLLAMA_KEEPWARM_REFRESH_BEFORE": "1m",
            "OLLAMA_KEEPWARM_ON_GPU_LOST": "kill -TERM 1",
            "OLLAMA_KEEPWARM_STATE_DIR": "/var/lib/ollama-keepwarm",
            "OLLAMA_KEEPWARM_HTTP_HOST": "0.0.0.0",
            "OLLAMA_KEEPWARM_HTTP_PORT": "8080",
            "OLLAMA_KEEPWARM_HTTP_ENABLED": "yes",
            "OLLAMA_KEEPWARM_READY_TIMEOUT": "",  # empty counts as unset
        },
    )
    assert config.source is None
    assert config.ollama == OllamaConfig("http://127.0.0.1:11500", 120.0, 10.0)
    assert config.daemon.poll_interval_s == 0.25
    assert config.daemon.refresh_before_s == 60.0
    assert config.daemon.ready_timeout_s == DaemonConfig().ready_timeout_s
    assert config.daemon.on_gpu_lost == ("kill", "-TERM", "1")
    assert config.daemon.state_dir == "/var/lib/ollama-keepwarm"
    assert config.http == HttpConfig(enabled=True, host="0.0.0.0", port=8080)
    first, second = config.models
    assert (first.name, first.keep_alive_s, dict(first.options), first.priority) == (
        "llama3.1:8b",
        3600.0,
        {"num_ctx": 8192},
        10,
    )
    assert (second.name, second.keep_alive_s, second.host) == (
        "nomic-embed-text",
        math.inf,
        "http://127.0.0.1:11500",
    )


def test_a_file_wins_key_by_key_and_its_models_as_a_whole(tmp_path: Path) -> None:
    """Where both set a key the file's value is used; the environment fills in the rest."""
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\npoll_interval = "2s"\n[[models]]\nname = "from-file"\n')
    environ = {
        MODELS: "from-env",
        "OLLAMA_KEEPWARM_POLL_INTERVAL": "1s",
        "OLLAMA_KEEPWARM_HEALTH_INTERVAL": "10m",
        "OLLAMA_KEEPWARM_HTTP_PORT": "9000",
    }
    config = load_config(path, environ=environ)
    assert [m.name for m in config.models] == ["from-file"]
    assert config.daemon.poll_interval_s == 2.0
    assert config.daemon.health_interval_s == 600.0
    assert config.http.port == 9000
    # With no [[models]] in the file, the environment's models are used.
    path.write_text('[daemon]\npoll_interval = "2s"\n')
    assert [m.name for m in load_config(path, environ=environ).models] == ["from-env"]


def test_an_error_in_the_file_keeps_naming_the_file_key(tmp_path: Path) -> None:
    """A bad value the file gave is reported by its key even when a variable sets it too."""
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\npoll_interval = "1d"\n[[models]]\nname = "m"\nkeep_alive = 0\n')
    environ = {MODELS: "ok", "OLLAMA_KEEPWARM_POLL_INTERVAL": "1s"}
    with pytest.raises(ConfigError, match=r"^daemon\.poll_interval: time: unknown unit"):
        load_config(path, environ=environ)
    path.write_text('[[models]]\nname = "m"\nkeep_alive = 0\n')
    with pytest.raises(ConfigError, match=r"^models\[0\]\.keep_alive: 0 would unload"):
        load_config(path, environ=environ)


def test_kubernetes_service_links_are_not_typos() -> None:
    """A Service named ollama-keepwarm injects OLLAMA_KEEPWARM_PORT=tcp://...: not an error."""
    layer = read_env(
        {
            "OLLAMA_KEEPWARM_SERVICE_HOST": "10.0.0.7",
            "OLLAMA_KEEPWARM_SERVICE_PORT": "11435",
            "OLLAMA_KEEPWARM_SERVICE_PORT_HTTP": "11435",
            "OLLAMA_KEEPWARM_PORT": "tcp://10.0.0.7:11435",
            "OLLAMA_KEEPWARM_PORT_11435_TCP_ADDR": "10.0.0.7",
            "OLLAMA_KEEPWARM_CONFIG": "/etc/x.toml",
        }
    )
    assert layer.empty


def test_every_daemon_and_http_key_has_a_variable() -> None:
    """A key added to [daemon], [http] or [ollama] must get its variable too."""
    keys = {(table, key) for table, key, _ in VARIABLES.values()}
    for table, cls, skip in (
        ("daemon", DaemonConfig, set()),
        ("http", HttpConfig, set()),
        ("ollama", OllamaConfig, {"host"}),  # that is OLLAMA_HOST's job
    ):
        for item in dataclasses.fields(cls):
            key = item.name.removesuffix("_s")
            if key not in skip:
                assert (table, key) in keys, f"no OLLAMA_KEEPWARM_ variable for {table}.{key}"
    for variable, (table, key, _) in VARIABLES.items():
        expected = key.upper() if table != "http" else f"HTTP_{key.upper()}"
        assert variable == f"OLLAMA_KEEPWARM_{expected}"


def test_find_config_falls_back_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No -c and no file: the environment alone when it names models, else a clear error."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config_module, "SEARCH_PATH", (Path("config.toml"),))
    assert find_config(None, {MODELS: "llama3.1:8b"}) is None
    with pytest.raises(ConfigError, match="pass -c FILE or set OLLAMA_KEEPWARM_MODELS"):
        find_config(None, {MODELS: " "})
    (tmp_path / "config.toml").write_text("")
    assert find_config(None, {MODELS: "llama3.1:8b"}) == Path("config.toml")
