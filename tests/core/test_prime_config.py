"""The ``prime`` keys, and the pure priming rules of ``core/prime.py`` (issue 14)."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ollama_keepwarm.core.config import ConfigError, load_config, parse_config
from ollama_keepwarm.core.prime import (
    CHAT,
    GENERATE,
    Message,
    Prime,
    PrimeState,
    appeared,
    is_due,
    note_load,
    record_prime_failed,
    record_prime_finished,
    record_prime_started,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def prime_of(text: str, files: dict[str, str] | None = None) -> Prime | None:
    raw = tomllib.loads('[[models]]\nname = "m"\n' + text)
    return parse_config(raw, environ={}, read_text=(files or {}).__getitem__).models[0].prime


@pytest.mark.parametrize(
    ("text", "prime"),
    [
        ("", None),
        ('prime = "Be brief."', Prime((Message("system", "Be brief."),))),
        (
            'prime = [{ role = "system", content = "S" }, { role = "user", content = "U" }]',
            Prime((Message("system", "S"), Message("user", "U"))),
        ),
        (
            'prime = "P"\nprime_endpoint = "generate"',
            Prime((Message("system", "P"),), endpoint=GENERATE),
        ),
        (
            'prime = "P"\nprime_endpoint = "/api/generate"\nprime_raw = true',
            Prime((Message("system", "P"),), endpoint=GENERATE, raw=True),
        ),
        ('prime_file = "sys.txt"', Prime((Message("system", "from file"),), source="sys.txt")),
    ],
)
def test_prime_forms(text: str, prime: Prime | None) -> None:
    assert prime_of(text, {"sys.txt": "from file"}) == prime


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('prime = ""', "models[0].prime: must be a non-empty string"),
        ("prime = 3", "models[0].prime: must be a system prompt or an array of messages"),
        ('prime = "a"\nprime_file = "b"', "models[0].prime_file: use either prime or"),
        ('prime_endpoint = "chat"', "models[0].prime_endpoint: needs prime or prime_file"),
        ('prime = "a"\nprime_endpoint = "embed"', 'must be "chat" (/api/chat) or "generate"'),
        ('prime = "a"\nprime_raw = true', "models[0].prime_raw: applies to"),
        ('prime = [{ role = "bot", content = "x" }]', "models[0].prime[0].role: must be one of"),
        ('prime = [{ role = "user" }]', "models[0].prime[0].content: must be a non-empty"),
        ("prime = []", "models[0].prime: must list at least one message"),
        (
            'prime = [{ role = "user", content = "x" }]\nprime_endpoint = "generate"',
            'models[0].prime: messages need prime_endpoint = "chat"',
        ),
        ('prime_file = "missing.txt"', "models[0].prime_file: cannot read missing.txt"),
        ('prime_file = "empty.txt"', "models[0].prime_file: empty.txt is empty"),
    ],
)
def test_bad_prime_names_the_key(text: str, message: str) -> None:
    def read(name: str) -> str:
        if name == "empty.txt":
            return " \n"
        raise FileNotFoundError(2, "No such file or directory")

    raw = tomllib.loads('[[models]]\nname = "m"\n' + text)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={}, read_text=read)
    assert message in str(caught.value)


def test_prime_file_is_read_beside_the_config_at_every_load(tmp_path: Path) -> None:
    (tmp_path / "bot.txt").write_text("You are the bot.\n")
    config = tmp_path / "config.toml"
    config.write_text('[[models]]\nname = "m"\nprime_file = "bot.txt"\n')
    first = load_config(config, environ={}).models[0].prime
    (tmp_path / "bot.txt").write_text("You are the new bot.\n")
    second = load_config(config, environ={}).models[0].prime
    assert first is not None
    assert first.text == "You are the bot.\n"
    assert second is not None
    assert second.text == "You are the new bot.\n"


def test_payloads_keep_our_options_and_predict_one_token() -> None:
    options = {"num_ctx": 8192}
    chat = Prime((Message("system", "S"), Message("user", "U"))).payload(
        "m", keep_alive="1h0m0s", options=options
    )
    assert chat == {
        "model": "m",
        "stream": False,
        "keep_alive": "1h0m0s",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        "options": {"num_ctx": 8192, "num_predict": 1},
    }
    raw = Prime((Message("system", "P"),), endpoint=GENERATE, raw=True).payload(
        "m", keep_alive=-1, options={}
    )
    assert (raw["prompt"], raw["raw"], "system" in raw) == ("P", True, False)
    templated = Prime((Message("system", "P"),), endpoint=GENERATE).payload(
        "m", keep_alive=-1, options={}
    )
    assert templated["system"] == "P"
    assert templated["prompt"]


PRIME = Prime((Message("system", "S"),), endpoint=CHAT)
LOADED = note_load(PrimeState(), T0, "warm")
DONE = record_prime_finished(
    LOADED, PRIME, T0, T0, duration_s=1.0, prompt_tokens=10, prompt_eval_s=0.9
)


@pytest.mark.parametrize(
    ("prime", "st", "kwargs", "due"),
    [
        (PRIME, LOADED, {}, True),
        (None, LOADED, {}, False),  # not configured
        (PRIME, PrimeState(), {}, False),  # no load seen yet
        (PRIME, DONE, {}, False),  # primed: a lease renewal does not prime again
        (PRIME, note_load(DONE, T0 + timedelta(seconds=9), "reload"), {}, True),  # reloaded
        (Prime((Message("system", "new"),)), DONE, {}, True),  # the config changed it
        (PRIME, LOADED, {"listed": False}, False),  # would load it
        (PRIME, LOADED, {"leave_alone": True}, False),  # paused, held, foreign
        (PRIME, LOADED, {"warm_in_flight": True}, False),
        (PRIME, record_prime_started(LOADED, T0), {}, False),
        (PRIME, record_prime_failed(LOADED, T0 + timedelta(seconds=6), "boom"), {}, False),
        (PRIME, record_prime_failed(LOADED, T0 + timedelta(seconds=4), "boom"), {}, True),
    ],
)
def test_when_a_prime_is_due(
    prime: Prime | None, st: PrimeState, kwargs: dict[str, bool], due: bool
) -> None:
    args = {"listed": True, "leave_alone": False, "warm_in_flight": False, **kwargs}
    assert is_due(prime, st, T0 + timedelta(seconds=10), **args) is due


def test_failures_back_off_and_a_new_load_retries_at_once() -> None:
    st = LOADED
    delays = []
    for _ in range(8):
        st = record_prime_failed(st, T0, "boom")
        assert st.backoff_until is not None
        delays.append((st.backoff_until - T0).total_seconds())
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300]
    assert note_load(st, T0, "reload").backoff_until is None


@pytest.mark.parametrize(
    ("before", "now", "unsettled", "load"),
    [
        (False, True, False, True),  # a client loaded it
        (False, True, True, False),  # our own load, counted by its event
        (True, True, False, False),
        (True, False, False, False),
        (False, False, False, False),
    ],
)
def test_appearance_is_a_load(before: bool, now: bool, unsettled: bool, load: bool) -> None:
    assert appeared(before, now, ours_unsettled=unsettled) is load
