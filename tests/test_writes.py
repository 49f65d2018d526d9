"""The app's writes W1–W3: measured beside the reads in transactions rolled back, judged by
their own margin (x1.5) and floor (1 ms).

- A bench stores W1–W3 as queries, marked as writes, and leaves the table exactly as it
  was: rows, their content, the identity's sequence, and PostgreSQL's count of the app's
  writes during the run (the rolled-back rows are the bench's own).
- A step whose trigger makes inserts and updates cost 10 ms more is a NO-GO naming them,
  rolled back exactly.
- The rule, on constructed samples with the gate's default options: x1.4, or +0.5 ms, is
  no NO-GO for a write; x1.65 by 1.3 ms is, named like a read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from stage4.catalog import snapshot
from stage4.config import settings
from stage4.errors import ConfigError, GateError
from stage4.measure import bench, stats, store, workload, writes
from stage4.measure.metrics import export
from stage4.plumbing import migrations
from stage4.plumbing.seed import content_hash
from stage4.rollout import gate

S = settings()
WRITES = ["W1", "W2", "W3"]
FAST = {"iterations": 2, "concurrency": 1, "duration": 1}


def _state(url: str) -> tuple:
    """Row count, max(id), content hash and the identity sequence's last value."""
    with psycopg.connect(url) as conn:
        count, top = conn.execute(f"SELECT count(*), max(id) FROM {S.qualified_table}").fetchone()
        seq = conn.execute(
            "SELECT last_value, is_called FROM "
            f"{conn.execute('SELECT pg_get_serial_sequence(%s, %s)', (S.qualified_table, 'id')).fetchone()[0]}"
        ).fetchone()
        return count, top, content_hash(conn, S), seq


@pytest.mark.slow
def test_a_bench_times_the_writes_and_leaves_the_table_as_it_was(
    seeded_url: str, tmp_path: Path
) -> None:
    before = _state(seeded_url)
    run = bench.run(seeded_url, label="w", **FAST)
    assert _state(seeded_url) == before
    assert list(run.samples)[-3:] == WRITES, run.environment["errors"]
    for q in WRITES:
        assert len(run.executions[q]) == FAST["iterations"] * bench.SETS
        assert len(run.samples[q]) == FAST["iterations"]
    # each write wrote one row per execution (fingerprint sets + rounds), all rolled back;
    # none of them is counted as the app's
    per_write = workload.FINGERPRINT_SETS + FAST["iterations"] * bench.SETS
    assert run.environment["writes_rolled_back"] == 3 * per_write
    assert run.environment["load"]["app_writes"] == 0
    assert run.environment["contract"]["W2"] == "write, rolled back"
    # a control before every query of every round, writes included: the rounds line up
    assert len(run.control) == FAST["iterations"] * (10 + 3 + 3)  # Q1–Q10, R1–R3, W1–W3
    assert stats.round_controls(run) is not None
    with psycopg.connect(seeded_url) as conn:
        back = store.load_run(conn, run.run_id)
        summary = store.latest_runs(conn, 1)[0]
    assert {q: back.samples[q] for q in WRITES} == {q: run.samples[q] for q in WRITES}
    assert summary["samples"] == FAST["iterations"] * bench.SETS * 13  # the reads only (Q, R)
    doc = json.loads(export(run, tmp_path).read_text())
    assert {q: doc["queries"][q]["kind"] for q in ("Q1", *WRITES)} == {
        "Q1": "read", "W1": "write", "W2": "write", "W3": "write"
    }  # fmt: skip
    assert doc["queries"]["W1"]["title"] == "insert"
    assert doc["overall"]["n"] == FAST["iterations"] * bench.SETS * 13
    # what each write did, read back before its rollback, is the same at every run
    again = bench.run(seeded_url, label="w2", iterations=1, concurrency=1, duration=1)
    assert {q: again.fingerprints[q] for q in WRITES} == {q: run.fingerprints[q] for q in WRITES}
    assert len({run.fingerprints[q] for q in WRITES}) == 3
    assert _state(seeded_url) == before


