"""Config parsing: every rule names its key path; durations in Ollama's syntax."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import pytest

from ollama_keepwarm.core.config import (
    DEFAULT_HOST,
    ConfigError,
    find_config,
    keep_alive_wire,
    load_config,
    parse_config,
    parse_host,
)
from ollama_keepwarm.core.options import options_unknown_to

REPO = Path(__file__).resolve().parents[2]


def parse(text: str, **environ: str) -> object:
    return parse_config(tomllib.loads(text), environ=environ)


class TestValid:
    """Configs that must load, and what they mean."""

    def test_example_config_at_repo_root_loads(self) -> None:
        """The commented example shipped at the repo root is itself valid."""
        config = load_config(REPO / "config.toml", environ={})
        assert config.models

    def test_defaults(self) -> None:
        """An empty file is a valid config with the documented defaults."""
        config = parse_config({}, environ={})
        assert config.ollama.host == DEFAULT_HOST
        assert config.daemon.poll_interval_s == 5.0
        assert config.models == ()

    @pytest.mark.parametrize(
        ("value", "seconds", "wire"),
        [
            ('"30m"', 1800.0, "30m0s"),
            ('"1h30m"', 5400.0, "1h30m0s"),
            ("90", 90.0, "1m30s"),
            ("1.5", 1.5, "1.5s"),
            ("-1", math.inf, -1),
            ('"-1"', math.inf, -1),
            ('"forever"', math.inf, -1),
        ],
    )
    def test_keep_alive_forms(self, value: str, seconds: float, wire: object) -> None:
        """Leases accept Go strings and seconds; every "forever" is sent as the number -1."""
        config = parse(f'[[models]]\nname = "m"\nkeep_alive = {value}\n')
        model = config.models[0]  # type: ignore[attr-defined]
        assert model.keep_alive_s == seconds
        assert model.keep_alive_wire == wire

    def test_forever_is_never_sent_as_the_string_minus_one(self) -> None:
        """Ollama rejects the string "-1" with 400 (§1.1), so it is never what we send."""
        assert keep_alive_wire(math.inf) == -1
        assert isinstance(keep_alive_wire(math.inf), int)

    def test_options_are_kept_exactly(self) -> None:
        """Options go out exactly as configured."""
        config = parse('[[models]]\nname = "m"\noptions = { num_ctx = 8192, use_mmap = false }\n')
        assert dict(config.models[0].options) == {"num_ctx": 8192, "use_mmap": False}  # type: ignore[attr-defined]

    def test_model_inherits_host_and_may_override(self) -> None:
        """Models use [ollama].host unless they name their own endpoint."""
        config = parse(
            '[ollama]\nhost = "gpu1:11434"\n[[models]]\nname = "a"\n'
            '[[models]]\nname = "b"\nhost = "http://gpu2"\n'
        )
        hosts = [m.host for m in config.models]  # type: ignore[attr-defined]
        assert hosts == ["http://gpu1:11434", "http://gpu2:80"]

    def test_a_bad_ollama_host_env_is_ignored_when_the_file_names_the_host(self) -> None:
        """$OLLAMA_HOST set for another tool does not stop a config that names its host."""
        config = parse('[ollama]\nhost = "gpu1"\n', OLLAMA_HOST="ftp://elsewhere")
        assert config.ollama.host == "http://gpu1:11434"  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match=r"^OLLAMA_HOST: ftp:// is not a scheme"):
            parse("", OLLAMA_HOST="ftp://elsewhere")

    def test_ollama_host_env_is_the_default(self) -> None:
        """Without [ollama].host, OLLAMA_HOST applies as the official clients parse it."""
        config = parse("", OLLAMA_HOST="0.0.0.0:8080")
        assert config.ollama.host == "http://127.0.0.1:8080"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("localhost", "http://localhost:11434"),
        ("example.com:1234", "http://example.com:1234"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        (":8080", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("::1", "http://[::1]:11434"),
        ("[::1]:9", "http://[::1]:9"),
        ("example.com/path/", "http://example.com:11434/path"),
        ('"localhost"', "http://localhost:11434"),
    ],
)
def test_parse_host(raw: str | None, url: str) -> None:
    """OLLAMA_HOST values become URLs as ollama-python's _parse_host does (§6.2)."""
    assert parse_host(raw) == url


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ftp://x:11434", "ftp:// is not a scheme Ollama speaks"),
        ("http://", "'http://' names no host"),  # not http://http:11434
        ("https://", "'https://' names no host"),
        ("http:/x", "'http:/x' is not a URL"),
        ("x:99999", "the port must be a number from 1 to 65535"),
        ("x:", "the port after ':' is missing"),
        ("user:pw@x", "credentials in the URL are not supported"),
        ("x?a=1", "a host URL takes no query or fragment"),
        ("a b", "'a b' is not a host name or IP address"),
        ("[::1", "an IPv6 address in brackets"),
    ],
)
def test_parse_host_refuses_what_no_client_could_dial(raw: str, reason: str) -> None:
    """What would fail inside the HTTP client (reference §6) is refused, saying why."""
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_host(raw)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[ollama]\nhots = "x"', "ollama.hots: unknown key"),
        ('[daemon]\npoll_interval = "5 s"', 'daemon.poll_interval: time: unknown unit " s"'),
        ('[daemon]\npoll_interval = "1d"', 'daemon.poll_interval: time: unknown unit "d"'),
        ('[daemon]\npoll_interval = "300"', "daemon.poll_interval: time: missing unit"),
        ("[daemon]\npoll_interval = -1", "daemon.poll_interval: must not be negative"),
        ("[daemon]\npoll_interval = true", "daemon.poll_interval: must be a duration"),
        ('[daemon]\nrefresh_before = "1s"', "daemon.refresh_before: must be longer than"),
        ('[daemon]\non_gpu_lost = "systemctl restart ollama"', "daemon.on_gpu_lost: must be a"),
        ("[http]\nport = 70000", "http.port: must be between 0 and 65535"),
        ("[[models]]\nkeep_alive = 5", "models[0].name: is required"),
        ('[[models]]\nname = ""', "models[0].name: must not be empty"),
        ('[[models]]\nname = "m"\nkeep_alive = 0', "models[0].keep_alive: 0 would unload"),
        ('[[models]]\nname = "m"\nkeep_alive = "0s"', "models[0].keep_alive: 0 would unload"),
        ('[[models]]\nname = "m"\nkeep_alive = 1e12', "models[0].keep_alive: is too large"),
        ('[[models]]\nname = "m"\noptions = 5', "models[0].options: must be a table"),
        ('[[models]]\nname = "m"\noptions = { x = {} }', "models[0].options.x: unknown load"),
        ('[[models]]\nname = "m"\npriority = "high"', "models[0].priority: must be an integer"),
        ('[[models]]\nname = "m"\nkeepalive = "5m"', "models[0].keepalive: unknown key"),
        ('[[models]]\nname = "gpt-oss:120b-cloud"', "models[0].name: 'gpt-oss:120b-cloud' is a"),
        (
            '[[models]]\nname = "llama3.2"\n[[models]]\nname = "Llama3.2:latest"',
            "models[1].name: 'Llama3.2:latest' is already listed as models[0]",
        ),
        ('models = "x"', "models: must be an array"),
        ("extra = 1", "extra: unknown key"),
    ],
)
def test_invalid_config_names_key_and_rule(text: str, message: str) -> None:
    """Each invalid value is rejected with its key path and the rule it breaks."""
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert str(caught.value).startswith(message)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    """A missing file and a TOML syntax error are config errors with the path."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[models]\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-c wins, then $OLLAMA_KEEPWARM_CONFIG, then ./config.toml."""
    monkeypatch.chdir(tmp_path)
    assert find_config("x.toml", {"OLLAMA_KEEPWARM_CONFIG": "y.toml"}) == Path("x.toml")
    assert find_config(None, {"OLLAMA_KEEPWARM_CONFIG": "y.toml"}) == Path("y.toml")
    (tmp_path / "config.toml").write_text("")
    assert find_config(None, {}) == Path("config.toml")


@pytest.mark.parametrize(
    ("version", "options", "unknown"),
    [
        ("0.24.0", {"num_ctx": 8192}, []),
        ("0.24.0", {"draft_num_predict": 4}, ["draft_num_predict (Ollama 0.30.0+)"]),
        ("0.29.9", {"draft_num_predict": 4}, ["draft_num_predict (Ollama 0.30.0+)"]),
        ("0.30.0", {"draft_num_predict": 4}, []),
        ("0.32.15", {"draft_num_predict": 4, "num_ctx": 1}, []),
        ("0.0.0", {"draft_num_predict": 4}, []),  # a build from source
        ("dev", {"draft_num_predict": 4}, []),  # unparsable: the benefit of the doubt
    ],
)
def test_options_per_ollama_version(
    version: str, options: dict[str, int], unknown: list[str]
) -> None:
    """Load options are a known set per Ollama version (§4.6): check names the ones it ignores."""
    assert options_unknown_to(version, options) == unknown
