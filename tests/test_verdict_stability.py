"""The gate's verdict on a real database: same-window reference, margins shown, a real 2x
slowdown flagged and a no-op not.

Test-only revisions in a copy of the script folder (the real chain stays untouched):
``noop`` changes nothing; ``twice`` makes the search RPC (Q4) run its own query once more
per call, a 2x slowdown that scales with the machine as the query does (a fixed sleep
does not: on a busy machine it is less than 2x). ``benchmarks/verdict_agreement.py``
repeats the same rollout, with and without a CPU hog, and counts the agreement.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from conftest import revision
from stage4.measure import bench, stats, store
from stage4.plumbing import migrations
from stage4.rollout import gate

# The search RPC computes a sum of N integers once per call (an InitPlan) before its
# query: CPU work that slows with the machine as the query does (a fixed sleep would be
# less than 2x on a busy machine).
TWICE = ("s = settings(); op.execute(functions.search(s, source=functions.search(s).body.replace("
         "'WHERE ', 'WHERE (SELECT sum(i) FROM generate_series(1, {n}) AS i) > 0 AND ', 1))"
         ".create_sql())")  # fmt: skip
AS_IS = "op.execute(functions.search(settings()).create_sql())"
REVISIONS = {
    "noop": ('op.execute("SELECT 1")', 'op.execute("SELECT 1")'),
    "twice": (TWICE, AS_IS),
}


def _ms_per_integer(url: str) -> float:
    """What summing one integer costs now, timed as the bench times a query (client side,
    median of five: the same machine load as the latencies it is set against)."""
    n, times = 300_000, []
    with psycopg.connect(url) as conn:
        for _ in range(5):
            start = time.perf_counter()
            conn.execute(f"SELECT sum(i) FROM generate_series(1, {n}) AS i").fetchall()
            times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times)) / n


OPTS = {"iterations": 6, "concurrency": 2, "duration": 1.0}
# Twice the bench's 20 rounds: the interval of a 2x change then clears the margin on a
# busy machine (with 12 or 20 it did not, now and then).
ROUNDS = {**OPTS, "iterations": 40}


def _revisions(*names: str, n: int = 0) -> dict[str, str]:
    """`schema`, then the named test-only revisions in that order (``n``: twice's sum)."""
    files = {}
    for before, name in zip(("schema", *names), names, strict=False):
        up, down = (r.replace("{n}", str(n)) for r in REVISIONS[name])
        files[name] = revision(name, before, up, down)
    return files


def _opts(tmp_path: Path, **kw) -> gate.GateOptions:
    return gate.GateOptions(backup_dir=tmp_path / "backups", reports_dir=tmp_path / "reports",
                            **{**OPTS, **kw})  # fmt: skip


class TestInjectedSlowdown:
    @pytest.mark.slow
    def test_a_real_2x_slowdown_is_slower_and_a_noop_is_not(
        self, seeded_url, chain, tmp_path
    ) -> None:
        # The rule on real measurements of the step pair, as the gate takes them: the
        # state before, then after each step. Only the search RPC is the subject: on a
        # shared machine a sub-millisecond query may move by more than the 2 ms floor now
        # and then (the agreement script counts how often a whole step stays quiet).
        before = bench.run(seeded_url, label="BEFORE", save=False, **ROUNDS)
        # CPU work that costs what a whole call costs: the call about twice as slow
        n = int(np.median(before.samples["Q4"]) / _ms_per_integer(seeded_url))
        chain(**_revisions("noop", "twice", n=n))
        migrations.upgrade(seeded_url, "noop")
        noop = bench.run(seeded_url, label="NOOP", save=False, **ROUNDS)
        migrations.upgrade(seeded_url, "twice")
        twice = bench.run(seeded_url, label="TWICE", save=False, **ROUNDS)
        # min_delta_ms=0: at 2,000 rows the search takes a few milliseconds, about the
        # gate's practical floor; the statistical rule itself is under test here.
        quiet = stats.compare_bench(before, noop)["Q4"]
        assert quiet.verdict == stats.NO_CHANGE, quiet
        slow = stats.compare_bench(noop, twice)["Q4"]
        assert slow.verdict == stats.SLOWER, slow
        assert slow.ci_low > slow.margin and slow.judged_ratio > 1.5
        assert slow.ratio == slow.candidate_median / slow.baseline_median  # the measured one
        reason = stats.gate_verdict({"Q4": slow}).reasons[0]
        assert reason.startswith(f"Q4 slower: median {slow.candidate_median:.2f} ms vs baseline")
        assert reason.endswith(f", margin x{slow.margin:.2f})")


class TestSameWindow:
    @pytest.mark.slow
    def test_a_stored_baseline_is_measured_again_before_the_first_step(
        self, seeded_url, chain, tmp_path
    ) -> None:
        chain(**_revisions("noop"))
        stored = bench.run(seeded_url, label="BASELINE", **OPTS)
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            store.set_baseline(conn, stored.run_id)
            saved_at = store.load_baseline(conn).started_at  # when the store received it
        said = []
        rollout = gate.upgrade(seeded_url, "noop", _opts(tmp_path, threshold=1.0),
                               phase=lambda step, text: said.append((step, text)))  # fmt: skip
        assert rollout.stored_baseline_run_id == stored.run_id
        assert rollout.baseline_run_id not in (None, stored.run_id)
        taken = saved_at[:19].replace("T", " ")
        assert ("baseline", f"measuring schema now (the stored baseline, run {stored.run_id}, "
                f"is from {taken})") in said  # fmt: skip
        (step,) = rollout.steps
        assert step.verdict == "GO", step.reasons
        # the margin is printed with a GO too: in the report and on the command line
        from stage4.measure import report

        line = report.margins(step)
        # the margin and the ratio judged, then any query that moved (each after a "; ")
        assert line.startswith("margin x") and line.split("; ")[0].endswith(
            " vs baseline, judged on the ratios with the machine's speed taken out"
        )
        text = (Path(rollout.folder) / "REPORT.md").read_text()
        assert f"### noop: GO\n- {line}\n" in text
        saved_step = json.loads((Path(rollout.folder) / "rollout.json").read_text())["steps"][0]
        assert saved_step["margin"] == line  # rollout.json says what was printed
        assert f"re-measured at the start of this rollout as run {rollout.baseline_run_id}" in text
        # the run judged against is the one re-measured now, and its file is the baseline's
        saved = json.loads((Path(rollout.folder) / "METRICS_BASELINE.json").read_text())
        assert saved["run_id"] == rollout.baseline_run_id
