"""Concurrent writers during opt1 and opt2, up and down: every committed write survives,
nothing else changes. The harness is the benchmarks' (benchmarks/live_app.py), at ~5k rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import psycopg
import pytest

from stage4.config import settings
from stage4.plumbing import migrations, seed

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "live_app.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("live_app", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def five_k_url(seeded_url: str) -> str:
    with psycopg.connect(seeded_url) as conn:
        seed.seed(conn, settings(), features=3000, append=True)
    return seeded_url


@pytest.mark.slow
def test_committed_writes_survive_opt1_round_trip(harness, five_k_url: str) -> None:
    for verb, target in [("upgrade", "opt1"), ("downgrade", "schema")]:
        r = harness.step(five_k_url, verb, target, batch_rows=500, max_ops=3000)
        assert r["problems"] == [], r
        assert r["writer_errors"] == [] and r["reader_errors"] == [], r
        assert r["writes_during_migration"] > 0, r
        assert r["reads_during_migration"] > 0, r
        assert r["exact"]
        assert migrations.current(five_k_url) == target


@pytest.mark.slow
def test_committed_writes_survive_opt2_round_trip(harness, five_k_url: str) -> None:
    """opt2's backfill, then its downgrade, under an unpaced writer (inserts, updates that
    move rows between partitions, deletes) and a reader: no deadlock, every committed write
    present, and after the upgrade every row's derived columns equal their expressions,
    the rows the writer wrote included."""
    migrations.upgrade(five_k_url, "opt1")
    for verb, target in [("upgrade", "opt2"), ("downgrade", "opt1")]:
        r = harness.step(five_k_url, verb, target, max_ops=3000)
        assert r["problems"] == [], r
        assert r["writer_errors"] == [] and r["reader_errors"] == [], r
        assert r["writes_during_migration"] > 0, r
        assert r["exact"]
        assert migrations.current(five_k_url) == target
        if target == "opt2":
            assert r["migration_metrics"]["backfill_rows"] > 0, r
            with psycopg.connect(five_k_url) as conn:
                wrong = conn.execute(
                    "SELECT count(*) FROM geometrias WHERE area_m2 IS DISTINCT FROM "
                    "ST_Area(geom::geography) OR bbox_xmin IS DISTINCT FROM ST_XMin(geom::box3d)"
                ).fetchone()[0]
            assert wrong == 0


def test_the_check_catches_a_lost_and_a_stray_write(harness) -> None:
    """The comparison itself: a missing committed row, an unlogged row, a stale row."""
    op = harness.Op
    before = {1: "a", 2: "b", 3: "c"}
    ops = [op("insert", 4, {}, "d", 0, 0), op("update", 2, {}, "b2", 0, 0),
           op("delete", 3, {}, None, 0, 0)]  # fmt: skip
    assert harness.problems(before, ops, {1: "a", 2: "b2", 4: "d"}) == []
    assert harness.problems(before, ops, {1: "a", 2: "b", 5: "e"}) == [
        "id 4: committed but missing",
        "id 5: present but never written",
        "id 2: row differs from the last committed write",
    ]


@pytest.mark.slow
def test_gated_rollout_and_rollback_under_an_app_writer(harness, five_k_url: str, tmp_path):
    """A writer committing ~30 writes/s through a gated `upgrade --to opt1` and `downgrade
    --to schema`: both exit 0, no promise "broken" by the app's own writes, no advice to
    restore a backup, every acknowledged write present."""
    import subprocess
    import time

    class Paced(harness.Writer):
        def _one(self, conn, n):
            time.sleep(0.03)
            return super()._one(conn, n)

    stage4 = str(Path(sys.executable).parent / "stage4")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([stage4, "--database-url", five_k_url, *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900, check=False)  # fmt: skip

    with psycopg.connect(five_k_url) as conn:
        before = harness.table_state(conn)
    writer = Paced(five_k_url, list(before))
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while len(writer.ops) < 10:
            assert time.monotonic() < deadline and writer.is_alive(), writer.errors
            time.sleep(0.05)
        n0 = len(writer.ops)
        # speed is not what this test is about: a margin no step can miss
        up = cli("upgrade", "--to", "opt1", "--no-backup", "--reports-dir", str(tmp_path),
                 "--iterations", "3", "--concurrency", "1", "--duration", "2",
                 "--threshold", "100", "--min-delta-ms", "100000")  # fmt: skip
        n1 = len(writer.ops)
        down = cli("downgrade", "--to", "schema")
        n2 = len(writer.ops)
    finally:
        writer.stop.set()
        writer.join(30)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "GO: at opt1" in up.stdout and "promise broken" not in up.stdout + up.stderr
    report = next(tmp_path.glob("*/rollout.json")).read_text()
    assert "rows checked source vs copy" in report, report
    # results moved by the app's writes are compared in one snapshot, not skipped
    assert "result changed" not in report and "not compared" not in report, report
    assert down.returncode == 0, down.stdout + down.stderr
    assert "restore from the backup" not in down.stdout + down.stderr
    assert "opt1: rolled back in " in down.stdout and "every row kept" in down.stdout
    assert n1 - n0 > 10 and n2 - n1 > 0, (n0, n1, n2)  # the app wrote through both
    assert writer.errors == []
    with psycopg.connect(five_k_url) as conn:
        after = harness.table_state(conn)
    assert harness.problems(before, writer.ops, after) == []
    assert migrations.current(five_k_url) == "schema"
