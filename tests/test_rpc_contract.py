"""The app's geo reads are RPCs: ``schema`` creates them with the app's own queries as
bodies, opt2 re-points Q1 and Q3 at its stored columns (same rows), a downgrade restores
each definition and comment exactly, and a body or an overload of the app's is its own."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import tuple_row

from stage4.config import settings
from stage4.ddl import functions
from stage4.errors import MigrationError
from stage4.measure import workload
from stage4.plumbing import migrations

S = settings()


def _fingerprints(url: str, qids) -> dict[str, str]:
    """Each query's fingerprint over the fingerprint pass's parameter sets."""
    catalogue = workload.queries(S)
    out = {}
    with psycopg.connect(url, autocommit=True, row_factory=tuple_row) as conn:
        anchors = workload.sample_anchors(conn, S)
        for qid in qids:
            fp = workload.Fingerprint()
            for p in workload.parameters(qid, anchors, workload.FINGERPRINT_SETS, stream="fp"):
                fp.add(conn.execute(catalogue[qid].sql, p).fetchall(), catalogue[qid].ordered)
            out[qid] = fp.hexdigest()
    return out


def _definition(url: str, fn: functions.Function) -> tuple[str, str | None]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT pg_get_functiondef(%s::regprocedure), obj_description(%s::regprocedure, "
            "'pg_proc')",
            (fn.identity, fn.identity),
        ).fetchone()


def test_each_rpc_returns_what_the_apps_query_returns(seeded_url: str) -> None:
    """At schema the RPC's rows are the app's query's rows, parameter set by parameter set."""
    base = workload.base_sql(S)
    catalogue = workload.queries(S)
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        anchors = workload.sample_anchors(conn, S)
        for qid in functions.read_ids():
            q = catalogue[qid]
            for p in workload.parameters(qid, anchors, 3, stream="fp"):
                rpc = workload.normalise_rows(conn.execute(q.sql, p).fetchall(), q.ordered)
                sql = workload.normalise_rows(conn.execute(base[qid], p).fetchall(), q.ordered)
                assert rpc == sql, f"{qid} {p}"
        assert any(conn.execute(catalogue["Q9"].sql, p).fetchall()
                   for p in workload.parameters("Q9", anchors, 3, stream="fp"))  # fmt: skip


@pytest.mark.slow
def test_opt2_repoints_q1_and_q3_with_the_same_rows_and_its_downgrade_restores_them(
    seeded_url: str,
) -> None:
    q1, q3 = functions.read(S, "Q1"), functions.read(S, "Q3")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(f"COMMENT ON FUNCTION {q3.identity} IS 'the app''s note'")
    at_schema = {fn.name: _definition(seeded_url, fn) for fn in (q1, q3)}
    fingerprints = _fingerprints(seeded_url, ["Q1", "Q3"])
    migrations.upgrade(seeded_url, "opt1")
    before = {fn.name: _definition(seeded_url, fn) for fn in (q1, q3)}
    assert before == at_schema  # opt1 leaves them as they are
    migrations.upgrade(seeded_url, "opt2")
    with psycopg.connect(seeded_url) as conn:
        bodies = dict(conn.execute(
            "SELECT proname, prosrc FROM pg_proc WHERE proname IN (%s, %s)", (q1.name, q3.name)
        ).fetchall())  # fmt: skip
    assert all("area_m2" in b and "ST_Area" not in b for b in bodies.values())
    assert _fingerprints(seeded_url, ["Q1", "Q3"]) == fingerprints
    migrations.downgrade(seeded_url, "opt1")
    assert {fn.name: _definition(seeded_url, fn) for fn in (q1, q3)} == before
    migrations.downgrade(seeded_url, "schema")  # the app's comment, back with the body
    assert {fn.name: _definition(seeded_url, fn) for fn in (q1, q3)} == at_schema
    assert at_schema[q3.name][1] == "the app's note"


def test_a_body_of_the_apps_own_is_not_repointed(seeded_url: str) -> None:
    q1 = functions.read(S, "Q1")
    own = q1.body.replace("count(*)", "count(id)")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(functions.Function(**{**q1.__dict__, "body": own}).create_sql())
    migrations.upgrade(seeded_url, "opt2")
    with psycopg.connect(seeded_url) as conn:
        src = conn.execute(
            "SELECT btrim(prosrc, E' \\n') FROM pg_proc WHERE oid = %s::regprocedure",
            (q1.identity,),
        ).fetchone()[0]
    assert src == own.strip()


def test_an_overload_of_the_apps_is_refused_in_one_line(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION public.mais_proximas(p geometry) RETURNS int "
                     "LANGUAGE sql AS 'SELECT 1'")  # fmt: skip
    with pytest.raises(MigrationError) as refused:
        migrations.upgrade(db_url, "schema")
    message = str(refused.value)
    assert "mais_proximas(geometry) exists" in message and "\n" not in message
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (S.qualified_table,)).fetchone()[0] is None


