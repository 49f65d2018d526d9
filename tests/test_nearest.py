"""opt1's nearest-features copy: the rows of the reads it serves (Q6, Q7, Q9) the same at every
revision, the copy kept by every write, each role reading through it only what it reads in
the table."""

from __future__ import annotations

import psycopg
import pytest

from fixtures_supabase import ANON_COLUMNS, DEFAULTS, POLICY, T
from stage4.config import settings
from stage4.ddl import functions, nearest
from stage4.plumbing import migrations
from stage4.queries import base_sql

S = settings()
CALLS = {q: functions.call_sql(functions.read(S, q)) for q in nearest.SERVES}
PARAMS = {
    "Q6": [
        {"lon": -46.63, "lat": -23.55, "k": 10},
        {"lon": -46.9, "lat": -23.8, "k": 3},
        {"lon": -45.0, "lat": -22.0, "k": 25},
    ],
    "Q7": [
        {"lon": -46.63, "lat": -23.55, "radius_m": 2000.0},
        {"lon": -46.6, "lat": -23.58, "radius_m": 800.0},
    ],
    "Q9": [
        {"cat_point": c, "cat_poly": p, "min_lon": -47.0, "min_lat": -24.0}
        | {"max_lon": -46.0, "max_lat": -23.0}
        for c, p in (("escola", "bairro"), ("biblioteca", "parque"), ("hospital", "lote"))
    ],
}
COPY_ROWS = f"SELECT id, {S.time_column}, md5({S.geometry_column}::text) FROM {{}} ORDER BY 1, 2"


def _read(url: str, role: str | None = None, sql: str | None = None, qid: str = "Q6"):
    """The rows of each parameter set of ``qid``: the app's call, or ``sql``."""
    with psycopg.connect(url) as conn:
        if role:
            conn.execute(f"SET ROLE {role}")
        return [conn.execute(sql or CALLS[qid], p).fetchall() for p in PARAMS[qid]]


def _q6(url: str, role: str | None = None, sql: str | None = None) -> list[list[tuple]]:
    return _read(url, role, sql, "Q6")


def _copy_matches(conn) -> bool:
    table = conn.execute(COPY_ROWS.format(S.qualified_table)).fetchall()
    return table == conn.execute(COPY_ROWS.format(nearest.table(S))).fetchall()


@pytest.mark.slow
def test_the_reads_it_serves_return_the_same_rows_through_the_copy_and_without_it(seeded_url):
    at_schema = {q: _read(seeded_url, qid=q) for q in nearest.SERVES}
    assert all(any(at_schema[q]) for q in nearest.SERVES)  # rows to compare
    migrations.upgrade(seeded_url, "opt1")
    with psycopg.connect(seeded_url) as conn:
        for q in nearest.SERVES:
            body = conn.execute(
                "SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(%s)",
                (functions.read(S, q).identity,),
            ).fetchone()[0]
            assert nearest.table(S) in body, q  # re-pointed
        assert _copy_matches(conn)
    for q in nearest.SERVES:
        assert _read(seeded_url, qid=q) == at_schema[q]
        assert _read(seeded_url, sql=base_sql(S)[q], qid=q) == at_schema[q]
    migrations.upgrade(seeded_url, "opt5")
    assert all(_read(seeded_url, qid=q) == at_schema[q] for q in nearest.SERVES)
    migrations.downgrade(seeded_url, "schema")
    with psycopg.connect(seeded_url) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (nearest.table(S),)).fetchone()[0] is None
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgname LIKE %s", (nearest.trigger(S) + "%",)
            ).fetchone()[0]
            == 0
        )
    assert all(_read(seeded_url, qid=q) == at_schema[q] for q in nearest.SERVES)


@pytest.mark.slow
def test_every_write_keeps_the_copy_in_step(seeded_url):
    migrations.upgrade(seeded_url, "opt4")  # writes into opt4's future partitions too
    t, d, g = S.qualified_table, S.time_column, S.geometry_column
    with psycopg.connect(seeded_url) as conn:
        conn.execute(
            f"INSERT INTO {t} (nome, categoria, {d}, {g}) VALUES "
            f"('novo', 'escola', '2031-05-01', ST_SetSRID(ST_MakePoint(-46.6, -23.5), 4326))"
        )
        conn.execute(f"UPDATE {t} SET {g} = ST_Translate({g}, 0.01, 0) WHERE id % 7 = 0")
        conn.execute(f"UPDATE {t} SET {d} = {d} + 400 WHERE id % 11 = 0")  # another partition
        conn.execute(f"UPDATE {t} SET nome = nome || '!' WHERE id % 5 = 0")  # not watched
        conn.execute(f"DELETE FROM {t} WHERE id % 13 = 0")
        assert _copy_matches(conn)
        conn.commit()
    assert _q6(seeded_url) == _q6(seeded_url, sql=base_sql(S)["Q6"])
    with psycopg.connect(seeded_url) as conn:
        conn.execute(f"TRUNCATE {t}")
        assert conn.execute(f"SELECT count(*) FROM {nearest.table(S)}").fetchone()[0] == 0


@pytest.mark.slow
def test_anon_reads_through_the_copy_only_what_its_policy_shows(supabase_url):
    """Supabase's defaults and policies: anon's reads through it are the same at schema and opt1;
    read directly, the copy shows anon only its policy's rows, and nothing is writable."""
    at_schema = {q: _read(supabase_url, "anon", qid=q) for q in nearest.SERVES}
    migrations.upgrade(supabase_url, "opt1")
    assert {q: _read(supabase_url, "anon", qid=q) for q in nearest.SERVES} == at_schema
    k = nearest.table(S)
    with psycopg.connect(supabase_url) as conn:
        visible = conn.execute(f"SELECT count(*) FROM {T} WHERE {POLICY['anon']}").fetchone()[0]
        conn.execute("SET ROLE anon")
        assert conn.execute(f"SELECT count(*) FROM {k}").fetchone()[0] == visible
        for write in (f"DELETE FROM {k}", f"UPDATE {k} SET id = id", f"TRUNCATE {k}"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(write)


@pytest.mark.slow
@pytest.mark.supabase(
    DEFAULTS + f"GRANT SELECT (id, nome, categoria) ON {T} TO anon;\n"
    f"GRANT SELECT ({ANON_COLUMNS}) ON {T} TO authenticated;\n"
    f"GRANT EXECUTE ON FUNCTION {functions.read(S, 'Q6').identity} TO anon, authenticated;\n"
)
def test_the_copy_is_granted_only_to_roles_that_read_its_columns(supabase_url):
    """authenticated reads id, date and geometry: it reads the copy. anon reads neither
    the geometry nor the date: no grant, no USAGE, and its call fails as it did before."""
    migrations.upgrade(supabase_url, "opt1")
    k = nearest.table(S)
    with psycopg.connect(supabase_url) as conn:
        can = "SELECT has_table_privilege(%s, %s, 'SELECT'), has_schema_privilege(%s, %s, 'USAGE')"
        assert conn.execute(
            can, ("authenticated", k, "authenticated", S.own_schema)
        ).fetchone() == (
            True,
            True,
        )
        assert conn.execute(can, ("anon", k, "anon", S.own_schema)).fetchone() == (False, False)
    assert _q6(supabase_url, "authenticated") == _q6(supabase_url)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _q6(supabase_url, "anon")
    migrations.downgrade(supabase_url, "schema")
    with psycopg.connect(supabase_url) as conn:
        usage = "SELECT has_schema_privilege('authenticated', %s, 'USAGE')"
        assert conn.execute(usage, (S.own_schema,)).fetchone()[0] is False
