"""opt5: Q8 from counts kept by each write, the views for rewrites, refresh jobs, ``stage4 refresh``."""

from __future__ import annotations

import math
import os

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.catalog import snapshot
from stage4.cli import app
from stage4.config import settings
from stage4.ddl import cron, functions
from stage4.errors import MigrationError, Stage4Error
from stage4.measure.workload import base_sql
from stage4.optimisations import aggregates as agg
from stage4.plumbing import migrations
from stage4.plumbing.refresh import refresh_all

S = settings()
YEARS = [2016, 2020, 2024, 2028, 2030, 2040]
SE = (-46.6339, -23.5505)  # the densest centre of the seed


def _tile(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


TILES = [
    (0, 0, 0),
    _tile(*SE, 10),
    _tile(*SE, 12),
    _tile(*SE, 14),
    _tile(*SE, 16),
    _tile(-46.40, -23.95, 13),
    (12, 0, 0),
]
Q9_BASE = base_sql(S)["Q9"]  # the workload's own text: the variant must match it
MANUAL = "the materialized views are not refreshed automatically: run `stage4 refresh`"


def _answers(conn: psycopg.Connection) -> dict:
    out = {}
    for year in YEARS:
        out[("Q8", year)] = conn.execute(
            f"SELECT * FROM {S.schema}.contagem_mensal(%s)", (year,)
        ).fetchall()
    for z, x, y in TILES:
        out[("Q10", z, x, y)] = bytes(
            conn.execute(f"SELECT {S.schema}.tile_mvt(%s, %s, %s)", (z, x, y)).fetchone()[0]
        )
    return out


def _body(conn: psycopg.Connection, fn: functions.Function) -> str:
    return (
        conn.execute("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(%s)", (fn.identity,))
        .fetchone()[0]
        .strip()
    )


@pytest.fixture
def at_opt4(seeded_url: str) -> str:
    migrations.upgrade(seeded_url, "opt4")
    return seeded_url


class TestUpgrade:
    @pytest.mark.slow
    def test_views_exist_populated_with_unique_indexes(self, at_opt4):
        migrations.upgrade(at_opt4, "opt5")
        with psycopg.connect(at_opt4) as conn:
            for view in agg.views(S):
                populated, unique = conn.execute(
                    "SELECT c.relispopulated, EXISTS (SELECT 1 FROM pg_index i "
                    "WHERE i.indrelid = c.oid AND i.indisunique) FROM pg_class c "
                    "WHERE c.oid = to_regclass(%s) AND c.relkind = 'm'",
                    (view.qualified,),
                ).fetchone()
                assert (populated, unique) == (True, True), view.name
            # vacuumed and analyzed once the step committed (stage4.plumbing.migrations.settle):
            # statistics for the planner and a visibility map, before the gate's bench
            settled = conn.execute(
                "SELECT relname FROM pg_stat_all_tables WHERE relid = ANY (%s::regclass[]) "
                "AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL ORDER BY 1",
                ([v.qualified for v in agg.views(S)],),
            ).fetchall()
            assert sorted(r[0] for r in settled) == sorted(v.name for v in agg.views(S))

    @pytest.mark.slow
    def test_the_views_of_short_queries_are_read_serially(self, at_opt4):
        """The tile and points views carry ``parallel_workers = 0``: even where parallel plans
        are free, Q7 and Q9 on them get none (on the table at opt4 they do)."""
        migrations.upgrade(at_opt4, "opt5")
        # opt1 sets a planner cost for the database: this connection turns parallel plans back on
        free = (
            "SET max_parallel_workers_per_gather = 2",
            "SET parallel_setup_cost = 0",
            "SET parallel_tuple_cost = 0",
            "SET min_parallel_table_scan_size = 0",
            "SET min_parallel_index_scan_size = 0",
        )
        p = {
            "lon": SE[0],
            "lat": SE[1],
            "radius_m": 1000,
            "cat_point": "x",
            "cat_poly": "y",
            "min_lon": SE[0] - 0.05,
            "min_lat": SE[1] - 0.05,
            "max_lon": SE[0] + 0.05,
            "max_lat": SE[1] + 0.05,
        }
        with psycopg.connect(at_opt4) as conn:
            for view in (agg.tiles(S), agg.points(S)):
                options = conn.execute(
                    "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (view.qualified,)
                ).fetchone()[0]
                assert options == ["parallel_workers=0"], view.name
            for stmt in free:
                conn.execute(stmt)

            def plan(sql: str) -> str:
                return "\n".join(r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + sql, p))

            assert "Gather" in plan(base_sql(S)["Q7"])  # the partitioned table: parallel
            for qid in ("Q7", "Q9"):
                assert "Gather" not in plan(agg.rewrites(S)[qid].sql), qid

    @pytest.mark.slow
    def test_rpc_results_are_identical_before_and_after(self, at_opt4):
        with psycopg.connect(at_opt4) as conn:
            before = _answers(conn)
        assert any(before[("Q10", *TILES[1])]), "the dense tile holds features"
        assert before[("Q10", 12, 0, 0)] == b""
        migrations.upgrade(at_opt4, "opt5")
        with psycopg.connect(at_opt4) as conn:
            assert _body(conn, functions.monthly_counts(S)) == agg.monthly_counts_body(S).strip()
            assert _body(conn, functions.tile(S)) == functions.tile(S).body.strip()  # the table
            assert _answers(conn) == before

    @pytest.mark.slow
    def test_the_rpcs_answer_each_write_at_once_the_views_after_a_refresh(self, at_opt4):
        migrations.upgrade(at_opt4, "opt5")
        tile = agg.rewrites(S)["Q10"].sql
        dense = dict(zip("zxy", TILES[4], strict=True))
        with psycopg.connect(at_opt4) as conn:
            view_before = bytes(conn.execute(tile, dense).fetchone()[0])
            conn.execute(
                f"INSERT INTO {S.qualified_table} (nome, categoria, {S.time_column}, "
                f"{S.geometry_column}) SELECT 'Escola Nova ' || i, 'escola', "
                "make_date(2024, 1 + i % 12, 1), ST_SetSRID(ST_MakePoint(-46.634 + i * 1e-4, "
                "-23.55), 4326) FROM generate_series(1, 30) i"
            )
            conn.commit()
            now = _answers(conn)
            assert bytes(conn.execute(tile, dense).fetchone()[0]) == view_before  # stale
            # The baseline bodies, run directly on the table, agree: nothing was refreshed.
            for fn in (functions.monthly_counts(S), functions.tile(S)):
                conn.execute(fn.create_sql())
            assert _answers(conn) == now
            conn.rollback()
            done = refresh_all(at_opt4)
            # every materialized view of the own schema: opt5's two
            assert {name for name, _ in done} == {v.qualified for v in agg.views(S)}
            assert bytes(conn.execute(tile, dense).fetchone()[0]) == now[("Q10", *TILES[4])]

    @pytest.mark.slow
    def test_every_write_keeps_the_counts(self, at_opt4):
        """Inserts, deletes, a category changed, a date moved to another month and year (and
        partition), rows without a date change category only, a TRUNCATE: the counts stay
        what GROUP BY gives, rows of a count fallen to zero included."""
        migrations.upgrade(at_opt4, "opt5")
        mc, t, d = agg.monthly(S), S.qualified_table, S.time_column
        kept = f"SELECT {mc.kept_sql()}"
        with psycopg.connect(at_opt4) as conn:
            assert conn.execute(kept).fetchone()[0] is True
            conn.execute(
                f"INSERT INTO {t} (nome, categoria, {d}, {S.geometry_column}) "
                f"SELECT 'n' || i, 'rara', make_date(2025, 2, 1 + i), "
                "ST_SetSRID(ST_MakePoint(-46.6, -23.5), 4326) FROM generate_series(1, 3) i"
            )
            assert conn.execute(kept).fetchone()[0] is True
            rare = f"SELECT total FROM {mc.qualified} WHERE categoria = 'rara'"
            assert conn.execute(rare).fetchall() == [(3,)]
            conn.execute(
                f"UPDATE {t} SET categoria = 'rara2' WHERE categoria = 'rara' AND nome = 'n1'"
            )
            conn.execute(f"UPDATE {t} SET {d} = date '2021-07-04' WHERE nome = 'n2'")
            conn.execute(f"UPDATE {t} SET nome = 'n2b' WHERE nome = 'n2'")  # no count moves
            assert conn.execute(kept).fetchone()[0] is True
            conn.execute(f"DELETE FROM {t} WHERE categoria LIKE 'rara%'")
            assert conn.execute(kept).fetchone()[0] is True
            assert conn.execute(rare).fetchall() == []
            conn.execute(f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} ORDER BY id LIMIT 50)")
            assert conn.execute(kept).fetchone()[0] is True
            conn.execute(f"TRUNCATE {t}")
            assert conn.execute(f"SELECT count(*) FROM {mc.qualified}").fetchone()[0] == 0
            conn.rollback()
            assert conn.execute(kept).fetchone()[0] is True
            # a write that bypasses row triggers is what the promise (and drift) names
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(f"DELETE FROM {t} WHERE id = (SELECT min(id) FROM {t})")
            assert conn.execute(kept).fetchone()[0] is False
            conn.rollback()

    @pytest.mark.slow
    def test_the_counts_are_written_by_the_trigger_only(self, at_opt4):
        role = f"app_writer_{os.getpid()}"
        mc = agg.monthly(S)
        with psycopg.connect(at_opt4, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role}")
            try:
                conn.execute(
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON {S.qualified_table} TO {role}"
                )
                migrations.upgrade(at_opt4, "opt5")
                assert conn.execute(
                    "SELECT has_table_privilege(%s, %s, 'SELECT'), "
                    "has_table_privilege(%s, %s, 'INSERT, UPDATE, DELETE, TRUNCATE'), "
                    "has_function_privilege(%s, %s, 'EXECUTE')",
                    (role, mc.qualified, role, mc.qualified, role, mc.sync_function),
                ).fetchone() == (True, False, False)
                conn.execute(f"SET ROLE {role}")
                conn.execute(
                    f"INSERT INTO {S.qualified_table} (nome, categoria, {S.time_column}, "
                    f"{S.geometry_column}) VALUES ('w', 'rara', date '2024-03-03', "
                    "ST_SetSRID(ST_MakePoint(-46.6, -23.5), 4326))"
                )
                total = f"SELECT total FROM {mc.qualified} WHERE categoria = 'rara'"
                assert conn.execute(total).fetchall() == [(1,)]
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"UPDATE {mc.qualified} SET total = 7")
                conn.execute("RESET ROLE")
                conn.execute(f"DELETE FROM {S.qualified_table} WHERE categoria = 'rara'")
            finally:
                conn.execute("RESET ROLE")
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE {role}")

    @pytest.mark.slow
    def test_q9_variant_returns_what_the_base_query_returns(self, at_opt4):
        migrations.upgrade(at_opt4, "opt5")
        variant = agg.rewrites(S)["Q9"]
        box = {"min_lon": -46.75, "min_lat": -23.70, "max_lon": -46.50, "max_lat": -23.45}
        seen = 0
        with psycopg.connect(at_opt4) as conn:
            assert conn.execute(f"SELECT {variant.requires}").fetchone()[0] is True
            for poly, point in [
                ("bairro", "escola"),
                ("parque", "biblioteca"),
                ("lote", "hospital"),
                ("escola", "escola"),
                ("bairro", "rio"),
            ]:
                params = {"cat_poly": poly, "cat_point": point, **box}
                base = conn.execute(Q9_BASE, params).fetchall()
                assert conn.execute(variant.sql, params).fetchall() == base, (poly, point)
                seen += len(base)
        assert seen > 0

    @pytest.mark.slow
    def test_q6_variant_returns_what_the_base_query_returns(self, at_opt4):
        migrations.upgrade(at_opt4, "opt5")
        variant, base_q6 = agg.rewrites(S)["Q6"], base_sql(S)["Q6"]
        seen = 0
        with psycopg.connect(at_opt4) as conn:
            assert conn.execute(f"SELECT {variant.requires}").fetchone()[0] is True
            # Inside polygons (many features at distance 0: the tie-break by id decides),
            # on the city edge, and far away (every feature equally far in index terms).
            for lon, lat in [SE, (-46.70, -23.60), (-46.40, -23.80), (-40.0, -10.0)]:
                for k in (1, 5, 20):
                    params = {"lon": lon, "lat": lat, "k": k}
                    base = conn.execute(base_q6, params).fetchall()
                    assert conn.execute(variant.sql, params).fetchall() == base, (lon, lat, k)
                    seen += len(base)
            # one ordered scan of the (geom, id) GiST that stops at the k-th row: no Sort
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    f"EXPLAIN (COSTS OFF) {variant.sql}", {"lon": SE[0], "lat": SE[1], "k": 5}
                )
            )
            assert f"Index Scan using {agg.tiles(S).name}_idx3" in plan, plan
            assert "Sort" not in plan, plan
        assert seen > 0

    @pytest.mark.slow
    def test_q6_variant_is_not_chosen_for_negative_ids(self, at_opt4):
        """Its order by ``id::float8 <-> 0`` is the order by id only for ids >= 0."""
        migrations.upgrade(at_opt4, "opt5")
        tv = agg.tiles(S).qualified
        with psycopg.connect(at_opt4, autocommit=True) as conn:
            conn.execute(
                "UPDATE geometrias SET id = -id WHERE id = (SELECT min(id) FROM geometrias)"
            )
            conn.execute(f"REFRESH MATERIALIZED VIEW {tv}")
            assert conn.execute(f"SELECT {agg.rewrites(S)['Q6'].requires}").fetchone()[0] is False

    @pytest.mark.slow
    def test_every_view_variant_returns_what_the_base_query_returns(self, at_opt4):
        from stage4.measure import workload

        migrations.upgrade(at_opt4, "opt5")
        catalogue = workload.queries(S)
        with psycopg.connect(at_opt4) as conn:
            anchors = workload.sample_anchors(conn, S)
            assert sorted(agg.rewrites(S)) == ["Q10", "Q2", "Q6", "Q7", "Q9"]
            for qid, variant in agg.rewrites(S).items():
                assert conn.execute(f"SELECT {variant.requires}").fetchone()[0] is True
                rows = 0
                for params in workload.parameters(qid, anchors, 12, stream="test"):
                    base = conn.execute(catalogue[qid].sql, params).fetchall()
                    got = conn.execute(variant.sql, params).fetchall()
                    ordered = catalogue[qid].ordered
                    assert workload.normalise_rows(got, ordered) == workload.normalise_rows(
                        base, ordered
                    ), (qid, params)
                    rows += len(base)
                assert rows > 0, qid

    @pytest.mark.slow
    def test_q2_variant_is_one_ordered_index_scan_with_the_base_rows(self, at_opt4):
        """Q2's variant reads the (geom, id) GiST in id order and stops at the 500th row: the
        base query's rows, in order, including a feature whose bbox only touches the box's
        edge (where float4 rounding matters)."""
        migrations.upgrade(at_opt4, "opt5")
        base, variant = base_sql(S)["Q2"], agg.rewrites(S)["Q2"].sql
        with psycopg.connect(at_opt4) as conn:
            x0, y0, x1, y1 = conn.execute(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                "FROM (SELECT ST_Extent(geom)::box3d AS e FROM geometrias) s"
            ).fetchone()
            # a box whose west edge is exactly the east edge of a low-id polygon (its
            # bbox only touches the box: && is true, and the row is among the first 500)
            touching, edge = conn.execute(
                "SELECT id, ST_XMax(geom::box3d) FROM (SELECT id, geom FROM geometrias "
                "WHERE GeometryType(geom) = 'POLYGON' ORDER BY id LIMIT 50) s "
                "ORDER BY 2 LIMIT 1"
            ).fetchone()
            boxes = {
                "everything": (x0, y0, x1, y1),
                "a corner": (x0, y0, x0 + (x1 - x0) / 50, y0 + (y1 - y0) / 50),
                "an edge": (edge, y0, x1, y1),
            }
            for name, (a, b, c, d) in boxes.items():
                p = {"min_lon": a, "min_lat": b, "max_lon": c, "max_lat": d}
                want = conn.execute(base, p).fetchall()
                assert want and conn.execute(variant, p).fetchall() == want, name
                if name == "an edge":
                    assert touching in {r[0] for r in want}
                plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + variant, p))
                assert f"Index Scan using {agg.tiles(S).name}_idx3" in plan, (name, plan)
                assert "Sort" not in plan, (name, plan)

    @pytest.mark.slow
    def test_without_pg_cron_it_applies_and_says_refresh_is_manual(self, at_opt4):
        notes: list[str] = []
        migrations.upgrade(at_opt4, "opt5", notes=notes)
        with psycopg.connect(at_opt4) as conn:
            state = cron.status(conn)
            assert cron.jobs(conn, [j.name for j in agg.jobs(S)]) == []
        assert notes == [f"opt5: {state.reason}; {MANUAL}"]

    def test_schedule_sql_raises_one_notice_without_pg_cron(self, seeded_url):
        notices: list[str] = []
        with psycopg.connect(seeded_url) as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            conn.execute(cron.schedule_sql(agg.jobs(S), "refresh is manual: run `stage4 refresh`"))
        assert notices == [
            "stage4: pg_cron is not installed in this database; "
            "refresh is manual: run `stage4 refresh`"
        ]


