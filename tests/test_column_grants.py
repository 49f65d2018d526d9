"""Column-level grants reach the materialized views, and no step loses a role an RPC.

A Supabase-shaped database with row level security off where anon holds only
``SELECT (id, nome, categoria, data_referencia, geom)`` on the table: every RPC anon
can call at ``schema`` it still calls at opt5, with the same answers, through views
that show it no column the table hides; ``rpc_access`` names a role that loses an RPC.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from conftest import revision
from fixtures_supabase import COLUMN_GRANTS
from stage4.catalog import rpc_access, visibility
from stage4.config import settings
from stage4.ddl import functions, matviews
from stage4.errors import GateError
from stage4.optimisations import aggregates as agg
from stage4.plumbing import migrations
from stage4.rollout import gate

S = settings()
T = S.qualified_table
pytestmark = pytest.mark.supabase(COLUMN_GRANTS)  # RLS off, anon reads five columns
# The probe's calls: a tile over the seed's densest centre, and a year of monthly counts.
CALLS = {
    "tile_mvt": "SELECT public.tile_mvt(8, 94, 145)",
    "contagem_mensal": "SELECT * FROM public.contagem_mensal(2024)",
    "buscar_geometrias": (
        "SELECT * FROM public.buscar_geometrias('escola', -47, -24, -46, -23, 20)"
    ),
}


def _as(conn, role: str, sql: str):
    """``sql``'s rows as ``role``, or the permission error's message."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(f"SET LOCAL ROLE {role}")
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                    for r in conn.execute(sql).fetchall()]  # fmt: skip
    except errors.InsufficientPrivilege as e:
        return str(e).strip()


@pytest.mark.slow
def test_every_rpc_anon_calls_at_schema_it_calls_at_opt5(supabase_url: str) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        assert not conn.execute(f"SELECT relrowsecurity FROM pg_class WHERE oid = '{T}'::regclass").fetchone()[0]  # fmt: skip
        at_schema = {name: _as(conn, "anon", sql) for name, sql in CALLS.items()}
        calls, reach = rpc_access.take(conn, S), visibility.take(conn, S)
    # descricao is not anon's: the search is not, the tile and the counts are
    assert at_schema["buscar_geometrias"].startswith("permission denied for table geometrias")
    callable_ = [n for n, got in at_schema.items() if not isinstance(got, str)]
    assert sorted(callable_) == ["contagem_mensal", "tile_mvt"]
    assert len(at_schema["tile_mvt"][0][0]) > 1000 and at_schema["contagem_mensal"]
    anon = {i.split("(")[0].split(".")[1] for i, e in calls["anon"].items() if e is None}
    assert set(callable_) <= anon and "buscar_geometrias" not in anon
    assert {"resumo_janela", "area_por_categoria", "geometrias_janela"} <= anon  # re-pointed

    migrations.upgrade(supabase_url, "opt5")
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        for fn in (agg.monthly_counts_body(S),):  # the counts-backed body
            assert (
                conn.execute(
                    "SELECT count(*) FROM pg_proc WHERE btrim(prosrc, E' \\n') = %s", (fn.strip(),)
                ).fetchone()[0]
                == 1
            )
        for name in callable_:
            assert _as(conn, "anon", CALLS[name]) == at_schema[name], name
        assert rpc_access.lost(calls, rpc_access.take(conn, S)) == []
        assert visibility.wider(reach, visibility.take(conn, S)) == []


@pytest.mark.slow
def test_a_view_column_is_granted_iff_every_column_it_reveals_is(supabase_url: str) -> None:
    """anon without the date: it reads the tile view's other columns (tile_mvt works), not
    the date, not the monthly view (its rows are counted by date), nothing it lacked."""
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"REVOKE SELECT ({S.time_column}) ON {T} FROM anon")
        tile = _as(conn, "anon", CALLS["tile_mvt"])
    migrations.upgrade(supabase_url, "opt5")
    tv, mv, pv = agg.tiles(S), agg.monthly(S), agg.points(S)
    with psycopg.connect(supabase_url, autocommit=True) as conn:

        def readable(rel: str) -> set[str]:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                    " AND has_column_privilege('anon', attrelid, attnum, 'SELECT')",
                    (rel,),
                )
            }

        assert readable(tv.qualified) == {"id", "nome", "categoria", S.geometry_column, "geom_3857"}
        assert readable(mv.qualified) == set()
        assert readable(pv.qualified) == {"id", "categoria", S.geometry_column}
        assert _as(conn, "anon", CALLS["tile_mvt"]) == tile
        assert _as(conn, "anon", CALLS["contagem_mensal"]).startswith("permission denied")
        for view in agg.views(S):  # the table-level grants are unchanged
            assert not conn.execute(
                "SELECT has_table_privilege('anon', %s, 'SELECT')", (view.qualified,)
            ).fetchone()[0]
            assert conn.execute(
                "SELECT has_table_privilege('authenticated', %s, 'SELECT')", (view.qualified,)
            ).fetchone()[0]


