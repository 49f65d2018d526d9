"""The arithmetic of benchmarks/live_waits.py: which steps, what counts as a wait, the
targets' verdict, the section it writes. No database: the benchmark itself is the run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lw():
    sys.path.insert(0, str(ROOT))
    try:
        import benchmarks.live_waits as module

        yield module
    finally:
        sys.path.remove(str(ROOT))


def test_the_walk_goes_up_one_revision_at_a_time_then_down_to_schema(lw) -> None:
    assert lw.chain_steps(["schema", "opt1", "opt2", "opt3"]) == [
        ("up", "opt1", "opt1"),
        ("up", "opt2", "opt2"),
        ("up", "opt3", "opt3"),
        ("down", "opt3", "opt2"),
        ("down", "opt2", "opt1"),
        ("down", "opt1", "schema"),
    ]


def test_a_wait_is_the_longest_statement_minus_the_typical_of_its_kind(lw) -> None:
    timings = [
        (0.0, 0.01, "by id"),  # calm window [0, 1]
        (0.5, 0.01, "by id"),
        (0.2, 0.10, "viewport"),
        (0.6, 0.12, "viewport"),
        (0.9, 0.20, "viewport"),  # ends after the calm window: not typical
        (2.0, 0.90, "viewport"),  # the step is [2.5, 3.0]: overlaps it
        (2.6, 0.50, "by id"),
        (3.5, 5.00, "by id"),  # after the step
    ]
    usual = lw.typical(timings, 0.0, 1.0)
    assert usual == pytest.approx({"by id": 0.01, "viewport": 0.11})
    during = lw.overlapping(timings, 2.5, 3.0)
    assert [t[0] for t in during] == [2.0, 2.6]
    w = lw.longest_wait(during, usual)
    # the by-id lookup waited 0.49 s, the viewport 0.79 s: the viewport is the longest wait
    assert (w["kind"], w["longest_s"], w["wait_s"], w["statements"]) == ("viewport", 0.9, 0.79, 2)
    assert lw.longest_wait([], usual)["wait_s"] is None


def test_a_kind_without_a_calm_sample_is_compared_with_the_median_of_the_others(lw) -> None:
    w = lw.longest_wait([(0.0, 1.0, "delete")], {"insert": 0.002, "update": 0.004})
    assert w["typical_s"] == pytest.approx(0.003) and w["wait_s"] == pytest.approx(0.997)


def test_lock_waits_keep_the_longest_of_each_blocker_inside_the_step(lw) -> None:
    def row(at: float, waited: float) -> tuple:
        return (at, "bench-writer", waited, 41, "stage4-alembic", "ALTER TABLE x", "Lock", "L")

    seen = [row(1.0, 0.3), row(1.1, 0.4), row(9.0, 7.0)]  # the last one after the step
    [w] = lw.lock_waits(seen, 0.5, 2.0)
    assert (w["who"], w["waited_s"], w["blocker"], w["statement"]) == (
        "writer",
        0.4,
        "stage4-alembic",
        "ALTER TABLE x",
    )


def step(rev: str, reader: float, writer: float, lost: bool = False) -> dict:
    def side(wait: float) -> dict:
        return {"wait_s": wait, "longest_s": wait + 0.01, "typical_s": 0.01, "kind": "x"}

    return {
        "revision": rev,
        "direction": "up",
        "step_s": 1.0,
        "total_s": 1.5,
        "reader": side(reader),
        "writer": side(writer),
        "writes_committed": 7,
        "nothing_lost": not lost,
        "lock_waits": [],
        "load_average": [1.0, 2.0],
    }


def test_the_targets_fail_at_one_second_for_readers_and_five_for_writers(lw) -> None:
    ok = lw.verdict([step("opt1", 0.99, 4.99), step("opt2", 0.2, 0.3)])
    assert ok["reader"]["pass"] and ok["writer"]["pass"] and ok["nothing_lost"]
    bad = lw.verdict([step("opt1", 0.1, 0.1), step("opt2", 1.0, 5.0, lost=True)])
    assert bad["reader"] == {"wait_s": 1.0, "step": "opt2 up", "limit_s": 1.0, "pass": False}
    assert not bad["writer"]["pass"] and not bad["nothing_lost"]


def test_the_section_names_its_command_and_each_verdict(lw) -> None:
    steps = [step("opt1", 0.1, 0.2), step("opt2", 1.5, 0.2)]
    seen = [
        (at, "bench-reader", waited, 41, "stage4-alembic", sql, None, "AccessExclusiveLock on t")
        for at, waited, sql in (
            (1.0, 0.4, "ALTER TABLE t"),
            (1.2, 0.6, "ALTER TABLE t"),
            (1.9, 1.3, "ANALYZE t"),
        )
    ]
    steps[1]["lock_waits"] = lw.lock_waits(seen, 0.0, 2.0)
    steps[1]["app_errors"] = ["writer: deadlock detected"]
    run = {
        "features": 300000,
        "when": "2026-12-01 09:00 UTC",
        "writes_per_s": 50.0,
        "read_every_s": 0.05,
        "steps": steps,
        "verdict": lw.verdict(steps),
    }
    text = lw.markdown({"runs": {"300000": run}})
    assert text.startswith(lw.SECTION + "\n")
    assert ".venv/bin/python -m benchmarks.live_waits --features 300000" in text
    assert (
        "| opt2 | up | 1.00 | 1.50 | 1.51 (0.010) | 1.50 | 0.210 (0.010) | 0.200 | 7 | 1 | yes |"
        in text
    )
    assert "every reader wait < 1 s: **FAIL** (longest 1.50 s, opt2 up)" in text
    assert "every writer wait < 5 s: **PASS**" in text
    assert "- opt2 up: the reader waited 1.3 s for stage4-alembic running `ANALYZE t`" in text
    assert "- opt2 up: the app got 1 error(s): writer: deadlock detected" in text
    assert "- opt2 up, reader (1.50 s): `ALTER TABLE t` (0.6 s), `ANALYZE t` (1.3 s)" in text


def test_runs_of_one_scale_share_its_heading_largest_scale_first(lw) -> None:
    steps = [step("opt1", 0.1, 0.2)]
    run = {
        "features": 1000,
        "when": "W",
        "writes_per_s": 50.0,
        "read_every_s": 0.05,
        "steps": steps,
        "verdict": lw.verdict(steps),
    }
    doc = {"runs": {"1000": [run, run], "5000": {**run, "features": 5000}}}
    assert list(lw.runs_of(doc)) == [5000, 1000]
    text = lw.markdown(doc)
    assert text.count("### 1,000 features") == 1 and text.count("Measured W") == 3
    assert text.index("### 5,000 features") < text.index("### 1,000 features")
