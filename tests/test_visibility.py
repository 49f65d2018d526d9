"""Who can see what, on a database dressed as Supabase dresses it.

Supabase's default privileges (every new table, sequence and function in ``public``
granted to anon, authenticated and service_role) and row level security on the
table with a policy that shows anon only the schools: at every revision schema …
opt5 and back, anon and authenticated read exactly the rows the policy gives them
through every relation in ``public`` and stage4's own schema (each partition and view by
name), write nothing
the policy forbids, service_role keeps what it had; every ACL comes back exactly; a
step that grants anon a view of the table is NO-GO at the gate, naming both.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from conftest import revision
from fixtures_supabase import DEFAULTS, POLICY
from stage4.catalog import snapshot, visibility
from stage4.config import settings
from stage4.errors import GateError
from stage4.optimisations import future_partitions as fp
from stage4.plumbing import migrations
from stage4.rollout import gate

S = settings()
API = ("anon", "authenticated")
OWN_TABLES = tuple(
    f"public.{t}" for t in ("spatial_ref_sys", "geometry_columns", "geography_columns")
)
OWN = S.own_schema  # stage4's partitions, views and routines


def _ids(conn, where: str) -> set[int]:
    return {r[0] for r in conn.execute(f"SELECT id FROM {S.qualified_table} WHERE {where}")}


def _relations(conn) -> dict[str, bool]:
    """Every table, partition, view and materialized view in public and stage4's schema:
    qualified name -> has ``id``."""
    return dict(
        conn.execute(
            """SELECT n.nspname || '.' || c.relname,
                      EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                              AND a.attname = 'id' AND NOT a.attisdropped)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname IN ('public', %s) AND c.relkind IN ('r', 'p', 'v', 'm')
                 AND c.relname <> 'alembic_version' ORDER BY 1""",
            (OWN,),
        ).fetchall()
    )


def _expected_names(rev: str) -> set[str]:
    """The partitions and views revision ``rev`` must have, each checked by name."""
    names = set()
    if rev in ("opt1", "opt2", "opt3", "opt4", "opt5"):
        names |= {f"{OWN}.{S.table}_p{y}" for y in range(S.first_year, S.last_year + 1)}
        names.add(f"{OWN}.{S.table}_default")
    if rev in ("opt4", "opt5"):
        names |= {f"{OWN}.{S.table}_p{y}" for y in range(S.last_year + 1, S.last_year + 4)}
    if rev == "opt5":
        names |= {f"{OWN}.{S.table}_{v}_mv" for v in ("tile", "pontos")}
        names.add(f"{OWN}.{S.table}_mensal")
    return names


def _reads(conn, role: str, relations: dict[str, bool]) -> dict[str, set[int] | str]:
    """What ``role`` reads through each relation: its ids, or "denied"."""
    out: dict[str, set[int] | str] = {}
    for name, has_id in relations.items():
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                if has_id:
                    out[name] = {r[0] for r in conn.execute(f"SELECT id FROM {name}")}
                else:
                    conn.execute(f"SELECT count(*) FROM {name}")
                    out[name] = "readable"
        except errors.InsufficientPrivilege:
            out[name] = "denied"
    return out


def _refused(conn, role: str, sql: str) -> bool:
    """Is ``sql`` refused to ``role`` (by a missing privilege or by a policy)?"""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(f"SET LOCAL ROLE {role}")
            cur = conn.execute(sql)
            return (
                cur.rowcount == 0 if cur.statusmessage.split()[0] in ("UPDATE", "DELETE") else False
            )
    except errors.InsufficientPrivilege:
        return True


def _check_revision(conn, rev: str, allowed: dict[str, set[int]], service_before) -> None:
    relations = _relations(conn)
    missing = _expected_names(rev) - set(relations)
    assert not missing, f"{rev}: {missing} not found"
    partitions = [n for n in relations if re.fullmatch(rf"{OWN}\.{S.table}_(p\d{{4}}|default)", n)]
    for role in API:
        reads = _reads(conn, role, relations)
        assert reads[S.qualified_table] == allowed[role], f"{role} reads other rows at {rev}"
        for name in _expected_names(rev):
            assert reads[name] == "denied", f"{role} reads {name} at {rev}"
        for name, got in reads.items():  # nothing in public shows a row the policy hides
            if isinstance(got, set):
                assert got <= allowed[role], f"{role} reads hidden rows of {name} at {rev}"
            else:  # without ids: only PostGIS's and Alembic's own tables
                assert got == "denied" or name in OWN_TABLES, name
        for name in partitions:
            for sql in (
                f"INSERT INTO {name} (nome, categoria, {S.time_column}, geom) "
                f"VALUES ('x', 'escola', '2024-06-01', ST_Point(-46.6, -23.5, 4326))",
                f"UPDATE {name} SET nome = 'x'",
                f"DELETE FROM {name}",
                f"TRUNCATE {name}",
            ):
                assert _refused(conn, role, sql), f"{role} may run {sql!r} at {rev}"
    # the policy forbids anon every write, authenticated writes before 2024
    assert _refused(conn, "anon", f"UPDATE {S.qualified_table} SET nome = nome")
    assert _refused(conn, "anon", f"DELETE FROM {S.qualified_table}")
    assert _refused(
        conn,
        "authenticated",
        f"DELETE FROM {S.qualified_table} WHERE {S.time_column} < '2024-01-01'",
    )
    unpinned = conn.execute(  # functions stage4 made: a fixed search_path, nothing shadows
        """SELECT p.oid::regprocedure::text FROM pg_proc p
           WHERE p.pronamespace = 'public'::regnamespace
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
             AND NOT coalesce(p.proconfig::text LIKE '%search_path=%', false)"""
    ).fetchall()
    assert unpinned == [], f"{rev}: {unpinned}"
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL ROLE service_role")
        seen = conn.execute(f"SELECT count(*) FROM {S.qualified_table}").fetchone()[0]
    assert seen == len(allowed["service_role"])
    assert visibility.take(conn, S).writes["service_role"] == service_before


def _acls(conn) -> list[tuple]:
    """Every ACL in public (relations, sequences, functions), as PostgreSQL stores it."""
    return conn.execute(
        """SELECT 'rel', c.relname, c.relacl::text FROM pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           UNION ALL
           SELECT 'fn', p.oid::regprocedure::text, p.proacl::text FROM pg_proc p
           WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1, 2"""
    ).fetchall()


@pytest.mark.slow
def test_each_role_reads_what_the_policy_gives_at_every_revision_and_back(supabase_url) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        allowed = {role: _ids(conn, where) for role, where in POLICY.items()}
        assert (
            0 < len(allowed["anon"]) < len(allowed["authenticated"]) < len(allowed["service_role"])
        )
        acls = _acls(conn)
        catalog = snapshot.take(conn)
        reach = visibility.take(conn, S)
        assert reach.roles == ["anon", "authenticated", "service_role"]
        _check_revision(conn, "schema", allowed, reach.writes["service_role"])
    chain = migrations.chain()
    for rev in chain[1:]:
        migrations.upgrade(supabase_url, rev)
        with psycopg.connect(supabase_url, autocommit=True) as conn:
            _check_revision(conn, rev, allowed, reach.writes["service_role"])
            assert visibility.wider(reach, visibility.take(conn, S, since=reach)) == [], rev
    for rev in reversed(chain[1:]):
        back = migrations.previous(rev)
        migrations.downgrade(supabase_url, back)
        with psycopg.connect(supabase_url, autocommit=True) as conn:
            _check_revision(conn, back, allowed, reach.writes["service_role"])
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        assert _acls(conn) == acls  # table, sequence, functions: exactly as before
        assert snapshot.diff(catalog, snapshot.take(conn)) == []
        assert visibility.wider(reach, visibility.take(conn, S, since=reach)) == []


@pytest.mark.slow
@pytest.mark.supabase(DEFAULTS)
def test_identity_sequence_acl_survives_the_round_trip(supabase_url) -> None:
    """The sequence had no ACL of its own (created before the default privileges): the
    rebuilt ones must not pick up the API roles' grants, either way."""
    seq = f"{S.schema}.{S.table}_id_seq"
    sql = "SELECT relacl::text FROM pg_class WHERE oid = %s::regclass"
    owner_only = (
        "SELECT array_agg(DISTINCT a.grantee::regrole::text) FROM pg_class c, "
        "aclexplode(coalesce(c.relacl, acldefault('S', c.relowner))) a WHERE c.oid = %s::regclass"
    )
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        before = conn.execute(sql, (seq,)).fetchone()[0]
        table_before = conn.execute(sql, (S.qualified_table,)).fetchone()[0]
        assert before is None and table_before is None
    migrations.upgrade(supabase_url, "opt1")
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        assert conn.execute(owner_only, (seq,)).fetchone()[0] == ["postgres"]
        assert conn.execute(owner_only.replace("'S'", "'r'"), (S.qualified_table,)).fetchone()[
            0
        ] == ["postgres"]
    migrations.downgrade(supabase_url, "schema")
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        assert conn.execute(owner_only, (seq,)).fetchone()[0] == ["postgres"]
        for role in API:
            assert not conn.execute(
                "SELECT has_sequence_privilege(%s, %s, 'UPDATE')", (role, seq)
            ).fetchone()[0]