@pytest.mark.slow
def test_grant_option_and_public_column_grants_are_honoured(supabase_url: str) -> None:
    """PUBLIC's column grants count for every role; a grant option travels only where the
    role holds it on every column a view column reveals."""
    g = S.geometry_column
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"REVOKE SELECT (nome) ON {T} FROM anon")
        conn.execute(f"GRANT SELECT (nome) ON {T} TO PUBLIC")
        conn.execute(f"GRANT SELECT (categoria, {g}) ON {T} TO anon WITH GRANT OPTION")
    migrations.upgrade(supabase_url, "opt5")
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        acl = set(
            conn.execute(
                "SELECT at.attname::text, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE "
                "a.grantee::regrole::text END, a.is_grantable FROM pg_attribute at, "
                "aclexplode(at.attacl) a WHERE at.attrelid = %s::regclass",
                (agg.tiles(S).qualified,),
            ).fetchall()
        )
    # nome is PUBLIC's on the table, the geometry anon's: the view's nome is anon's only
    assert ("nome", "anon", False) in acl and not [e for e in acl if e[1] == "PUBLIC"]
    # every tile column also reveals the geometry (the rows' order): categoria needs
    # (categoria, geom), both anon's with the option; id needs id, which is not
    assert ("categoria", "anon", True) in acl and ("geom_3857", "anon", True) in acl
    assert ("id", "anon", False) in acl and ("nome", "anon", True) not in acl


@pytest.mark.slow
def test_the_declared_reveals_name_what_the_views_read(supabase_url: str) -> None:
    """Each view's ``reveals`` covers its columns exactly and names every table column its
    query reads (its rule's dependencies); the catalog fallback gives the same union."""
    migrations.upgrade(supabase_url, "opt5")
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        for view in agg.views(S):
            columns = {
                r[0]
                for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped",
                    (view.qualified,),
                )
            }
            read = {
                r[0]
                for r in conn.execute(
                    """SELECT DISTINCT t.attname FROM pg_rewrite rw
                       JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                       JOIN pg_attribute t ON t.attrelid = d.refobjid AND t.attnum = d.refobjsubid
                       WHERE rw.ev_class = %s::regclass AND d.refobjid = %s::regclass""",
                    (view.qualified, T),
                )
            }
            assert view.reveals is not None and set(view.reveals) == columns, view.name
            assert set().union(*view.reveals.values()) == read, view.name


def test_without_declared_reveals_a_view_column_needs_every_column_the_query_reads(
    supabase_url: str,
) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"CREATE MATERIALIZED VIEW public.nomes AS SELECT id, nome FROM {T} WHERE categoria = 'escola'")  # fmt: skip
        conn.execute(f"CREATE ROLE no_cat_{conn.info.backend_pid} NOLOGIN")
        role = f"no_cat_{conn.info.backend_pid}"
        try:
            conn.execute(f"GRANT SELECT (id, nome) ON {T} TO {role}")
            conn.execute(matviews.grants_sql(T, "public.nomes"))
            got = conn.execute(
                "SELECT grantee::regrole::text, privilege_type FROM pg_attribute at, "
                "aclexplode(at.attacl) a WHERE at.attrelid = 'public.nomes'::regclass "
                "ORDER BY 1, attnum"
            ).fetchall()
            # anon reads id, nome and categoria: both columns; the role lacks categoria
            assert got == [("anon", "SELECT"), ("anon", "SELECT")]
        finally:
            conn.execute("DROP MATERIALIZED VIEW public.nomes")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.slow