class TestRefresh:
    @pytest.mark.slow
    def test_refresh_is_concurrent_readers_are_not_blocked(self, at_opt4):
        migrations.upgrade(at_opt4, "opt5")
        view = agg.tiles(S).qualified
        with psycopg.connect(at_opt4) as reader:
            reader.execute(f"SELECT count(*) FROM {view}")  # holds ACCESS SHARE until rollback
            url = at_opt4 + "?options=-c%20lock_timeout%3D1s"
            assert len(refresh_all(url)) == 2  # opt5's views; a plain REFRESH would time out
            reader.rollback()

    @pytest.mark.slow
    def test_an_unpopulated_view_gets_a_plain_refresh(self, at_opt4):
        migrations.upgrade(at_opt4, "opt5")
        with psycopg.connect(at_opt4, autocommit=True) as conn:
            conn.execute(f"REFRESH MATERIALIZED VIEW {agg.tiles(S).qualified} WITH NO DATA")
            refresh_all(at_opt4)
            assert conn.execute(
                "SELECT relispopulated FROM pg_class WHERE oid = %s::regclass",
                (agg.tiles(S).qualified,),
            ).fetchone()[0]

    @pytest.mark.slow
    def test_a_failing_refresh_says_which_view(self, at_opt4):
        migrations.upgrade(at_opt4, "opt5")
        view = agg.points(S).qualified
        with psycopg.connect(at_opt4) as blocker:
            blocker.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")  # lock held
            url = at_opt4 + "?options=-c%20lock_timeout%3D200ms"
            with pytest.raises(Stage4Error) as failed:
                refresh_all(url)
            blocker.rollback()
        assert str(failed.value) == (
            f"refreshing {view} failed: canceling statement due to lock timeout "
            "(0 views refreshed before it)"  # in name order: the first
        )

    @pytest.mark.slow
    def test_cli_refresh(self, at_opt4):
        migrations.upgrade(at_opt4, "opt5")
        result = CliRunner().invoke(app, ["--database-url", at_opt4, "refresh"])
        assert result.exit_code == 0, result.output
        lines = result.output.strip().splitlines()
        assert [line.split(":")[0] for line in lines] == sorted(v.qualified for v in agg.views(S))
        assert all(line.endswith(" s") for line in lines)

    def test_cli_refresh_without_views(self, seeded_url):
        result = CliRunner().invoke(app, ["--database-url", seeded_url, "refresh"])
        assert result.exit_code == 0, result.output
        assert result.output == "no materialized views to refresh\n"