@pytest.mark.slow
def test_identity_sequence_acl_is_exact_after_the_round_trip(supabase_url) -> None:
    seq = f"{S.schema}.{S.table}_id_seq"
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"REVOKE UPDATE ON SEQUENCE {seq} FROM anon")  # an ACL of its own
        before = conn.execute(
            "SELECT relacl::text FROM pg_class WHERE oid = %s::regclass", (seq,)
        ).fetchone()[0]
    migrations.upgrade(supabase_url, "opt1")
    migrations.downgrade(supabase_url, "schema")
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        after = conn.execute(
            "SELECT relacl::text FROM pg_class WHERE oid = %s::regclass", (seq,)
        ).fetchone()[0]
    assert after == before
    assert "anon=rU/" in after


# ----------------------------------------------------------------- the promise itself


def test_a_view_granted_to_anon_is_seen_as_wider(supabase_url) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        before = visibility.take(conn, S)
        conn.execute(f"CREATE VIEW public.vazamento AS SELECT id, nome FROM {S.qualified_table}")
        hidden = conn.execute(
            f"SELECT count(*) FROM {S.qualified_table} WHERE NOT ({POLICY['anon']})"
        ).fetchone()[0]
        widened = visibility.wider(before, visibility.take(conn, S))
    # Supabase's default privileges gave the new view to every API role
    assert (
        f"anon can read {hidden} rows through public.vazamento that public.geometrias hides "
        "from it (0 before)"
    ) in widened
    assert "anon can now INSERT on public.vazamento" in widened
    assert any(w.startswith("authenticated can read ") for w in widened)
    assert not any(w.startswith("service_role can read") for w in widened)  # it sees them all


