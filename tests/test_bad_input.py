"""Bad input never crashes and typos never pass (issue 24): one table, three ways in.

Every case runs ``python -m ollama_keepwarm`` as a real process: a config file (``-c``), the
environment alone (no file anywhere), or a command line. Each must exit 78 (configuration) or 2
(usage) with ONE line on stderr that names the key or variable and the rule, print nothing on
stdout and never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

EX_USAGE, EX_CONFIG = 2, 78
MODELS = "OLLAMA_KEEPWARM_MODELS"
COMMANDS = ("check", "run", "warm")
"""A file or environment case runs through each in turn: all three read the config the same way."""


@dataclass(frozen=True)
class Case:
    """One bad input and the words its one line must contain."""

    text: str | bytes  # the config file (file cases), unused otherwise
    says: str
    code: int = EX_CONFIG


def _m(body: str) -> str:
    return f'[[models]]\nname = "m"\n{body}\n'


FILE_CASES: dict[str, Case] = {
    # hosts, as Ollama's clients parse them (reference §6)
    "ftp host": Case('[ollama]\nhost = "ftp://x:11434"', "ollama.host: ftp:// is not a scheme"),
    "http:// alone": Case('[ollama]\nhost = "http://"', "ollama.host: 'http://' names no host"),
    "port out of range": Case('[ollama]\nhost = "x:99999"', "ollama.host: 'x:99999': the port"),
    "port zero": Case('[ollama]\nhost = "x:0"', "ollama.host: 'x:0': the port must be"),
    "port not a number": Case('[ollama]\nhost = "x:abc"', "ollama.host: 'x:abc': the port"),
    "credentials": Case('[ollama]\nhost = "u:p@x"', "ollama.host: 'u:p@x': credentials"),
    "space in host": Case('[ollama]\nhost = "a b"', "ollama.host: 'a b': 'a b' is not a host"),
    "query in host": Case('[ollama]\nhost = "x?y=1"', "ollama.host: 'x?y=1': a host URL takes"),
    "host blank": Case('[ollama]\nhost = " "', "ollama.host: must not be empty (leave the key"),
    "host a number": Case("[ollama]\nhost = 11434", "ollama.host: must be a string"),
    "model host gopher": Case(_m('host = "gopher://x"'), "models[0].host: gopher:// is not"),
    "http host a URL": Case('[http]\nhost = "http://0.0.0.0"', "http.host: 'http://0.0.0.0' is"),
    # the file itself
    "not UTF-8": Case(b'[[models]]\nname = "caf\xe9"\n', "not UTF-8 text (byte 0xe9 on line 2)"),
    "TOML syntax": Case("[[models]\n", "invalid TOML"),
    "repeated TOML key": Case('[[models]]\nname = "a"\nname = "b"\n', "invalid TOML"),
    "NUL byte": Case(b"[daemon]\x00\n", "invalid TOML"),
    "unknown table": Case('[daemn]\npoll_interval = "5s"', "daemn: unknown key"),
    "table a number": Case("daemon = 3", "daemon: must be a table, not an integer"),
    "table an empty array": Case("ollama = []", "ollama: must be a table, not an array"),
    "table false": Case("http = false", "http: must be a table, not a boolean"),
    "array of tables": Case("[[daemon]]\n", "daemon: must be a table, not an array"),
    "models a string": Case('models = "x"', "models: must be an array"),
    "models of numbers": Case("models = [1]", "models[0]: must be a table, not an integer"),
    "model without name": Case("[[models]]\nkeep_alive = 5", "models[0].name: is required"),
    # wrong types everywhere
    "interval a boolean": Case("[daemon]\npoll_interval = true", "daemon.poll_interval: must be"),
    "port a string": Case('[http]\nport = "80"', "http.port: must be an integer, not a string"),
    "port a float": Case("[http]\nport = 1.5", "http.port: must be an integer, not a number"),
    "enabled a string": Case('[http]\nenabled = "yes"', "http.enabled: must be true or false"),
    "name a number": Case("[[models]]\nname = 5", "models[0].name: must be a model name string"),
    "verify a number": Case(_m("verify = 1"), "models[0].verify: must be true or false"),
    "priority a float": Case(_m("priority = 1e100"), "models[0].priority: must be an integer"),
    "priority huge": Case(_m("priority = 99999999999"), "models[0].priority: must be between"),
    "cgroup a word": Case('[ollama]\ncgroup = "foo"', "ollama.cgroup: must be"),
    "timezone unknown": Case('[daemon]\ntimezone = "Mars/Base"', "daemon.timezone: 'Mars/Base'"),
    "NUL in a path": Case('[daemon]\nstate_dir = "/tmp/a\\u0000b"', "state_dir: contains a NUL"),
    "socket path too long": Case(
        f'[daemon]\ncontrol_socket = "/tmp/{"a" * 120}"', "control_socket: is 125 bytes long"
    ),
    "empty string": Case('[daemon]\ntimezone = ""', "daemon.timezone: must not be empty (leave"),
    "hook empty": Case("[daemon]\non_gpu_lost = []", "daemon.on_gpu_lost: must be a command"),
    # durations: huge, negative, tiny, NaN, infinite
    "interval huge number": Case("[daemon]\npoll_interval = 1e300", "must be at most 168h0m0s"),
    "interval huge string": Case('[daemon]\nhealth_interval = "2562047h"', "must be at most"),
    "timeout huge": Case('[ollama]\nload_timeout = "9000h"', "ollama.load_timeout: must be at"),
    "timeout 1ns": Case('[ollama]\nrequest_timeout = "1ns"', "request_timeout: must be at least"),
    "interval negative": Case("[daemon]\npoll_interval = -5", "poll_interval: must not be neg"),
    "interval -5s": Case('[daemon]\npoll_interval = "-5s"', "poll_interval: must not be neg"),
    "interval 1ns": Case('[daemon]\npoll_interval = "1ns"', "poll_interval: must be at least"),
    "interval nan": Case("[daemon]\npoll_interval = nan", "poll_interval: must be a finite"),
    "interval days": Case('[daemon]\npoll_interval = "1d"', 'unknown unit "d"'),
    "interval no unit": Case('[daemon]\npoll_interval = "300"', "missing unit"),
    "refresh below poll": Case('[daemon]\nrefresh_before = "1s"', "daemon.refresh_before: must"),
    "keep_alive inf": Case(_m("keep_alive = inf"), "keep_alive: must be a finite number"),
    "keep_alive -inf": Case(_m("keep_alive = -inf"), "keep_alive: must be a finite number"),
    "keep_alive huge": Case(_m("keep_alive = 1e12"), "keep_alive: is too large for Ollama"),
    "keep_alive -30": Case(_m("keep_alive = -30"), "keep_alive: -30 is negative, which Ollama"),
    "keep_alive -5m": Case(_m('keep_alive = "-5m"'), "keep_alive: '-5m' is negative"),
    "keep_alive 0": Case(_m("keep_alive = 0"), "keep_alive: 0 would unload the model"),
    "forever with when": Case(
        _m('keep_alive = -1\nwhen = ["mon-fri 08:00-19:00"]'),
        "models[0].keep_alive: -1 (forever) with `when` never leaves VRAM outside the windows, "
        'as after_window = "expire"',
    ),
    "forever with learned hours": Case(
        _m('keep_alive = -1\nwhen = "learned"'),
        "models[0].keep_alive: -1 (forever) with `when` never leaves VRAM",
    ),
    # model names, as Ollama's types/model/name.go
    "name with space": Case(
        '[[models]]\nname = "llama 3.1:8b"', "models[0].name: 'llama 3.1:8b' is not a name Ollama"
    ),
    "name empty": Case('[[models]]\nname = ""', "models[0].name: must not be empty"),
    "name blank": Case('[[models]]\nname = "  "', "models[0].name: must not be empty"),
    "name empty tag": Case('[[models]]\nname = "m:"', "ends in ':' with no tag"),
    "name too deep": Case('[[models]]\nname = "a/b/c/d"', "has more than host/namespace/model"),
    "name dotted ns": Case('[[models]]\nname = "my.ns/m"', "the namespace 'my.ns' contains '.'"),
    "name leading dash": Case('[[models]]\nname = "-m"', "must start with a letter"),
    "name digest": Case('[[models]]\nname = "m@sha256:00"', "names a digest"),
    "name cloud": Case('[[models]]\nname = "gpt-oss:120b-cloud"', "is a cloud model"),
    "duplicate models": Case(
        '[[models]]\nname = "library/llama3.2"\n[[models]]\nname = "Llama3.2:latest"',
        "models[1].name: 'Llama3.2:latest' is already listed as models[0]",
    ),
    # load options (reference §4.6) and model keys
    "option typo": Case(_m("options = { num_ctxx = 1 }"), "options.num_ctxx: unknown load option"),
    "option a string": Case(_m('options = { num_ctx = "8k" }'), "num_ctx: must be an integer"),
    "option zero": Case(_m("options = { num_ctx = 0 }"), "options.num_ctx: must be between"),
    "option sampling": Case(_m("options = { temperature = 0.1 }"), "per-request sampling"),
    "option legacy": Case(_m("options = { use_mlock = true }"), "only Ollama up to 0.6.8"),
    "option bool as int": Case(_m("options = { use_mmap = 1 }"), "use_mmap: must be true or"),
    "options an array": Case(_m("options = []"), "models[0].options: must be a table"),
    "model key typo": Case(_m("priorty = 1"), "models[0].priorty: unknown key"),
    "window bad": Case(_m('when = ["mon-fri 25:00-26:00"]'), "models[0].when[0]:"),
    "window a number": Case(_m("when = 5"), "models[0].when: must be a list of windows"),
    "after_window bad": Case(
        _m('when = ["mon 08:00-09:00"]\nafter_window = "drop"'), "after_window: must be one"
    ),
    "lead without when": Case(_m('lead = "5m"'), "models[0].lead: has no effect without `when`"),
    "prime a number": Case(_m("prime = 5"), "models[0].prime: must be a system prompt"),
    "prime endpoint": Case(_m('prime = "x"\nprime_endpoint = "x"'), "prime_endpoint: must be"),
    "prime file endless": Case(_m('prime_file = "/dev/zero"'), "cannot read /dev/zero: larger"),
    "prime file a directory": Case(_m('prime_file = "/"'), "prime_file: cannot read /: Is a dir"),
    "prime file missing": Case(_m('prime_file = "nope.txt"'), "prime_file: cannot read nope.txt"),
}

ENV_CASES: dict[str, tuple[dict[str, str], str]] = {
    "OLLAMA_HOST ftp": ({MODELS: "tiny", "OLLAMA_HOST": "ftp://x"}, "OLLAMA_HOST: ftp:// is"),
    "OLLAMA_HOST http://": ({MODELS: "tiny", "OLLAMA_HOST": "http://"}, "OLLAMA_HOST: 'http://'"),
    "OLLAMA_HOST port": ({MODELS: "tiny", "OLLAMA_HOST": "x:abc"}, "OLLAMA_HOST: 'x:abc': the"),
    "param typo": (
        {MODELS: "tiny?priorty=10"},
        f'{MODELS}: model 1 ("tiny"): priorty: unknown load option (did you mean priority?',
    ),
    "option not a number": (
        {MODELS: "tiny?num_ctx=abc"},
        f'{MODELS}: model 1 ("tiny"): num_ctx: must be an integer, not a string',
    ),
    "option twice": (
        {MODELS: "tiny?num_ctx=1&num_ctx=2"},
        f'{MODELS}: model 1 ("tiny"): num_ctx: given twice',
    ),
    "key twice": ({MODELS: "a?priority=1&priority=2"}, 'model 1 ("a"): priority: given twice'),
    "sampling option": ({MODELS: "tiny?temperature=0.2"}, "temperature: is a per-request"),
    "name with space": (
        {MODELS: "llama 3.1:8b"},
        f"{MODELS}: model 1 (\"llama 3.1:8b\"): name: 'llama 3.1:8b' is not a name Ollama",
    ),
    "name not UTF-8": ({MODELS: "ti\udcffny"}, f'{MODELS}: model 1 ("ti'),
    "no name": ({MODELS: "?keep_alive=1h"}, "no model name before '?'"),
    "no value": ({MODELS: "tiny?keep_alive"}, "is not key=value&key=value"),
    "empty parameter name": ({MODELS: "tiny?=3"}, "a parameter has no name"),
    "keep_alive -30": ({MODELS: "tiny?keep_alive=-30"}, "keep_alive: -30 is negative"),
    "forever with when": (
        {MODELS: "tiny?keepalive=-1&when=mon-fri+08:00-19:00"},
        'model 1 ("tiny"): keep_alive: -1 (forever) with `when`',
    ),
    "forever with learned hours": (
        {MODELS: "tiny?keepalive=-1&when=learned"},
        'model 1 ("tiny"): keep_alive: -1 (forever) with `when`',
    ),
    "model host ftp": ({MODELS: "tiny?host=ftp://x"}, 'model 1 ("tiny"): host: ftp://'),
    "verify maybe": ({MODELS: "tiny?verify=maybe"}, "verify: must be true or false"),
    "priority float": ({MODELS: "tiny?priority=1.5"}, "priority: must be an integer"),
    "prime endpoint": ({MODELS: "tiny?prime=hi&prime_endpoint=x"}, "prime_endpoint: must be"),
    "duplicate": ({MODELS: "tiny,TINY:latest"}, "name: 'TINY:latest' is already listed as model"),
    "window": ({MODELS: "tiny?when=mon+25:00-26:00"}, 'model 1 ("tiny"): when[0]:'),
    "lead alone": ({MODELS: "tiny?lead=5m"}, "lead: has no effect without `when`"),
    "poll abc": (
        {MODELS: "a", "OLLAMA_KEEPWARM_POLL_INTERVAL": "abc"},
        'OLLAMA_KEEPWARM_POLL_INTERVAL: time: invalid duration "abc"',
    ),
    "poll negative": (
        {MODELS: "a", "OLLAMA_KEEPWARM_POLL_INTERVAL": "-5s"},
        "OLLAMA_KEEPWARM_POLL_INTERVAL: must not be negative",
    ),
    "poll nan": ({MODELS: "a", "OLLAMA_KEEPWARM_POLL_INTERVAL": "nan"}, "POLL_INTERVAL: time:"),
    "poll overflow": (
        {MODELS: "a", "OLLAMA_KEEPWARM_POLL_INTERVAL": "1e400"},
        "OLLAMA_KEEPWARM_POLL_INTERVAL: must be a finite number",
    ),
    "refresh below poll": (
        {MODELS: "a", "OLLAMA_KEEPWARM_REFRESH_BEFORE": "1s"},
        "OLLAMA_KEEPWARM_REFRESH_BEFORE: must be longer than",
    ),
    "port huge": ({MODELS: "a", "OLLAMA_KEEPWARM_HTTP_PORT": "99999"}, "HTTP_PORT: must be betw"),
    "port negative": ({MODELS: "a", "OLLAMA_KEEPWARM_HTTP_PORT": "-1"}, "HTTP_PORT: must be betw"),
    "enabled maybe": ({MODELS: "a", "OLLAMA_KEEPWARM_HTTP_ENABLED": "maybe"}, "HTTP_ENABLED: must"),
    "http host": ({MODELS: "a", "OLLAMA_KEEPWARM_HTTP_HOST": "a b"}, "HTTP_HOST: 'a b' is not"),
    "unknown variable": ({MODELS: "a", "OLLAMA_KEEPWARM_FOO": "1"}, "OLLAMA_KEEPWARM_FOO: unknown"),
    "timezone": ({MODELS: "a", "OLLAMA_KEEPWARM_TIMEZONE": "Mars/Base"}, "TIMEZONE: 'Mars/Base'"),
    "cgroup": ({MODELS: "a", "OLLAMA_KEEPWARM_CGROUP": "foo"}, "OLLAMA_KEEPWARM_CGROUP: must be"),
    "hook quote": ({MODELS: "a", "OLLAMA_KEEPWARM_ON_GPU_LOST": "a 'b"}, "ON_GPU_LOST: cannot"),
    "config missing": ({"OLLAMA_KEEPWARM_CONFIG": "/nonexistent.toml"}, "cannot read /nonex"),
    "config a directory": ({"OLLAMA_KEEPWARM_CONFIG": "/"}, "cannot read /: Is a directory"),
    "nothing configured": ({}, "no config file found"),
}

CLI_CASES: dict[str, tuple[list[str], str, int]] = {
    "timeout word": (["check", "--timeout", "abc"], "argument --timeout: time: invalid", 2),
    "timeout negative": (["check", "--timeout=-5s"], "argument --timeout: must not be", 2),
    "timeout zero": (["warm", "--timeout", "0"], "argument --timeout: must be greater than 0", 2),
    "timeout huge": (["warm", "--timeout", "9000h"], "argument --timeout: must be at most", 2),
    "deadline nan": (["warm", "--deadline", "nan"], "argument --deadline: time: invalid", 2),
    "demo nan": (["demo", "--duration", "nan"], "argument --duration: must be a number", 2),
    "demo negative": (["demo", "--duration", "-1"], "argument --duration: must be a number", 2),
    "demo word": (["demo", "--duration", "soon"], "argument --duration: must be a number", 2),
    "pause no model": (["pause"], "the following arguments are required: model", 2),
    "pause for days": (["pause", "m", "--for", "1d"], 'argument --for: time: unknown unit "d"', 2),
    "no command": ([], "the following arguments are required: COMMAND", 2),
    "unknown command": (["chek"], "argument COMMAND: invalid choice: 'chek'", 2),
    "unknown flag": (["check", "--bogus"], "unrecognized arguments: --bogus", 2),
    "status url ftp": (["status", "--url", "ftp://x"], "argument --url: ftp:// is not", 2),
    "log level": (["run", "--log-level", "loud"], "argument --log-level: invalid choice", 2),
    "fake time scale": (["fake-ollama", "--time-scale", "0"], "time_scale must be a positive", 2),
    "fake parallel": (["fake-ollama", "--num-parallel", "0"], "num_parallel must be at least", 2),
    "fake port": (["fake-ollama", "--port", "99999"], "argument --port: must be from 0 to", 2),
    "config /dev/zero": (["check", "-c", "/dev/zero"], "/dev/zero: larger than 16 MiB", 78),
    "config /dev/urandom": (["warm", "-c", "/dev/urandom"], "/dev/urandom: larger than", 78),
    "config empty name": (["check", "-c", ""], "argument -c/--config: names no file", 2),
    "config missing": (["check", "-c", "/nonexistent.toml"], "cannot read /nonexistent.toml", 78),
    "config a directory": (["warm", "-c", "/"], "cannot read /: Is a directory", 78),
    "status bad config": (["status", "-c", "/"], "cannot read /: Is a directory", 78),
    "pause bad config": (["pause", "m", "-c", "/"], "cannot read /: Is a directory", 78),
}


def _environ(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any Ollama or keeper setting, plus ``extra``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
    return {**clean, "NO_COLOR": "1", **extra}


def run(args: list[str], cwd: Path, extra: dict[str, str]) -> tuple[int, str, str]:
    """Run the CLI to completion; a config error must come long before any network."""
    done = subprocess.run(
        [sys.executable, "-m", "ollama_keepwarm", *args],
        cwd=cwd,
        env=_environ(extra),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return (
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def assert_one_line(code: int, out: str, err: str, want_code: int, says: str) -> None:
    assert "Traceback" not in err + out, err
    lines = err.strip().splitlines()
    assert (code, len(lines)) == (want_code, 1), err
    assert says in lines[0], lines[0]
    assert not out.strip(), out


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_a_bad_file(name: str, tmp_path: Path) -> None:
    """Each bad config file: exit 78, one line naming the key path and the rule."""
    case = FILE_CASES[name]
    path = tmp_path / "config.toml"
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    else:
        path.write_text(case.text)
    command = COMMANDS[list(FILE_CASES).index(name) % len(COMMANDS)]
    code, out, err = run([command, "-c", str(path)], tmp_path, {})
    assert_one_line(code, out, err, case.code, case.says)


@pytest.mark.parametrize("name", list(ENV_CASES))
def test_a_bad_environment(name: str, tmp_path: Path) -> None:
    """Each bad variable, with no config file anywhere: exit 78, one line naming the variable."""
    environ, says = ENV_CASES[name]
    command = COMMANDS[list(ENV_CASES).index(name) % len(COMMANDS)]
    code, out, err = run([command], tmp_path, environ)
    assert_one_line(code, out, err, EX_CONFIG, says)


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_a_bad_command_line(name: str, tmp_path: Path) -> None:
    """Each bad argument: exit 2 (usage) or 78 (the file it names), one line saying which."""
    args, says, want = CLI_CASES[name]
    code, out, err = run(args, tmp_path, {})
    assert_one_line(code, out, err, want, says)


def test_an_empty_file_is_valid_but_check_says_it_keeps_nothing(tmp_path: Path) -> None:
    """An empty file is a valid config (the defaults); ``check`` says in one line it keeps
    nothing and exits 1, so a deploy script notices."""
    path = tmp_path / "config.toml"
    path.write_text("")
    code, out, err = run(["check", "-c", str(path)], tmp_path, {})
    assert_one_line(code, out, err, 1, "keeps no models")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file(tmp_path: Path) -> None:
    """A file the service user may not read: exit 78 saying so."""
    path = tmp_path / "config.toml"
    path.write_text('[[models]]\nname = "m"\n')
    path.chmod(0)
    code, out, err = run(["check", "-c", str(path)], tmp_path, {})
    assert_one_line(code, out, err, EX_CONFIG, "Permission denied")