def test_with_rls_on_the_views_stay_their_owners(supabase_url: str) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {T} ENABLE ROW LEVEL SECURITY")
        conn.execute(f"CREATE POLICY todos ON {T} FOR SELECT TO anon USING (true)")
        calls = rpc_access.take(conn, S)
    migrations.upgrade(supabase_url, "opt5")
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        for view in (*agg.views(S), agg.monthly(S)):
            assert not conn.execute(
                "SELECT has_any_column_privilege('anon', %s, 'SELECT')", (view.qualified,)
            ).fetchone()[0]
        for fn in (functions.monthly_counts(S), functions.tile(S)):  # the RPCs read the table
            assert (
                conn.execute(
                    "SELECT btrim(prosrc, E' \\n') FROM pg_proc WHERE oid = to_regprocedure(%s)",
                    (fn.identity,),
                ).fetchone()[0]
                == fn.body.strip()
            )
        assert rpc_access.lost(calls, rpc_access.take(conn, S)) == []


# ----------------------------------------------------------------- losing an RPC


def test_a_role_that_loses_an_rpc_is_named_with_it(supabase_url: str) -> None:
    tile = functions.tile(S).identity
    monthly = functions.monthly_counts(S).identity
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        before = rpc_access.take(conn, S)
        assert before["anon"][tile] is None and before["authenticated"][tile] is None
        assert rpc_access.lost(before, rpc_access.take(conn, S)) == []
        conn.execute(f"REVOKE SELECT (nome) ON {T} FROM anon")
        conn.execute(f"REVOKE EXECUTE ON FUNCTION {monthly} FROM authenticated, PUBLIC")
        gone = rpc_access.lost(before, rpc_access.take(conn, S))
    # anon loses every RPC whose body reads nome, and only those
    reads_nome = {"tile_mvt", "geometrias_janela", "geometrias_periodo", "mais_proximas",
                  "dentro_do_raio"}  # fmt: skip
    anon = [fn.identity for fn in functions.baseline(S) if fn.name in reads_nome]
    assert gone == [
        *(f"anon can no longer call {i}: permission denied for table geometrias" for i in anon),
        f"authenticated can no longer call {monthly}: permission denied for function "
        "contagem_mensal",
    ]
    assert tile in anon
    checked, broken = rpc_access.check(supabase_url, S, before)
    assert checked == [] and broken == gone


def test_an_rpc_a_role_could_not_call_before_is_not_counted(supabase_url: str) -> None:
    search = functions.search(S).identity
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        before = rpc_access.take(conn, S)
    assert before["anon"][search].startswith("permission denied for table geometrias")
    checked, broken = rpc_access.check(supabase_url, S, before)
    assert broken == []
    every = [f"{fn.schema}.{fn.name}" for fn in functions.baseline(S)]
    anon = ", ".join(n for n in every if n != "public.buscar_geometrias")
    assert checked == [
        f"RPCs callable as before: anon {anon}; authenticated {', '.join(every)}; "
        f"service_role {', '.join(every)}"
    ]


# ----------------------------------------------------------------- through the gate

LOSES_RPC = revision(
    "loses_rpc",
    "schema",
    'op.execute("REVOKE SELECT (nome) ON public.geometrias FROM anon")',
    'op.execute("GRANT SELECT (nome) ON public.geometrias TO anon")',
)  # anon loses a column its tile RPC reads


@pytest.mark.slow
def test_a_step_that_loses_a_role_an_rpc_is_no_go_naming_both(
    supabase_url: str, chain, tmp_path: Path
) -> None:
    chain(loses_rpc=LOSES_RPC)
    opts = gate.GateOptions(
        backup_dir=tmp_path / "b", reports_dir=tmp_path / "r", iterations=6,
        concurrency=2, duration=1.0,
    )  # fmt: skip
    with pytest.raises(GateError) as no_go:
        gate.upgrade(supabase_url, "loses_rpc", opts)
    assert (
        "promise broken: anon can no longer call public.tile_mvt(integer, integer, integer): "
        "permission denied for table geometrias"
    ) in str(no_go.value)
    assert "contagem_mensal" not in str(no_go.value)  # it reads no nome: still anon's
    assert migrations.current(supabase_url) == "schema"
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        assert not isinstance(_as(conn, "anon", CALLS["tile_mvt"]), str)