def test_a_materialized_view_is_counted_for_each_role_by_its_own_policy(supabase_url) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        before = visibility.take(conn, S)
        conn.execute(f"CREATE MATERIALIZED VIEW public.copia AS SELECT id FROM {S.qualified_table}")
        hidden = {
            role: conn.execute(
                f"SELECT count(*) FROM {S.qualified_table} WHERE NOT ({POLICY[role]})"
            ).fetchone()[0]
            for role in API
        }
        widened = visibility.wider(before, visibility.take(conn, S))
    assert hidden["anon"] != hidden["authenticated"]
    for role in API:
        assert (
            f"{role} can read {hidden[role]} rows through public.copia that public.geometrias "
            "hides from it (0 before)"
        ) in widened


def test_a_disabled_policy_and_a_definer_function_are_seen_as_wider(supabase_url) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        before = visibility.take(conn, S)
        conn.execute(f"ALTER TABLE {S.qualified_table} DISABLE ROW LEVEL SECURITY")
        conn.execute(
            "CREATE FUNCTION public.apaga() RETURNS void LANGUAGE sql SECURITY DEFINER "
            f"SET search_path = pg_catalog AS 'DELETE FROM {S.qualified_table}'"
        )
        widened = visibility.wider(before, visibility.take(conn, S, since=before))
        hidden = conn.execute(
            f"SELECT count(*) FROM {S.qualified_table} WHERE NOT ({POLICY['anon']})"
        ).fetchone()[0]
    assert (
        f"anon can read {hidden} rows of public.geometrias that its row level security did "
        "not show it before (the old policies evaluated on the rows it reads now)"
    ) in widened
    assert "anon can now EXECUTE on SECURITY DEFINER function public.apaga()" in widened
    assert not any(w.startswith("service_role reads") for w in widened)


