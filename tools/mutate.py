"""A small mutation check: does the suite notice one deliberate bug at a time? (issue 17)

Each mutant is one textual change to a module of ``core/plan/`` or ``fake/scheduler.py``:
a behaviour the suite claims to check, broken on purpose. For each, the tree is copied to a
scratch folder (the working tree is never edited), the snippet is replaced there, and pytest
runs against the copy. A failing run *kills* the mutant; a passing one means the suite names a
behaviour it does not check. A run longer than ``--timeout`` counts as killed (a hang is noticed
too), but is reported apart.

    python tools/mutate.py                 # every mutant: minutes (a survivor runs the folders)
    python tools/mutate.py --list          # the mutants' names
    python tools/mutate.py --only NAME     # one (repeatable)

Exit status: 0 when every mutant run was killed, 1 when one survived, 2 on a bad mutant (its
snippet no longer occurs exactly once: the code moved on, so edit the table) or a broken
baseline. Dependency-free on purpose: a list we chose, not a tool's random operators, so each
mutant stands for a bug someone could really write, and the run takes minutes, not hours.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAN = "src/ollama_keepwarm/core/plan/"
"""A folder: a mutant applies to the one module of it that holds its snippet."""
SCHED = "src/ollama_keepwarm/fake/scheduler.py"
STOP = '("stopped", caller)'  # why the unload command marks a runner (fake/records.py)
DEFAULT_TESTS = ("tests/core", "tests/daemon", "tests/fake")
FIRST = {PLAN: "tests/core", SCHED: "tests/fake"}
"""The folder run first for a file's mutants (its own tests): with ``-x`` a kill is quick."""
SKIPPED = (".git", ".venv", "__pycache__", "*.pyc", "*_cache", "build", "dist", "*.egg-info")


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: ``original`` (exactly once in ``path``) becomes ``mutated``."""

    name: str
    path: str
    original: str
    mutated: str


MUTANTS: tuple[Mutant, ...] = (
    # -- plan.py: the survivors issue 17 listed ----------------------------------------------
    Mutant(
        "rewarm_delay_ignored",
        PLAN,
        "if st.rewarm_not_before is not None and now < st.rewarm_not_before:",
        "if False:",
    ),
    Mutant(
        "failures_not_counted",
        PLAN,
        "failures = st.failures + 1\n    delay = retry_delay_s(backoff_delay_s(kind,",
        "failures = st.failures\n    delay = retry_delay_s(backoff_delay_s(kind,",
    ),
    Mutant(
        "renewal_retry_past_lease",
        PLAN,
        "return min(delay_s, max(left / 2, RETRY_FLOOR_S))",
        "return delay_s",
    ),
    Mutant(
        "backoff_table_ignored",
        PLAN,
        "first, cap = _BACKOFF.get(kind, (5.0, 300.0))",
        "first, cap = (5.0, 300.0)",
    ),
    Mutant(
        "refresh_request_repeats",
        PLAN,
        "if st.refresh_requested_at is not None and st.last_warm_ok_at < st.refresh_requested_at:",
        "if st.refresh_requested_at is not None:",
    ),
    Mutant(
        "culprit_window_end_ignored",
        PLAN,
        "if start <= until and (end is None or end >= since):",
        "if start <= until:",
    ),
    Mutant(
        "failed_load_window_left_open",
        PLAN,
        "    if st.load_window and st.load_window[1] is None:\n        return (",
        "    if False:\n        return (",
    ),
    Mutant(
        "strikes_never_expire",
        PLAN,
        "recent = {t for st in states.values() for t in st.strikes if now - t < window}",
        "recent = {t for st in states.values() for t in st.strikes}",
    ),
    Mutant(
        "lone_vanish_is_restart",
        PLAN,
        "bool(previous and len(previous.models) > 1)",
        "bool(previous and len(previous.models) >= 1)",
    ),
    Mutant(
        "loss_streak_never_resets",
        PLAN,
        "count = st.vanishes + 1 if recent else 1",
        "count = st.vanishes + 1",
    ),
    Mutant(  # the real bug this run found: the previous loss read after it was overwritten
        "loss_streak_reads_this_loss",
        PLAN,
        "    last_loss = st.last_vanished_at\n",
        "    last_loss = now\n",
    ),
    Mutant(
        "rewarm_delay_uncapped",
        PLAN,
        "min(REWARM_DELAY_CAP_S, step * 2 ** min(exponent, MAX_EXPONENT))",
        "step * 2 ** min(exponent, MAX_EXPONENT)",
    ),
    Mutant(
        "oom_rewarm_waits",
        PLAN,
        "step, exponent = daemon.poll_interval_s, count - 2",
        "step, exponent = daemon.poll_interval_s, count - 1",
    ),
    Mutant(
        "reload_floor_zero",
        PLAN,
        "SUSPECT_RELOAD_FLOOR_S = 0.1",
        "SUSPECT_RELOAD_FLOOR_S = 0.0",
    ),
    Mutant(
        "no_jitter",
        PLAN,
        'jitter = 0.75 + 0.5 * (int.from_bytes(digest[:4], "big") / 2**32)',
        "jitter = 1.0",
    ),
    Mutant(
        "expiry_tolerance_dropped",
        PLAN,
        "old.expires_at <= now + EXPIRY_TOLERANCE",
        "old.expires_at <= now",
    ),
    # -- plan.py: more rules the suite names ---------------------------------------------------
    Mutant(
        "half_lease_margin_dropped",
        PLAN,
        "margin = min(daemon.refresh_before_s, model.keep_alive_s / 2)",
        "margin = daemon.refresh_before_s",
    ),
    Mutant(
        "client_lease_margin_dropped",
        PLAN,
        "            margin = min(margin, seen / 2)",
        "            pass",
    ),
    Mutant(
        "health_ping_renews",
        PLAN,
        'due, reason, renew = health_due, "health check", False',
        'due, reason, renew = health_due, "health check", True',
    ),
    Mutant(
        "frozen_lease_renewed",
        PLAN,
        "    if is_frozen(st, row, now):\n        return None, FROZEN, False",
        "    if False:\n        return None, FROZEN, False",
    ),
    Mutant(
        "claim_without_a_ping",
        PLAN,
        "        and _pinged_idle(daemon, st, row, seen_at)\n",
        "",
    ),
    Mutant(
        "in_flight_ignored",
        PLAN,
        "    if st.in_flight_since is not None:\n        return verdict(Action.WAIT",
        "    if False:\n        return verdict(Action.WAIT",
    ),
    Mutant(
        "unconfirmed_ignored",
        PLAN,
        "if model.key not in unconfirmed or snapshot is None",
        "if True",
    ),
    Mutant(
        "rank_reversed",
        PLAN,
        "key=lambda m: -m.priority",
        "key=lambda m: m.priority",
    ),
    Mutant(
        "resume_ignored",
        PLAN,
        "if resumed_at is not None and st.last_warm_ok_at < resumed_at:",
        "if False:",
    ),
    Mutant(
        "one_strike_is_a_conflict",
        PLAN,
        "CONFLICT_STRIKES = 2",
        "CONFLICT_STRIKES = 1",
    ),
    Mutant(
        "strongest_held",
        PLAN,
        "weakest = kept[-1]",
        "weakest = kept[0]",
    ),
    Mutant(
        "room_on_equal_count",
        PLAN,
        "if not settled or count >= first.held_room",
        "if not settled or count > first.held_room",
    ),
    Mutant(
        "vram_fit_ignored",
        PLAN,
        "return others_vram <= max(st.vram_beside, st.held_vram - st.vram_bytes)",
        "return True",
    ),
    Mutant(
        "busy_room_ignored",
        PLAN,
        "if room.taken is None or not room_full(st, room):",
        "if True:",
    ),
    Mutant(
        "retry_never_held_again",
        PLAN,
        "if st.in_flight_since is not None or not room_full(st, room):",
        "if True:",
    ),
    Mutant(
        "holds_not_ranked_again",
        PLAN,
        "kept = rank_holds_again(old, new, states) or release_holds(states)",
        "kept = release_holds(states)",
    ),
    Mutant(
        "hold_never_unloads",
        PLAN,
        "    if is_held(st):\n        if release:",
        "    if is_held(st):\n        if False:",
    ),
    Mutant(
        "settle_ignores_cold_load",
        PLAN,
        "max(daemon.poll_interval_s, 1.5 * (st.cold_load_s or 0.0))",
        "daemon.poll_interval_s",
    ),
    Mutant(
        "unreachable_backs_off",
        PLAN,
        'if kind == "unreachable":',
        "if False:",
    ),
    Mutant(
        "load_timeout_not_learnt",
        PLAN,
        "limit = max(limit, 3 * st.cold_load_s)",
        "limit = limit",
    ),
    Mutant(
        "load_timeout_not_doubled",
        PLAN,
        "limit = max(limit, configured_s * 2 ** min(st.timeouts, MAX_EXPONENT))",
        "limit = limit",
    ),
    Mutant(
        "mismatch_reported_every_time",
        PLAN,
        "    if st.mismatch_reported:\n        return st, []",
        "    if False:\n        return st, []",
    ),
    Mutant(
        "expected_reload_counted",
        PLAN,
        "    if st.expect_reload:\n        return replace(new, reload_streak=0), events",
        "    if False:\n        return replace(new, reload_streak=0), events",
    ),
    Mutant(
        "foreign_runner_touched",
        PLAN,
        "    if st.foreign:\n        return verdict(Action.HOLD, mismatch_reason(st))",
        "    if False:\n        return verdict(Action.HOLD, mismatch_reason(st))",
    ),
    Mutant(
        "gpu_loss_unseen",
        PLAN,
        "if st.last_row and st.last_row.size_vram_bytes > 0 and row.size_vram_bytes == 0:",
        "if False:",
    ),
    Mutant(
        "pause_ignored",
        PLAN,
        "    if is_paused(st, now):\n        if st.unload_wanted",
        "    if False:\n        if st.unload_wanted",
    ),
    # -- fake/scheduler.py -----------------------------------------------------------------------
    Mutant(
        "victim_no_blob_tiebreak",
        SCHED,
        "key=lambda r: (r.keep_alive_ns, r.manifest.model.blob_path)",
        "key=lambda r: r.keep_alive_ns",
    ),
    Mutant(
        "victim_busy_first",
        SCHED,
        "return next((r for r in ordered if r.ref_count <= 0), ordered[0])",
        "return ordered[0]",
    ),
    Mutant(
        "timer_on_any_request_end",
        SCHED,
        "        if runner.ref_count > 0:\n            return\n        duration",
        "        duration",
    ),
    Mutant(
        "keep_alive_not_rewritten",
        SCHED,
        "        if keep_alive_ns is not None:\n            runner.keep_alive_ns = keep_alive_ns",
        "        if False:\n            runner.keep_alive_ns = keep_alive_ns",
    ),
    Mutant(
        "timer_not_stopped_by_use",
        SCHED,
        "        runner.ref_count += 1\n        if runner.timer is not None:",
        "        runner.ref_count += 1\n        if False:",
    ),
    Mutant(
        "max_loaded_off_by_one",
        SCHED,
        "elif len(self.loaded) >= self.max_loaded:",
        "elif len(self.loaded) > self.max_loaded:",
    ),
    Mutant(
        "preflight_without_headroom",
        SCHED,
        "return model.size <= 0.8 * self._free_vram()",
        "return model.size <= self._free_vram()",
    ),
    Mutant(
        "busy_expired_never_unloaded",
        SCHED,
        "loop.call_later(_UNLOAD_RETRY_S, self._requeue, runner)\n                continue",
        "continue",
    ),
    Mutant(
        "stop_keeps_expiry",
        SCHED,
        "runner.expires_at_ns = self.clock.wall_ns()\n"
        f"        self._mark_for_unload(runner, {STOP})",
        f"self._mark_for_unload(runner, {STOP})",
    ),
    Mutant(
        "unload_command_ignored",
        SCHED,
        f"self._mark_for_unload(runner, {STOP})\n        return True",
        "return True",
    ),
    Mutant(
        "crash_not_repaired",
        SCHED,
        "        if runner.crashed:\n",
        "        if False:\n",
    ),
    Mutant(
        "ps_sorted_ascending",
        SCHED,
        "rows.sort(key=lambda row: -(row[1] // NS_PER_SECOND))",
        "rows.sort(key=lambda row: row[1] // NS_PER_SECOND)",
    ),
    Mutant(
        "oom_load_not_retried",
        SCHED,
        "if failure.oom and self.behaviour.oom_load_evicts_all and not retried:",
        "if False:",
    ),
    Mutant(
        "gpu_loss_spares_new_loads",
        SCHED,
        "return self.memory_bytes <= 0 or self.gpu_lost or options.num_gpu == 0",
        "return self.memory_bytes <= 0 or options.num_gpu == 0",
    ),
    Mutant(
        "runtime_oom_on_every_version",
        SCHED,
        "        if not self.behaviour.runtime_oom_expires_all:\n            return 0\n",
        "",
    ),
)


def copy_tree(target: Path) -> None:
    """Copy the working tree (uncommitted tests included) without git, the venv or caches."""
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(*SKIPPED), dirs_exist_ok=True)


def sources(tree: Path, where: str) -> list[tuple[Path, str]]:
    """The files a mutant's ``path`` names (a file, or every module of a folder), with text."""
    root = tree / where
    paths = sorted(root.glob("*.py")) if where.endswith("/") else [root]
    return [(path, path.read_text()) for path in paths]