def test_opt1_builds_q9s_index_and_its_downgrade_drops_it_with_btree_gist(seeded_url) -> None:
    from stage4.optimisations import partition_by_year as p

    name = f"{S.schema}.{p.category_index(S)[0]}"
    q9 = _fingerprints(seeded_url, ["Q9"])
    migrations.upgrade(seeded_url, "opt1")
    with psycopg.connect(seeded_url) as conn:
        valid, note = conn.execute(
            "SELECT indisvalid, obj_description(indexrelid, 'pg_class') FROM pg_index "
            "WHERE indexrelid = to_regclass(%s)",
            (name,),
        ).fetchone()
        schemas = conn.execute(
            "SELECT extname, extnamespace::regnamespace::text FROM pg_extension "
            "WHERE extname IN ('postgis', 'btree_gist') ORDER BY 1"
        ).fetchall()
        parts = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(%s)", (name,)
        ).fetchone()[0]
    assert valid and note == p.INDEX_MARK + p.BTREE_GIST_MARK and parts >= 10
    assert schemas[0][1] == schemas[1][1]  # btree_gist beside PostGIS
    assert _fingerprints(seeded_url, ["Q9"]) == q9
    migrations.downgrade(seeded_url, "schema")
    with psycopg.connect(seeded_url) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None
        assert not conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'btree_gist'"
        ).fetchall()


def test_btree_gist_the_app_had_stays_after_opt1s_downgrade(seeded_url) -> None:
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION btree_gist")
    migrations.upgrade(seeded_url, "opt1")
    migrations.downgrade(seeded_url, "schema")
    with psycopg.connect(seeded_url) as conn:
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'btree_gist'").fetchall()


def test_opt1_repoints_q2_with_the_same_rows_and_its_downgrade_restores_it(seeded_url) -> None:
    q2 = functions.read(S, "Q2")
    before = _definition(seeded_url, q2)
    fingerprints = _fingerprints(seeded_url, ["Q2"])
    migrations.upgrade(seeded_url, "opt1")
    definition = _definition(seeded_url, q2)[0]
    assert "ORDER BY id + 0 LIMIT 500" in definition and "plan_cache_mode TO 'auto'" in definition
    assert _fingerprints(seeded_url, ["Q2"]) == fingerprints
    migrations.downgrade(seeded_url, "schema")
    assert _definition(seeded_url, q2) == before


@pytest.mark.slow
def test_a_database_without_a_geo_reads_rpc_is_measured_on_the_apps_sql(seeded_url) -> None:
    """A database set up before ``schema`` created these RPCs (or an app without one):
    its Q1 is the SQL the app sends, measured unchanged, and the run says so."""
    from stage4.measure import bench

    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(functions.read(S, "Q1").drop_sql())
    run = bench.run(seeded_url, iterations=1, concurrency=1, duration=0.5, save=False)
    assert run.environment["contract"]["Q1"] == "SQL"
    assert run.environment["workload_sql"]["Q1"] == workload.base_sql(S)["Q1"]
    assert run.environment["contract"]["Q3"] == "RPC" and run.samples["Q1"]


def test_the_geo_reads_show_anon_only_the_rows_its_policy_lets_it_read(supabase_url) -> None:
    """SECURITY INVOKER: each new RPC reads the table as the caller, so RLS applies; at
    schema and at opt2 (re-pointed Q1 and Q3 on the stored columns) alike."""
    from fixtures_supabase import POLICY

    box = {"min_lon": -47.3, "min_lat": -24.1, "max_lon": -46.1, "max_lat": -23.2}
    calls = {q: functions.call_sql(functions.read(S, q)) for q in ("Q1", "Q3", "Q2")}

    def as_anon() -> tuple:
        with psycopg.connect(supabase_url) as conn:
            conn.execute("SET ROLE anon")
            total = conn.execute(calls["Q1"], box).fetchone()[0]
            cats = {r[0] for r in conn.execute(calls["Q3"], box).fetchall()}
            fetched = conn.execute(calls["Q2"], box).fetchall()
        return total, cats, len(fetched)

    with psycopg.connect(supabase_url) as conn:
        visible = conn.execute(
            f"SELECT count(*) FROM {S.qualified_table} WHERE {POLICY['anon']}"
        ).fetchone()[0]
        everything = conn.execute(f"SELECT count(*) FROM {S.qualified_table}").fetchone()[0]
    assert 0 < visible < everything
    at_schema = as_anon()
    assert at_schema[0] == visible and at_schema[1] == {"escola"} and at_schema[2] > 0
    migrations.upgrade(supabase_url, "opt2")
    assert as_anon() == at_schema