def _ids_all(url: str) -> set[int]:
    with psycopg.connect(url) as conn:
        return _ids(conn, "true")


def test_an_unchanged_database_is_not_wider_and_a_narrower_one_neither(supabase_url) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        before = visibility.take(conn, S)
        assert visibility.wider(before, visibility.take(conn, S)) == []
        conn.execute(f"REVOKE ALL ON {S.qualified_table} FROM anon")
        assert visibility.wider(before, visibility.take(conn, S)) == []


def test_rows_the_app_writes_meanwhile_are_judged_by_the_same_rule(supabase_url) -> None:
    """Rows inserted (some the policy shows anon, some not) and deleted between the two
    takes: what anon reads moved, its rule did not."""
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        before = visibility.take(conn, S)
        for categoria in ("escola", "parque", "escola"):
            conn.execute(
                f"INSERT INTO {S.qualified_table} (nome, categoria, {S.time_column}, geom) "
                f"VALUES ('app', %s, '2025-03-01', ST_Point(-46.6, -23.5, 4326))",
                (categoria,),
            )
        conn.execute(
            f"DELETE FROM {S.qualified_table} WHERE id IN (SELECT id FROM {S.qualified_table} "
            f"WHERE {POLICY['anon']} ORDER BY id LIMIT 1)"
        )
        after = visibility.take(conn, S, since=before)
    assert after.reads[("anon", S.qualified_table)] != before.reads[("anon", S.qualified_table)]
    assert after.rules == before.rules
    assert visibility.wider(before, after) == []


def test_a_row_the_app_deleted_from_a_table_without_rls_is_not_hidden(supabase_url) -> None:
    """Without RLS anon reads the whole table: an id a materialized view still holds after
    the app deleted its row is not one the table hides from anon."""
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {S.qualified_table} DISABLE ROW LEVEL SECURITY")
        conn.execute(f"CREATE MATERIALIZED VIEW public.copia AS SELECT id FROM {S.qualified_table}")
        before = visibility.take(conn, S)
        conn.execute(
            f"DELETE FROM {S.qualified_table} WHERE id = (SELECT min(id) FROM public.copia)"
        )
        after = visibility.take(conn, S, since=before)
    assert after.reads[("anon", "public.copia")] == visibility.Read(
        len(_ids_all(supabase_url)) + 1, 0
    )
    assert visibility.wider(before, after) == []


def test_a_permissive_policy_added_is_wider_by_its_rows(supabase_url) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        before = visibility.take(conn, S)
        conn.execute(
            f"CREATE POLICY anon_parques ON {S.qualified_table} FOR SELECT TO anon "
            "USING (categoria = 'parque')"
        )
        parques = conn.execute(
            f"SELECT count(*) FROM {S.qualified_table} WHERE categoria = 'parque'"
        ).fetchone()[0]
        after = visibility.take(conn, S, since=before)
        # a policy that shows nothing new is a changed rule, not a wider one
        conn.execute(f"DROP POLICY anon_parques ON {S.qualified_table}")
        conn.execute(
            f"CREATE POLICY anon_escolas_2 ON {S.qualified_table} FOR SELECT TO anon "
            "USING (categoria = 'escola' AND id > 0)"
        )
        same_rows = visibility.take(conn, S, since=before)
    assert parques > 0
    assert after.beyond == {"anon": parques}
    assert visibility.wider(before, after) == [
        f"anon can read {parques} rows of public.geometrias that its row level security did "
        "not show it before (the old policies evaluated on the rows it reads now)"
    ]
    assert same_rows.beyond == {"anon": 0}
    assert visibility.wider(before, same_rows) == []