def apply(mutant: Mutant, tree: Path) -> None:
    """Replace the snippet in the copy; refuse a snippet that is missing or ambiguous."""
    holders = sources(tree, mutant.path)
    found = sum(text.count(mutant.original) for _path, text in holders)
    if found != 1:
        raise ValueError(f"{mutant.name}: snippet found {found} times in {mutant.path}")
    for path, text in holders:
        if mutant.original in text:
            path.write_text(text.replace(mutant.original, mutant.mutated))


def run_tests(tree: Path, tests: Sequence[str], timeout: float) -> tuple[str, float, str]:
    """Run pytest in ``tree`` on its own sources; return (outcome, seconds, last line)."""
    env = dict(os.environ)
    # The copy's src first: it shadows the editable install of the working tree.
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), env.get("PYTHONPATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The copy sits in a temporary folder: the tests find the captures beside this checkout.
    env.setdefault("OKW_SHARED", str(ROOT.parent / "shared"))
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "not system"]
    command += ["-p", "no:randomly", "-p", "no:cacheprovider", *tests]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started, f"no result within {timeout:g}s"
    seconds = time.monotonic() - started
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    last = lines[-1] if lines else done.stderr.strip()[-200:]
    if done.returncode == 0:
        return "survived", seconds, last
    if done.returncode == 1:
        return "killed", seconds, last
    return "error", seconds, last  # collection or usage error: the mutant broke an import