class TestSafety:
    @pytest.mark.slow
    def test_rls_keeps_the_rpcs_on_the_table_and_the_views_private(self, at_opt4):
        role = f"app_reader_{os.getpid()}"
        with psycopg.connect(at_opt4, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role}")
            try:
                conn.execute(f"GRANT SELECT ON {S.qualified_table} TO {role}")
                conn.execute(f"ALTER TABLE {S.qualified_table} ENABLE ROW LEVEL SECURITY")
                notes: list[str] = []
                migrations.upgrade(at_opt4, "opt5", notes=notes)
                assert notes[0] == (
                    f"opt5: {S.qualified_table} has row level security enabled; the monthly "
                    "counts and the materialized views ignore it, so the RPC keeps reading the "
                    "table and they are readable by their owner only"
                )
                for fn in (functions.monthly_counts(S), functions.tile(S)):
                    assert _body(conn, fn) == fn.body.strip()
                for view in (*agg.views(S), agg.monthly(S)):
                    assert not conn.execute(
                        "SELECT has_table_privilege(%s, %s, 'SELECT')", (role, view.qualified)
                    ).fetchone()[0]
                assert (
                    conn.execute(f"SELECT {agg.rewrites(S)['Q9'].requires}").fetchone()[0] is False
                )
            finally:
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE {role}")

    @pytest.mark.slow
    def test_views_get_the_tables_select_grants(self, at_opt4):
        role = f"app_anon_{os.getpid()}"
        with psycopg.connect(at_opt4, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role}")
            try:
                conn.execute(f"GRANT SELECT ON {S.qualified_table} TO {role}")
                migrations.upgrade(at_opt4, "opt5")
                for view in (*agg.views(S), agg.monthly(S)):
                    assert conn.execute(
                        "SELECT has_table_privilege(%s, %s, 'SELECT')", (role, view.qualified)
                    ).fetchone()[0]
            finally:
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE {role}")

    @pytest.mark.slow
    def test_a_body_stage4_did_not_write_is_refused(self, at_opt4):
        custom = functions.monthly_counts(S, "SELECT NULL::date, NULL::text, 0::bigint")
        with psycopg.connect(at_opt4, autocommit=True) as conn:
            conn.execute(custom.create_sql())
        with pytest.raises(MigrationError) as refused:
            migrations.upgrade(at_opt4, "opt5")
        assert str(refused.value) == (
            f"opt5 cannot re-point {custom.identity}: its body is not the one stage4 created "
            "(revision schema), so the counts-backed body might not return the same results; "
            "compare it with `stage4 plan --to schema --since base`"
        )
        assert migrations.current(at_opt4) == "opt4"