def test_a_column_granted_is_wider(supabase_url) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"REVOKE SELECT ON {S.qualified_table} FROM anon")
        conn.execute(f"GRANT SELECT (id, nome, categoria) ON {S.qualified_table} TO anon")
        before = visibility.take(conn, S)
        conn.execute(f"GRANT SELECT (descricao) ON {S.qualified_table} TO anon")
        widened = visibility.wider(before, visibility.take(conn, S, since=before))
    assert widened == ["anon can now read column descricao of public.geometrias"]


def test_an_old_rule_that_cannot_be_evaluated_is_not_a_proof(supabase_url) -> None:
    """The old policy called a function the step dropped: its rows cannot be compared, so
    the promise is not proved kept, and the reason says why."""
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION public.e_escola(c text) RETURNS boolean LANGUAGE sql IMMUTABLE "
            "SET search_path = pg_catalog AS $$SELECT c = 'escola'$$"
        )
        conn.execute(f"DROP POLICY anon_escolas ON {S.qualified_table}")
        conn.execute(
            f"CREATE POLICY anon_escolas ON {S.qualified_table} FOR SELECT TO anon "
            "USING (public.e_escola(categoria))"
        )
        before = visibility.take(conn, S)
        conn.execute(f"DROP POLICY anon_escolas ON {S.qualified_table}")
        conn.execute("DROP FUNCTION public.e_escola(text)")
        conn.execute(
            f"CREATE POLICY anon_escolas ON {S.qualified_table} FOR SELECT TO anon "
            f"USING ({POLICY['anon']})"
        )
        widened = visibility.wider(before, visibility.take(conn, S, since=before))
    assert widened == [
        "anon's row level security on public.geometrias changed and the old policies cannot "
        "be evaluated now (function e_escola(text) does not exist)"
    ]


def test_a_configured_role_is_checked(supabase_url) -> None:
    from dataclasses import replace

    s = replace(S, api_roles=("web_anon_vis",))
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS web_anon_vis")
        conn.execute("CREATE ROLE web_anon_vis NOLOGIN")
        try:
            before = visibility.take(conn, s)
            assert before.roles == ["anon", "authenticated", "service_role", "web_anon_vis"]
            conn.execute(f"GRANT SELECT ON {S.qualified_table} TO web_anon_vis")
            # RLS and no policy for it: a grant alone shows it no row
            assert visibility.wider(before, visibility.take(conn, s)) == []
            conn.execute(
                f"CREATE POLICY web ON {S.qualified_table} FOR SELECT TO web_anon_vis USING (true)"
            )
            widened = visibility.wider(before, visibility.take(conn, s))
            assert widened == [
                f"web_anon_vis can now read {len(_ids_all(supabase_url))} rows of public.geometrias"
            ]
        finally:
            conn.execute("DROP OWNED BY web_anon_vis")
            conn.execute("DROP ROLE web_anon_vis")


# ----------------------------------------------------------------- through the gate

LEAKY = revision(
    "leaky",
    "schema",
    """
    op.execute("CREATE VIEW public.geometrias_vazada AS SELECT id, nome, categoria "
               "FROM public.geometrias")
    op.execute("REVOKE ALL ON public.geometrias_vazada FROM authenticated, service_role")
    op.execute("GRANT SELECT ON public.geometrias_vazada TO anon")
    """,
    'op.execute("DROP VIEW public.geometrias_vazada")',
)  # a view of the table, granted to anon