@pytest.mark.slow
def test_a_write_that_fails_is_named_not_timed(seeded_url: str) -> None:
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(
            f"ALTER TABLE {S.qualified_table} ADD CONSTRAINT no_new CHECK (id > 0) NOT VALID"
        )
    run = bench.run(seeded_url, label="w", **FAST)
    assert "W1" not in run.samples and {"W2", "W3"} <= set(run.samples)
    error = run.environment["errors"]["W1"]
    assert error["file"] == "the app's insert, rolled back"
    assert "no_new" in error["error"]
    assert "W1" not in run.environment["workload_files"]


def test_a_workload_file_cannot_take_a_write_s_name(tmp_path: Path) -> None:
    (tmp_path / "W2.sql").write_text("SELECT 1")
    with pytest.raises(ConfigError, match="W2 is a name of the built-in workload"):
        workload.load_dir(tmp_path)


# ------------------------------------------------------------------ the rule


GATE = {"threshold": 0.10, "min_delta_ms": 2.0}  # the gate's defaults


def _comparisons(base_ms: float, cand_ms: float, qid: str = "W1", **kw):
    base = {qid: [base_ms] * 20}
    return stats.compare_runs(base, {qid: [cand_ms] * 20}, **{**GATE, **kw})


@pytest.mark.parametrize(
    ("base_ms", "cand_ms"),
    [(2.0, 2.8), (0.2, 0.7), (0.5, 1.45), (10.0, 14.0)],
    ids=["x1.4 (+0.8 ms)", "x3.5 (+0.5 ms)", "x2.9 (+0.95 ms)", "x1.4 (+4 ms)"],
)
def test_a_write_x1_4_or_under_a_millisecond_is_no_no_go(base_ms: float, cand_ms: float) -> None:
    comps = _comparisons(base_ms, cand_ms)
    assert comps["W1"].verdict == stats.NO_CHANGE
    assert (comps["W1"].threshold, comps["W1"].min_delta_ms) == (0.5, 1.0)
    assert stats.gate_verdict(comps).go


def test_a_write_x1_6_by_more_than_a_millisecond_is_a_no_go_named_like_a_read() -> None:
    comps = _comparisons(2.0, 3.3)
    decision = stats.gate_verdict(comps)
    assert not decision.go
    assert decision.reasons[0].startswith("W1 insert slower: median 3.30 ms vs baseline 2.00 ms")
    assert "margin x1.50" in decision.reasons[0]
    assert stats.moved(comps) == ["W1 insert slower x1.65 (+1.30 ms)"]
    # a read is judged by its own margin and floor: x1.65 by 3.25 ms is slower
    read = _comparisons(5.0, 8.25, "Q1")
    assert read["Q1"].verdict == stats.SLOWER and read["Q1"].threshold == 0.10


def test_the_write_rule_moves_with_the_options() -> None:
    assert stats.rule("W2", 0.10, 2.0) == (0.5, 1.0)
    assert stats.rule("W2", 0.20, 4.0) == (1.0, 2.0)
    assert stats.rule("W2", 0.10, 0.0) == (0.5, 0.0)  # the pure statistical rule
    assert stats.rule("Q2", 0.10, 2.0) == (0.10, 2.0)
    assert _comparisons(2.0, 3.3, threshold=0.2)["W1"].verdict == stats.NO_CHANGE
    assert _comparisons(2.0, 3.3, min_delta_ms=4.0)["W1"].verdict == stats.NO_CHANGE


