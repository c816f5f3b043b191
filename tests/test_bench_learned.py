"""bench.learned runs, keeps its invariants, and rewrites only its own section of the report."""

from __future__ import annotations

from pathlib import Path

from bench import learned as bench


def test_two_weeks_of_every_trace() -> None:
    traces, results = bench.run(seed=3, weeks=2)
    assert [t.name for t in traces] == ["workday", "hobbyist", "batch"]
    for trace in traces:
        rows = {r.policy: r for r in results[trace.name]}
        assert rows["always"].cold == 0  # the floor: nothing arrives before the first load
        assert all(r.requests == len(trace.requests) for r in rows.values())
        # No policy holds more than always-on, nor is colder than no keeper at all.
        assert all(r.gb_hours <= rows["always"].gb_hours + 1e-6 for r in rows.values())
        assert all(r.cold <= rows["none"].cold for r in rows.values())
        # The first week is learning: kept always, so never cold there.
        assert rows["learned-balanced"].late[1] == rows["learned-balanced"].cold


def test_the_section_replaces_its_last_run(tmp_path: Path) -> None:
    target = tmp_path / "benchmarks.md"
    target.write_text("# Benchmarks\n\n<!-- bench.crash -->\n\ncrash\n")
    bench.write_section(target, f"{bench.SECTION}\n\nfirst\n")
    bench.write_section(target, f"{bench.SECTION}\n\nsecond\n")
    text = target.read_text()
    assert text.count(bench.SECTION) == 1
    assert "second" in text
    assert "first" not in text
    assert text.startswith("# Benchmarks\n\n<!-- bench.crash -->\n\ncrash\n")