@pytest.mark.slow
def test_a_leaky_step_is_no_go_naming_the_role_and_the_view(
    supabase_url, chain, tmp_path: Path
) -> None:
    chain(leaky=LEAKY)
    with psycopg.connect(supabase_url) as conn:
        hidden = conn.execute(
            f"SELECT count(*) FROM {S.qualified_table} WHERE NOT ({POLICY['anon']})"
        ).fetchone()[0]
        before = snapshot.take(conn)
    opts = gate.GateOptions(
        backup_dir=tmp_path / "b",
        reports_dir=tmp_path / "r",
        iterations=6,
        concurrency=2,
        duration=1.0,
    )
    with pytest.raises(GateError) as no_go:
        gate.upgrade(supabase_url, "leaky", opts)
    reason = (
        f"promise broken: anon can read {hidden} rows through public.geometrias_vazada that "
        "public.geometrias hides from it (0 before)"
    )
    assert str(no_go.value).startswith(f"NO-GO at leaky: {reason}")
    assert "the database is back exactly as before" in str(no_go.value)
    assert migrations.current(supabase_url) == "schema"
    with psycopg.connect(supabase_url) as conn:
        assert snapshot.diff(before, snapshot.take(conn)) == []


@pytest.mark.slow
def test_a_step_that_widens_nothing_records_what_was_checked(supabase_url, tmp_path: Path) -> None:
    opts = gate.GateOptions(
        backup_dir=tmp_path / "b",
        reports_dir=tmp_path / "r",
        gate=False,
        iterations=6,
        concurrency=2,
        duration=1.0,
    )
    rollout = gate.upgrade(supabase_url, "opt1", opts)
    step = rollout.steps[-1]
    assert step.revision == "opt1"
    assert not [r for r in step.reasons if r.startswith("promise broken")]
    assert (
        "who can see what: anon, authenticated, service_role read and write no more than "
        "before" in " ".join(step.verified)
    )


def test_a_partition_the_cron_command_creates_is_its_owners_only(supabase_url: str) -> None:
    """The command opt4 schedules, run as pg_cron runs it: a session of its own with the
    server's defaults (no lock_timeout, no role), under Supabase's default privileges.
    (Waiting for pg_cron itself is not reliable here: the test fixtures drop and recreate
    its database, and pg_cron 1.4's scheduler does not come back after that.)"""
    migrations.upgrade(supabase_url, "opt4")
    year = S.last_year + S.years_ahead  # the newest partition the upgrade made
    part = f"{OWN}.{S.table}_p{year}"
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {S.qualified_table} DETACH PARTITION {part}")
        conn.execute(f"DROP TABLE {part}")
        # default privileges in stage4's schema too (one a user might add): still owner-only
        conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {OWN} GRANT ALL ON TABLES "
            "TO anon, authenticated, service_role"
        )
    with psycopg.connect(supabase_url, autocommit=True) as cron_session:
        made = cron_session.execute(fp.command(S)).fetchall()
    assert made == [((f"{S.table}_p{year}", "0"),)]
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        grantees, rls = conn.execute(
            "SELECT array_agg(DISTINCT a.grantee::regrole::text), bool_and(c.relrowsecurity) "
            "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s::regclass",
            (part,),
        ).fetchone()
        owner = conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass",
            (S.qualified_table,),
        ).fetchone()[0]
        assert grantees == [owner]
        assert rls is True
        for role in API:
            assert _refused(conn, role, f"SELECT * FROM {part}")
            assert _refused(conn, role, f"DELETE FROM {part}")


def test_a_view_open_before_the_step_is_said_not_blamed(supabase_url, tmp_path: Path) -> None:
    """A view that shows anon hidden rows before a step (say RLS was enabled after it was
    granted): the step is not blamed for it, and the record says it is open."""
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        conn.execute(f"CREATE VIEW public.antiga AS SELECT id FROM {S.qualified_table}")
        conn.execute("REVOKE ALL ON public.antiga FROM authenticated, service_role")
        hidden = conn.execute(
            f"SELECT count(*) FROM {S.qualified_table} WHERE NOT ({POLICY['anon']})"
        ).fetchone()[0]
    before = visibility.at(supabase_url, S)
    checked, widened = visibility.check(supabase_url, S, before)
    assert widened == []
    assert checked[1:] == [
        f"already before this step: anon reads {hidden} rows through public.antiga that "
        "public.geometrias hides from it"
    ]