def test_the_verdict_line_names_the_write_margin_and_a_write_that_moved() -> None:
    comps = {**_comparisons(5.0, 5.1, "Q1"), **_comparisons(2.0, 4.0, "W2")}
    line = stats.margin_line(comps, "baseline")
    assert line.startswith("margin x1.10 (10% threshold, no machine drift) vs baseline")
    assert "writes: margin x1.50, floor 1 ms" in line
    assert line.endswith("W2 geometry update slower x2.00 (+2.00 ms)")


# ------------------------------------------------------------------ a step that makes writes costlier

COSTLY = '''"""Test-only: a BEFORE INSERT OR UPDATE trigger that sleeps 10 ms per row."""
from alembic import op

revision = "costly"
down_revision = "schema"


def upgrade() -> None:
    op.execute("CREATE FUNCTION public.costly_write() RETURNS trigger LANGUAGE plpgsql AS "
               "$$BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END$$")
    op.execute("CREATE TRIGGER costly BEFORE INSERT OR UPDATE ON public.geometrias "
               "FOR EACH ROW EXECUTE FUNCTION public.costly_write()")


def downgrade() -> None:
    op.execute("DROP TRIGGER costly ON public.geometrias")
    op.execute("DROP FUNCTION public.costly_write()")
'''


@pytest.fixture
def costly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dst = tmp_path / "alembic-costly"
    shutil.copytree(migrations._script_location(), dst,
                    ignore=shutil.ignore_patterns("__pycache__", "opt*"))  # fmt: skip
    (dst / "versions" / "costly.py").write_text(COSTLY)
    monkeypatch.setattr(migrations, "_script_location", lambda: dst)
    migrations.chain.cache_clear()
    yield
    migrations.chain.cache_clear()


@pytest.mark.slow
def test_a_step_that_makes_writes_costlier_is_no_go_naming_them(
    seeded_url: str, costly, tmp_path: Path
) -> None:
    with psycopg.connect(seeded_url) as conn:
        before = snapshot.take(conn)
    rows = _state(seeded_url)
    # 10 ms against a fraction of one: clear of the widest margin (x2.25) on a busy machine
    opts = gate.GateOptions(backup=False, reports_dir=tmp_path / "reports", iterations=6,
                            concurrency=1, duration=1.0)  # fmt: skip
    with pytest.raises(GateError) as e:
        gate.upgrade(seeded_url, "costly", opts)
    message = str(e.value)
    assert message.startswith("NO-GO at costly: ")
    assert "W1 insert slower: median" in message and "W2 geometry update slower" in message
    assert "W3 delete slower" not in message  # a delete fires no INSERT/UPDATE trigger
    assert migrations.current(seeded_url) == "schema"
    with psycopg.connect(seeded_url) as conn:
        assert snapshot.diff(before, snapshot.take(conn)) == []
    assert _state(seeded_url) == rows
    # the bench's and the canary check's rolled-back rows are stage4's own, not the app's
    saved = json.loads(next((tmp_path / "reports").glob("*/rollout.json")).read_text())
    [step] = saved["steps"]
    assert not [n for n in step["notes"] if "the app wrote" in n], step["notes"]
    assert step["restored_exactly"] is True
    report = next((tmp_path / "reports").glob("*/REPORT.md")).read_text()
    assert "| W1 insert *write* |" in report
    assert "W1 insert slower x" in report  # the verdict line names it


def test_the_writes_connection_prepares_its_statements(seeded_url: str) -> None:
    with psycopg.connect(seeded_url) as conn:
        anchors = workload.sample_anchors(conn, S)
    w = writes.draw(S, anchors, 2, 42)
    conn = writes.connect(seeded_url)
    try:
        writes.prepare(conn, w, "W2")
        writes.timed(conn, w, "W2")
        writes.timed(conn, w, "W2")  # still prepared after two rollbacks
        prepared = conn.execute("SELECT name, statement FROM pg_prepared_statements").fetchall()
    finally:
        writes.close(conn)
    assert [(n, s.split()[3]) for n, s in prepared] == [("stage4_w2", "UPDATE")], prepared
    assert w.written == 4