class TestRoundTrip:
    @pytest.mark.slow
    def test_downgrade_restores_the_snapshot_exactly(self, at_opt4):
        with psycopg.connect(at_opt4) as conn:
            before = snapshot.take(conn)
        migrations.upgrade(at_opt4, "opt5")
        migrations.downgrade(at_opt4, "opt4")
        with psycopg.connect(at_opt4) as conn:
            assert snapshot.diff(before, snapshot.take(conn)) == []

    @pytest.mark.slow
    def test_whole_chain_down_to_schema_keeps_every_row(self, seeded_url):
        with psycopg.connect(seeded_url) as conn:
            before = snapshot.take(conn)
        migrations.upgrade(seeded_url, "opt5")
        migrations.downgrade(seeded_url, "schema")
        with psycopg.connect(seeded_url) as conn:
            assert snapshot.diff(before, snapshot.take(conn)) == []

    @pytest.mark.slow
    def test_jobs_are_scheduled_and_removed_with_pg_cron(self, cron_url):
        migrations.upgrade(cron_url, "opt4")
        with psycopg.connect(cron_url) as conn:
            before = snapshot.take(conn)
        notes: list[str] = []
        migrations.upgrade(cron_url, "opt5", notes=notes)
        assert notes == []
        with psycopg.connect(cron_url) as conn:
            expected = sorted((j.name, j.schedule, j.command) for j in agg.jobs(S))
            assert cron.jobs(conn, [j.name for j in agg.jobs(S)]) == expected
        migrations.downgrade(cron_url, "opt4")
        with psycopg.connect(cron_url) as conn:
            assert snapshot.diff(before, snapshot.take(conn)) == []


def test_offline_sql_renders_without_a_database():
    up = migrations.offline_sql("upgrade", "opt4:opt5")
    for view in agg.views(S):
        assert view.create_sql()[0] in up
        assert f"PERFORM cron.schedule('stage4_refresh_{view.name}'" in up
    assert agg.monthly(S).build_sql()[0] in up
    down = migrations.offline_sql("downgrade", "opt5:opt4")
    assert functions.monthly_counts(S).create_sql() in down