def check_copy_is_used(tree: Path) -> None:
    """Fail loudly if the copy's sources would not shadow the installed package."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    probe = "import ollama_keepwarm, sys; print(ollama_keepwarm.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"mutate: the copy is not imported (got {out}); is PYTHONPATH honoured?")


def run_one(mutant: Mutant | None, tests: Sequence[str], timeout: float) -> tuple[str, float, str]:
    """Run the tests against a fresh copy with ``mutant`` applied (``None``: the baseline)."""
    with tempfile.TemporaryDirectory(prefix="okw-mutant-") as scratch:
        tree = Path(scratch)
        copy_tree(tree)
        check_copy_is_used(tree)
        if mutant is not None:
            apply(mutant, tree)
        return run_tests(tree, tests, timeout)


def order_for(mutant: Mutant) -> list[str]:
    """The default folders, the mutated file's own tests first."""
    first = FIRST.get(mutant.path)
    return [first, *(f for f in DEFAULT_TESTS if f != first)] if first else list(DEFAULT_TESTS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen mutants, print one line each, then the score."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--list", action="store_true", help="print the mutants' names and exit")
    parser.add_argument(
        "--tests", nargs="+", metavar="PATH", help=f"default: {' '.join(DEFAULT_TESTS)}"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the run of the unmutated copy"
    )
    args = parser.parse_args(argv)
    if args.list:
        stale = 0
        for mutant in MUTANTS:
            found = sum(x.count(mutant.original) for _p, x in sources(ROOT, mutant.path))
            stale += found != 1
            note = "" if found == 1 else f"  STALE: snippet found {found} times"
            print(f"{mutant.name:32} {mutant.path}{note}")
        return 2 if stale else 0
    by_name = {m.name: m for m in MUTANTS}
    unknown = [name for name in args.only if name not in by_name]
    if unknown:
        parser.error(f"unknown mutant {', '.join(unknown)} (see --list)")
    chosen = [by_name[name] for name in args.only] or list(MUTANTS)
    for mutant in chosen:  # every snippet must still match before minutes are spent
        text = "\n".join(x for _p, x in sources(ROOT, mutant.path))
        if text.count(mutant.original) != 1:
            print(f"mutate: {mutant.name}: its snippet no longer occurs once in {mutant.path}")
            return 2
    if not args.only and not args.no_baseline:
        outcome, seconds, last = run_one(None, args.tests or DEFAULT_TESTS, args.timeout)
        print(f"{'(baseline)':32} {outcome:9} {seconds:6.1f}s  {last}", flush=True)
        if outcome != "survived":
            print("mutate: the unmutated suite does not pass; fix that first")
            return 2
    results: dict[str, list[str]] = {}
    for mutant in chosen:
        outcome, seconds, last = run_one(mutant, args.tests or order_for(mutant), args.timeout)
        results.setdefault(outcome, []).append(mutant.name)
        print(f"{mutant.name:32} {outcome:9} {seconds:6.1f}s  {last}", flush=True)
    dead = len(results.get("killed", [])) + len(results.get("timeout", []))
    dead += len(results.get("error", []))
    print(f"score: {dead}/{len(chosen)} killed", end="")
    for kind in ("timeout", "error", "survived"):
        if results.get(kind):
            print(f"; {kind}: {', '.join(results[kind])}", end="")
    print()
    return 1 if results.get("survived") else 0


if __name__ == "__main__":
    sys.exit(main())
