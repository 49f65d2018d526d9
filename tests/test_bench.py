"""bench.run on the seeded 2000-feature database: samples, fingerprints, variants, export.

Timings at this scale say nothing (the GiST-drop slowdown is shown at 100k features
in benchmarks/bench_engine.py); these tests check the mechanics.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from stage4.config import settings
from stage4.measure import bench, stats, store, throughput, workload
from stage4.measure.metrics import export
from stage4.measure.workload import Rewrite
from stage4.queries import write_sql

QIDS = [f"Q{i}" for i in range(1, 11)]
REST = ["R1", "R2", "R3"]  # PostgREST's table reads, prepared
WRITES = ["W1", "W2", "W3"]  # the app's writes, rolled back (test_writes.py)
FAST = {"iterations": 2, "concurrency": 2, "duration": 1}


@pytest.mark.slow
def test_run_measures_every_query_and_is_stored(seeded_url: str) -> None:
    ticks: list[tuple[str, int, int]] = []
    run = bench.run(seeded_url, label="t1", progress=lambda *a: ticks.append(a), **FAST)
    assert run.label == "T1" and run.revision == "schema"
    assert list(run.samples) == [*QIDS, *REST, *WRITES]
    assert all(len(v) == 2 for v in run.samples.values())
    assert all(len(v) == 2 * bench.SETS for v in run.executions.values())
    assert set(run.variants.values()) == {"base"}
    assert run.qps > 0 and 0 < run.cache_hit <= 1
    env = run.environment
    assert env["row_count"] == 2000 and env["revision"] == "schema"
    assert env["postgresql"].startswith("PostgreSQL") and env["postgis"]
    assert {"shared_buffers", "work_mem"} <= set(env["settings"])
    assert "git_sha" in env and env["throughput_tool"].startswith("pgbench")
    assert {t[0] for t in ticks} == {"fingerprints", "latency", "throughput"}
    with psycopg.connect(seeded_url) as conn:
        back = store.load_run(conn, run.run_id)
    assert back.samples == run.samples and back.fingerprints == run.fingerprints
    assert run.overall["p50"] <= run.overall["p95"] <= run.overall["p99"]


@pytest.mark.slow
def test_fingerprints_are_stable_across_runs(seeded_url: str) -> None:
    a = bench.run(seeded_url, label="a", **FAST)
    b = bench.run(seeded_url, label="b", iterations=3, concurrency=1, duration=1)
    assert a.fingerprints == b.fingerprints
    assert len(set(a.fingerprints.values())) == 16  # Q1–Q10, R1–R3, W1–W3: all distinct


@pytest.mark.slow
def test_the_app_sql_is_measured_and_rewrites_are_only_recorded(seeded_url: str) -> None:
    s = settings()
    base = bench.run(seeded_url, label="base", **FAST)
    wrong = Rewrite(
        requires="true", sql=workload.base_sql(s)["Q2"].replace("ORDER BY id", "ORDER BY id DESC")
    )
    # same rows in another order where the app does not care (GROUP BY): not a difference
    same = Rewrite(
        requires="true", sql=workload.base_sql(s)["Q3"].replace(" ORDER BY categoria", "")
    )
    run = bench.run(
        seeded_url,
        label="cand",
        extra_rewrites={"Q2": {"wrong": wrong}, "Q3": {"same": same}},
        **FAST,
    )
    # the app's own text ran, not the rewrites: the fingerprints are the baseline's
    assert run.environment["workload_sql"] == {
        **{q.qid: q.sql for q in workload.queries(s).values()},
        **write_sql(s),
    }
    assert set(run.variants.values()) == {"base"}
    assert run.fingerprints == base.fingerprints
    offered = run.environment["available_rewrites"]
    assert offered["Q2"]["wrong"]["same_results"] is False
    assert "speedup" not in offered["Q2"]["wrong"]  # a rewrite with other results is not timed
    q3 = offered["Q3"]["same"]
    assert q3["same_results"] is True and q3["sql"] == same.sql
    assert q3["app_ms"] > 0 and q3["rewrite_ms"] > 0 and q3["speedup"] > 0
    ok = {q: run.fingerprints[q] == fp for q, fp in base.fingerprints.items()}
    assert stats.gate_verdict({}, ok).go


@pytest.mark.slow
def test_dropping_the_gist_index_keeps_results_and_is_compared(seeded_url: str) -> None:
    s = settings()
    base = bench.run(seeded_url, label="base", **FAST)
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {s.schema}.{s.table}_{s.geometry_column}_gist")
    run = bench.run(seeded_url, label="nogist", **FAST)
    assert run.fingerprints == base.fingerprints
    comps = stats.compare_bench(base, run)
    assert list(comps) == [*QIDS, *REST, *WRITES]
    assert all(c.verdict in (stats.SLOWER, stats.FASTER, stats.NO_CHANGE) for c in comps.values())


@pytest.mark.slow
def test_materialized_views_are_read_as_the_app_finds_them(seeded_url: str) -> None:
    """The bench never refreshes a view first: that would hide a stale one."""
    s = settings()
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE MATERIALIZED VIEW {s.schema}.mv_counts AS "
            f"SELECT categoria, count(*) FROM {s.qualified_table} GROUP BY 1 WITH NO DATA"
        )
    run = bench.run(seeded_url, label="mv", save=False, **FAST)
    assert run.run_id is None
    with psycopg.connect(seeded_url) as conn:
        populated = conn.execute(
            "SELECT relispopulated FROM pg_class WHERE oid = %s::regclass",
            (f"{s.schema}.mv_counts",),
        ).fetchone()[0]
    assert populated is False


@pytest.mark.slow
def test_metrics_json_fields(seeded_url: str, tmp_path) -> None:
    run = bench.run(seeded_url, label="opt1", **FAST)
    path = export(run, tmp_path)
    assert path.name == "METRICS_OPT1.json"
    data = json.loads(path.read_text())
    assert set(data) == {
        "label",
        "run_id",
        "revision",
        "started_at",
        "seconds",
        "options",
        "overall",
        "queries",
        "environment",
    }
    assert set(data["options"]) == {
        "iterations",
        "sets",
        "concurrency",
        "duration",
        "seed",
        "control_ms",
    }
    assert {"mean", "p50", "p95", "p99", "qps", "cache_hit_pct"} <= set(data["overall"])
    assert list(data["queries"]) == [*QIDS, *REST, *WRITES]
    q1 = data["queries"]["Q1"]
    assert {
        "title",
        "variant",
        "fingerprint",
        "mean",
        "p50",
        "p95",
        "p99",
        "round_median",
        "samples",
        "executions",
    } <= set(q1)
    assert q1["title"] == "viewport count + area" and len(q1["executions"]) == 2 * bench.SETS


def test_python_threads_fallback_measures_throughput(seeded_url: str) -> None:
    assert throughput.threads(seeded_url, ["SELECT 1"], 2, 0.3, 1) > 0


@pytest.mark.slow
def test_workload_files_are_measured_like_q1_q10(seeded_url: str, tmp_path) -> None:
    (tmp_path / "recent.sql").write_text(
        "\\set ano random(2021, 2024)\nSELECT id, nome FROM geometrias "
        "WHERE data_referencia >= make_date(:ano, 1, 1) ORDER BY id LIMIT 20;\n"
    )
    (tmp_path / "gone.sql").write_text("SELECT count(*) FROM public.not_there;\n")
    a = bench.run(seeded_url, label="w1", workload_dir=tmp_path, **FAST)
    b = bench.run(seeded_url, label="w2", workload_dir=tmp_path, **FAST)
    assert list(a.samples) == [*QIDS, *REST, "recent", *WRITES] and len(a.samples["recent"]) == 2
    assert len(a.executions["recent"]) == 2 * bench.SETS
    assert a.fingerprints["recent"] == b.fingerprints["recent"]
    assert a.environment["workload_files"] == {
        "recent": str(tmp_path / "recent.sql"),
        "gone": str(tmp_path / "gone.sql"),
    }
    assert a.environment["errors"] == {
        "gone": {
            "file": str(tmp_path / "gone.sql"),
            "error": 'relation "public.not_there" does not exist',
        }
    }
    assert "gone" not in a.samples and "gone" not in a.fingerprints
    with psycopg.connect(seeded_url) as conn:
        assert store.load_run(conn, a.run_id).samples["recent"] == a.samples["recent"]


@pytest.mark.slow
def test_cli_bench_baseline_compare_take_a_workload_folder(
    seeded_url: str, tmp_path, monkeypatch, capsys
) -> None:
    import sys

    import pytest

    from stage4 import cli

    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "recent.sql").write_text(
        "\\set n random(5, 9)\nSELECT id FROM geometrias ORDER BY id LIMIT :n;\n"
    )
    fast = ["--iterations", "1", "--concurrency", "1", "--duration", "1"]

    def main(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["stage4", "--database-url", seeded_url, *args])
        with pytest.raises(SystemExit) as e:
            cli.main()
        got = capsys.readouterr()
        return e.value.code, got.out, got.err

    code, out, _ = main("bench", *fast)  # without the folder: Q1–Q10 only
    assert code == 0 and "recent" not in out
    code, _, err = main("baseline", "--workload", str(folder))
    assert code != 0
    assert (
        err.strip()
        == f"FAILED: run 1 did not measure {folder / 'recent.sql'}: bench with --workload {folder}"
    )
    code, out, _ = main("bench", "--workload", str(folder), *fast)
    assert code == 0 and "recent" in out
    code, out, _ = main("baseline", "--workload", str(folder))
    assert code == 0 and "baseline: run 2" in out
    code, out, _ = main("compare", "--workload", str(folder))
    assert code == 0 and "recent" in out


@pytest.mark.slow
def test_pgbench_runs_a_statement_with_a_comment_line_whole(seeded_url: str) -> None:
    """A workload file's `--` comment ends at its line: the statement after it still runs
    (a sleep of 0.3 s caps one client near 3 statements a second)."""
    sql = "SELECT -- the app's own comment\n pg_sleep(0.3)"
    qps, tool = throughput.measure(seeded_url, [sql], 1, 1.0, 42, lambda *_: None)
    assert tool.startswith("pgbench")
    assert 0 < qps < 5, qps
