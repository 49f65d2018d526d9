"""stage4's own objects live in its own schema: ``public`` (what PostgREST and GIS clients
list) holds the same relations and functions at every revision.

Partitions, materialized views, the partition routine and the trigger function go in
``[tool.stage4] own_schema``. Reads through ``public.geometrias`` check the parent only, so
the API roles need nothing on that schema; the roles the view grants let read a view get
USAGE on it (the RPCs are SECURITY INVOKER), and nothing else there. A database an earlier
stage4 migrated (those objects in ``public``) is named by ``stage4 status`` and still
downgrades exactly.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors
from typer.testing import CliRunner

from fixtures_supabase import POLICY, ROLES
from stage4.catalog import snapshot
from stage4.cli import app
from stage4.config import settings
from stage4.ddl import functions, nearest
from stage4.optimisations import aggregates as agg
from stage4.optimisations import future_partitions as fp
from stage4.optimisations import gis_columns
from stage4.plumbing import migrations
from stage4.rollout import status

S = settings()
OWN = S.own_schema
_RELATIONS = """SELECT c.relname::text, c.relkind::text FROM pg_class c
  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  ORDER BY 1"""
_FUNCTIONS = """SELECT p.oid::regprocedure::text FROM pg_proc p
  WHERE p.pronamespace = 'public'::regnamespace
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  ORDER BY 1"""


def _as(conn, role: str, sql: str):
    """Rows of ``sql`` run as ``role`` (rolled back), or the privilege error's class."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(f"SET LOCAL ROLE {role}")
            return conn.execute(sql).fetchall()
    except errors.InsufficientPrivilege:
        return "denied"


@pytest.mark.slow
def test_public_holds_the_same_relations_at_every_revision(supabase_url: str) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        relations = conn.execute(_RELATIONS).fetchall()
        routines = conn.execute(_FUNCTIONS).fetchall()
        anon_rows = {
            r[0] for r in conn.execute(f"SELECT id FROM {S.qualified_table} WHERE {POLICY['anon']}")
        }
        before = snapshot.take(conn)
    assert (S.table, "r") in relations
    for rev in migrations.chain()[1:]:
        migrations.upgrade(supabase_url, rev)
        with psycopg.connect(supabase_url, autocommit=True) as conn:
            now = conn.execute(_RELATIONS).fetchall()
            assert [(n, k) for n, k in now if n != S.table] == [
                (n, k) for n, k in relations if n != S.table
            ], rev
            assert conn.execute(_FUNCTIONS).fetchall() == routines, rev
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        # the partitions, views and routines are there, in stage4's schema
        made = conn.execute(
            "SELECT count(*) FILTER (WHERE c.relispartition), count(*) FILTER "
            "(WHERE c.relkind = 'm') FROM pg_class c WHERE c.relnamespace = %s::regnamespace",
            (OWN,),
        ).fetchone()
        assert made[0] >= 11 and made[1] == len(agg.views(S))
        for fn in (fp.identity(S), f"{gis_columns.function(S)}()"):
            assert conn.execute("SELECT to_regprocedure(%s)", (fn,)).fetchone()[0] is not None
        # what "exactly as before" compares covers them, not the version table
        held = {(r[0], r[1]) for r in snapshot.catalog(conn)["relations"]}
        assert (OWN, f"{S.table}_p2024") in held and (OWN, agg.monthly(S).name) in held
        assert not any(name == "alembic_version" for _, name in held)
        # anon reads exactly its policy's rows through the table, and in stage4's schema
        # only the nearest-features copy (Q6's RPC reads it), under the same rule
        got = _as(conn, "anon", f"SELECT id FROM {S.qualified_table}")
        assert {r[0] for r in got} == anon_rows
        got = _as(conn, "anon", f"SELECT id FROM {nearest.table(S)}")
        assert {r[0] for r in got} == anon_rows
        assert _as(conn, "anon", f"SELECT count(*) FROM {OWN}.{S.table}_p2024") == "denied"
        assert _as(conn, "anon", f"SELECT count(*) FROM {agg.monthly(S).qualified}") == "denied"
        # the RPCs read the table under RLS: anon's count is its rows'
        counts = _as(conn, "anon", "SELECT sum(total) FROM public.contagem_mensal(2024)")
        assert (
            counts[0][0]
            == conn.execute(
                f"SELECT count(*) FROM {S.qualified_table} WHERE {POLICY['anon']} "
                f"AND {S.time_column} >= '2024-01-01' AND {S.time_column} < '2025-01-01'"
            ).fetchone()[0]
        )
    migrations.downgrade(supabase_url, "schema")
    with psycopg.connect(supabase_url) as conn:
        assert snapshot.diff(before, snapshot.take(conn)) == []


