"""The benchmarking schema: created/upgraded by stage4, idempotent, survives downgrades."""

from __future__ import annotations

import psycopg
import pytest

from stage4.config import settings
from stage4.errors import ConfigError
from stage4.measure import store
from stage4.measure.metrics import BenchRun
from stage4.plumbing import migrations


def _run(label: str = "T", scale: float = 1.0) -> BenchRun:
    return BenchRun(
        label=label,
        samples={"Q1": [1.0 * scale, 3.0 * scale], "Q2": [2.0 * scale, 2.0 * scale]},
        executions={
            "Q1": [0.5 * scale, 1.5 * scale, 2.5 * scale, 3.5 * scale],
            "Q2": [2.0 * scale] * 4,
        },
        sets=2,
        fingerprints={"Q1": "aa", "Q2": "bb"},
        variants={"Q1": "base", "Q2": "base"},
        revision="schema",
        qps=10.0,
        cache_hit=0.99,
        environment={"row_count": 2000},
        iterations=2,
        concurrency=1,
        duration=1.0,
    )


@pytest.fixture
def conn(seeded_url: str):
    with psycopg.connect(seeded_url, autocommit=True) as c:
        store.ensure(c)
        yield c


def _objects(conn) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT c.relkind::text, c.relname FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 2",
        (settings().bench_schema,),
    ).fetchall()


class TestSchema:
    def test_four_tables_two_views_and_indexes_at_version_2(self, conn) -> None:
        kinds = dict((name, kind) for kind, name in _objects(conn))
        assert {n for n, k in kinds.items() if k == "r"} == {
            "runs",
            "samples",
            "baselines",
            "catalog_records",
        }
        assert {n for n, k in kinds.items() if k == "v"} == {"run_summary", "baseline_comparison"}
        assert {"runs_label_idx", "baselines_run_idx", "samples_pkey"} <= set(kinds)
        assert store.version(conn) == store.VERSION == 3

    def test_ensure_is_idempotent(self, conn) -> None:
        before = _objects(conn)
        store.save_run(conn, _run())
        assert store.ensure(conn) == 3
        assert store.ensure(conn) == 3
        assert _objects(conn) == before
        assert conn.execute("SELECT count(*) FROM benchmarking.runs").fetchone()[0] == 1

    def test_refuses_a_newer_schema_version(self, conn) -> None:
        conn.execute("COMMENT ON SCHEMA benchmarking IS 'stage4 benchmarking schema v99'")
        with pytest.raises(ConfigError) as e:
            store.ensure(conn)
        assert str(e.value) == (
            "schema benchmarking is at version 99, newer than this stage4 (3): upgrade stage4"
        )

    def test_survives_alembic_downgrade(self, seeded_url: str, conn) -> None:
        run_id = store.save_run(conn, _run())
        store.set_baseline(conn, run_id)
        conn.execute(f"TRUNCATE {settings().qualified_table}")  # let `schema` drop the table
        migrations.downgrade(seeded_url, "base")
        assert migrations.current(seeded_url) is None
        assert conn.execute("SELECT to_regclass('public.geometrias')").fetchone()[0] is None
        assert store.load_baseline(conn).run_id == run_id
        assert store.version(conn) == store.VERSION


class TestRuns:
    def test_save_and_load_round_trip(self, conn) -> None:
        run = _run()
        run_id = store.save_run(conn, run)
        back = store.load_run(conn, run_id)
        assert back.samples == run.samples
        assert back.executions == run.executions
        assert (back.fingerprints, back.variants, back.label) == (
            run.fingerprints,
            run.variants,
            "T",
        )
        assert (back.qps, back.cache_hit, back.sets, back.environment) == (
            10.0,
            0.99,
            2,
            {"row_count": 2000},
        )

    def test_load_run_unknown_id(self, conn) -> None:
        with pytest.raises(ConfigError) as e:
            store.load_run(conn, 424242)
        assert str(e.value) == (
            "no benchmark run 424242 in benchmarking.runs (see `stage4 compare --help`)"
        )

    def test_summary_and_comparison_views(self, conn) -> None:
        base = store.save_run(conn, _run("BASE"))
        slow = store.save_run(conn, _run("SLOW", scale=2.0))
        store.set_baseline(conn, base)
        rows = {r["run_id"]: r for r in store.latest_runs(conn)}
        assert rows[base]["is_baseline"] and not rows[slow]["is_baseline"]
        assert rows[base]["samples"] == 8 and rows[base]["mean_ms"] == pytest.approx(2.0)
        ratios = dict(
            conn.execute(
                "SELECT query_id, ratio FROM benchmarking.baseline_comparison WHERE run_id = %s",
                (slow,),
            ).fetchall()
        )
        assert ratios == {"Q1": pytest.approx(2.0), "Q2": pytest.approx(2.0)}


class TestBaseline:
    def test_none_until_set(self, conn) -> None:
        assert store.load_baseline(conn) is None

    def test_refuses_to_overwrite_without_force(self, conn) -> None:
        first = store.save_run(conn, _run())
        second = store.save_run(conn, _run())
        store.set_baseline(conn, first)
        store.set_baseline(conn, first)  # the same run again: not an overwrite
        with pytest.raises(ConfigError) as e:
            store.set_baseline(conn, second)
        assert str(e.value) == (
            f"a baseline already exists (run {first}); pass --force to replace it with run {second}"
        )
        assert store.load_baseline(conn).run_id == first
        store.set_baseline(conn, second, force=True)
        assert store.load_baseline(conn).run_id == second
        history = conn.execute("SELECT run_id, forced FROM benchmarking.baselines ORDER BY 1")
        assert history.fetchall() == [(first, False), (second, True)]

    def test_gate_argument_order_is_accepted(self, conn) -> None:
        run_id = store.save_run(conn, _run())
        store.set_baseline(conn, settings(), run_id)
        assert store.load_baseline(conn, settings()).run_id == run_id

    def test_unknown_run_cannot_become_baseline(self, conn) -> None:
        with pytest.raises(ConfigError) as e:
            store.set_baseline(conn, 999)
        assert (
            str(e.value) == "no benchmark run 999 in benchmarking.runs: cannot make it the baseline"
        )
