"""The whole chain schema → opt5 → schema on a Supabase-style database.

Rows in every year and outside 2020–2028, roles anon / authenticated / service_role,
RLS with policies, grants and comments: at every revision each role gets the same
answers (table and all ten workload queries) as at ``schema``, nothing is granted to
PUBLIC that was not, the RPCs stay SECURITY INVOKER with a fixed search_path, and the
way back down restores the catalog and the data exactly.
"""

from __future__ import annotations

import psycopg
import pytest

from fixtures_supabase import API_ROLES, HAND_GRANTED
from stage4.catalog import snapshot
from stage4.config import settings
from stage4.measure import workload
from stage4.plumbing import migrations

S = settings()
RPCS = ("buscar_geometrias", "contagem_mensal", "tile_mvt")


def _answers(conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    """Per role: fingerprint of the visible table rows and of every workload query."""
    conn.execute("RESET ROLE")
    workload.refresh_materialized_views(conn, S)
    anchors = workload.sample_anchors(conn, S, 42)
    queries = workload.queries(S)
    result: dict[str, dict[str, str]] = {}
    for role in API_ROLES:
        conn.execute(f"SET ROLE {role}")
        fp = workload.Fingerprint()
        fp.add(
            conn.execute(
                f"SELECT id, nome, categoria, {S.time_column} FROM {S.qualified_table} ORDER BY id"
            ).fetchall()
        )
        answers = {"table": fp.hexdigest()}
        for qid, q in queries.items():
            fp = workload.Fingerprint()
            for p in workload.parameters(qid, anchors, workload.FINGERPRINT_SETS, 42, "fp"):
                fp.add(conn.execute(q.sql, p).fetchall(), q.ordered)
            answers[qid] = fp.hexdigest()
        result[role] = answers
        conn.execute("RESET ROLE")
    return result


def _public_grants(conn: psycopg.Connection) -> set[tuple[str, str]]:
    """(object, privilege) granted to PUBLIC in the app schema, defaults included."""
    rows = conn.execute(
        """SELECT c.relname, a.privilege_type FROM pg_class c
           CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
           WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = 0
             AND c.relkind IN ('r', 'p', 'v', 'm')
           UNION
           SELECT p.proname, a.privilege_type FROM pg_proc p
           CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
           WHERE p.pronamespace = 'public'::regnamespace AND a.grantee = 0
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"""
    ).fetchall()
    return set(rows)


@pytest.mark.slow
@pytest.mark.supabase(HAND_GRANTED)
def test_whole_chain_keeps_every_answer_and_comes_back_exactly(supabase_url: str) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        years = conn.execute(
            f"SELECT array_agg(DISTINCT extract(year FROM {S.time_column})::int) "
            f"FROM {S.qualified_table}"
        ).fetchone()[0]
        assert set(range(2020, 2029)) <= set(years)
        assert min(years) < 2020 and max(years) > 2028  # rows outside the partition range
        before = snapshot.take(conn)
        expected = _answers(conn)
        public_before = _public_grants(conn)
    assert expected["anon"]["table"] != expected["service_role"]["table"]  # RLS is in play

    for rev in migrations.chain()[1:]:
        migrations.upgrade(supabase_url, rev)
        with psycopg.connect(supabase_url, autocommit=True) as conn:
            assert _answers(conn) == expected, f"answers changed at {rev}"
            assert _public_grants(conn) <= public_before, f"{rev} granted to PUBLIC"
            rpcs = conn.execute(
                "SELECT proname, prosecdef, proconfig FROM pg_proc "
                "WHERE pronamespace = 'public'::regnamespace AND proname = ANY(%s)",
                (list(RPCS),),
            ).fetchall()
            assert len(rpcs) == 3
            for name, secdef, config in rpcs:
                assert not secdef, f"{name} became SECURITY DEFINER at {rev}"
                assert any(c.startswith("search_path=") for c in config or []), name

    for rev in reversed(migrations.chain()[1:]):
        migrations.downgrade(supabase_url, migrations.previous(rev))
        with psycopg.connect(supabase_url, autocommit=True) as conn:
            assert _answers(conn) == expected, f"answers changed after rolling back {rev}"

    with psycopg.connect(supabase_url, autocommit=True) as conn:
        after = snapshot.take(conn)
    assert snapshot.diff(before, after) == []