@pytest.mark.slow
@pytest.mark.supabase(ROLES)
def test_readers_of_the_views_get_usage_and_nothing_more(supabase_url: str) -> None:
    """RLS off, anon granted the table: opt5's views are anon's to read, so anon gets USAGE
    on stage4's schema (its RPCs read the views) and still nothing else there."""
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"GRANT SELECT ON {S.qualified_table} TO anon")
        conn.execute(
            "GRANT EXECUTE ON FUNCTION public.contagem_mensal(integer), "
            "public.tile_mvt(integer, integer, integer) TO anon"
        )
        expected = conn.execute("SELECT * FROM public.contagem_mensal(2024)").fetchall()
        before = snapshot.take(conn)
    migrations.upgrade(supabase_url, "opt5")
    usage = "SELECT has_schema_privilege('anon', %s, 'USAGE')"
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        assert conn.execute(usage, (OWN,)).fetchone()[0]
        body = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE oid = 'public.contagem_mensal(integer)'::regprocedure"
        ).fetchone()[0]
        assert agg.monthly(S).qualified in body
        assert _as(conn, "anon", "SELECT * FROM public.contagem_mensal(2024)") == expected
        assert _as(conn, "anon", "SELECT length(public.tile_mvt(8, 94, 145))") != "denied"
        for sql in (
            f"SELECT count(*) FROM {OWN}.{S.table}_p2024",
            f"SELECT count(*) FROM {OWN}.alembic_version",
            f"SELECT * FROM {fp.identity(S).replace('(integer)', '(0)')}",
            f"DELETE FROM {agg.monthly(S).qualified}",
        ):
            assert _as(conn, "anon", sql) == "denied", sql
    migrations.downgrade(supabase_url, "opt4")  # opt1's copy granted the USAGE first
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        assert conn.execute(usage, (OWN,)).fetchone()[0]
    migrations.downgrade(supabase_url, "schema")
    with psycopg.connect(supabase_url) as conn:
        assert not conn.execute(usage, (OWN,)).fetchone()[0]
        assert snapshot.diff(before, snapshot.take(conn)) == []


def _to_public(conn) -> None:
    """The layout an earlier stage4 left: every object of stage4's in public, the RPCs
    reading the views there (Q8 a monthly view, where opt5 now keeps counts)."""
    for stmt in agg.monthly(S).drop_sql():
        conn.execute(stmt)
    for stmt in agg.legacy_monthly(S).create_sql():
        conn.execute(stmt)
    own = conn.execute(
        "SELECT c.relkind::text, c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace "
        "AND c.relkind IN ('r', 'p', 'm') AND c.relname NOT IN ('alembic_version', %s) "
        "ORDER BY 1, 2",
        (OWN, nearest.table(S).split(".")[1]),
    ).fetchall()
    for kind, name in own:
        what = "MATERIALIZED VIEW" if kind == "m" else "TABLE"
        conn.execute(f"ALTER {what} {OWN}.{name} SET SCHEMA public")
    for fn in (fp.identity(S), f"{gis_columns.function(S)}()"):
        conn.execute(f"ALTER FUNCTION {fn} SET SCHEMA public")
    legacy = agg.legacy_bodies(S, S.schema)
    conn.execute(functions.monthly_counts(S, legacy["Q8"]).create_sql())
    conn.execute(functions.tile(S, legacy["Q10"]).create_sql())


@pytest.mark.slow
def test_an_earlier_stage4s_layout_is_named_and_downgrades_exactly(seeded_url: str) -> None:
    with psycopg.connect(seeded_url) as conn:
        before = snapshot.take(conn)
        assert status.strays(conn, S) == []
    migrations.upgrade(seeded_url, "opt5")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        _to_public(conn)
        strays = status.strays(conn, S)
        parts = conn.execute(
            f"SELECT count(*) FROM pg_inherits WHERE inhparent = '{S.qualified_table}'::regclass"
        ).fetchone()[0]
    assert strays[0] == f"{parts} partitions of {S.qualified_table}"
    assert set(strays[1:]) == {
        *(f"public.{v.name}" for v in agg.views(S)),  # (the monthly view is not named)
        f"public.{fp.FUNCTION}(integer)",
        f"public.stage4_{S.table}_gis_columns()",
    }
    shown = CliRunner().invoke(app, ["--database-url", seeded_url, "status"])
    (line,) = [ln for ln in shown.stdout.splitlines() if "made by an earlier stage4" in ln]
    assert line.startswith(f"in public, made by an earlier stage4: {parts} partitions of ")
    assert line.endswith(
        f"`stage4 downgrade --to schema` then `stage4 upgrade` places them in {OWN}"
    )
    migrations.downgrade(seeded_url, "schema")
    with psycopg.connect(seeded_url) as conn:
        assert snapshot.diff(before, snapshot.take(conn)) == []
        assert status.strays(conn, S) == []
