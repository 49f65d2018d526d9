"""opt3: search materialized view behind buscar_geometrias — round trip, same results, RLS."""

from __future__ import annotations

import os

import psycopg

from stage4 import migrations, snapshot

CALL = "SELECT * FROM buscar_geometrias(%s, %s, %s, %s, %s)"
BOXES = [(-47.2, -24.0, -46.2, -23.3), (-46.70, -23.60, -46.60, -23.50)]


def _snap(url):
    with psycopg.connect(url) as conn:
        return snapshot.take(conn)


def _terms(url) -> list[str]:
    with psycopg.connect(url) as conn:
        words = conn.execute(
            "SELECT split_part(nome, ' ', 1) FROM geometrias GROUP BY 1 ORDER BY count(*) DESC "
            "LIMIT 4"
        ).fetchall()
        extra = conn.execute(
            "SELECT split_part(descricao, ' ', 2) FROM geometrias WHERE descricao IS NOT NULL "
            "ORDER BY id LIMIT 3"
        ).fetchall()
    return [w for (w,) in words + extra] + ["Mário de Andrade", "acervo histórico"]


def _results(url, role: str | None = None) -> dict:
    out = {}
    with psycopg.connect(url) as conn:
        if role:
            conn.execute(f"SET ROLE {role}")
        for term in _terms(url):
            for box in BOXES:
                out[(term, box)] = conn.execute(CALL, (term, *box)).fetchall()
    return out


def _setup_roles(url) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for role in ("anon", "authenticated"):
            conn.execute(
                f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
            conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            conn.execute(f"GRANT SELECT ON geometrias TO {role}")
        conn.execute("ALTER TABLE geometrias ENABLE ROW LEVEL SECURITY")
        conn.execute(
            "CREATE POLICY anon_pontos ON geometrias FOR SELECT TO anon "
            "USING (categoria IN ('escola', 'biblioteca', 'parque'))"
        )
        conn.execute(
            "CREATE POLICY auth_todos ON geometrias FOR SELECT TO authenticated USING (true)"
        )


def test_round_trip_and_same_results(seeded_url):
    migrations.upgrade(seeded_url, "opt2")
    before_rows = _results(seeded_url)
    assert sum(len(v) for v in before_rows.values()) > 50
    before = _snap(seeded_url)
    migrations.upgrade(seeded_url, "opt3")
    assert _results(seeded_url) == before_rows
    migrations.downgrade(seeded_url, "opt2")
    after = _snap(seeded_url)
    assert snapshot.diff(before, after) == []
    assert after == before
    migrations.upgrade(seeded_url, "opt3")
    assert migrations.current(seeded_url) == "opt3"


def test_with_rls_the_view_is_private_and_roles_see_the_same_rows(seeded_url):
    migrations.upgrade(seeded_url, "opt2")
    _setup_roles(seeded_url)
    before = {r: _results(seeded_url, r) for r in ("anon", "authenticated")}
    assert before["anon"] != before["authenticated"]
    notes: list[str] = []
    migrations.upgrade(seeded_url, "opt3", notes=notes)
    assert notes == [
        "opt3: public.geometrias has row level security enabled; a materialized view ignores "
        "it, so buscar_geometrias keeps reading the table and the view is readable by its "
        "owner only"
    ]
    with psycopg.connect(seeded_url) as conn:
        grants = conn.execute(
            "SELECT pg_get_userbyid(a.grantee) FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.oid = 'geometrias_busca'::regclass ORDER BY 1"
        ).fetchall()
        body = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'buscar_geometrias'"
        ).fetchone()[0]
    assert [g for (g,) in grants if g != "postgres"] == []
    assert "geometrias_busca" not in body
    for role in ("anon", "authenticated"):
        assert _results(seeded_url, role) == before[role]


def test_refresh_picks_up_new_rows(seeded_url):
    migrations.upgrade(seeded_url, "opt3")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO geometrias (nome, categoria, data_referencia, geom, descricao) VALUES "
            "('Xiloteca Zebulon', 'museu', '2024-03-01', ST_Point(-46.6, -23.5, 4326), 'raro')"
        )
        args = ("zebulon", *BOXES[0])
        assert conn.execute(CALL, args).fetchall() == []
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY geometrias_busca")
        assert [r[1] for r in conn.execute(CALL, args).fetchall()] == ["Xiloteca Zebulon"]


def test_offline_sql():
    sql = migrations.offline_sql("upgrade", "opt2:opt3")
    assert "CREATE MATERIALIZED VIEW public.geometrias_busca" in sql
    assert "CREATE UNIQUE INDEX geometrias_busca_key" in sql
    assert "pg_get_functiondef" in sql
    down = migrations.offline_sql("downgrade", "opt3:opt2")
    assert "DROP MATERIALIZED VIEW IF EXISTS public.geometrias_busca" in down


def test_without_rls_the_view_gets_the_tables_select_grants_only(seeded_url):
    migrations.upgrade(seeded_url, "opt2")
    role = f"leitor_{os.getpid()}"
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role}")
        try:
            conn.execute(f"GRANT SELECT, INSERT ON geometrias TO {role} WITH GRANT OPTION")
            conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {role}")
            migrations.upgrade(seeded_url, "opt3")
            acl = conn.execute(
                "SELECT a.privilege_type, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a "
                "WHERE c.oid = 'geometrias_busca'::regclass AND a.grantee = %s::regrole",
                (role,),
            ).fetchall()
            assert acl == [("SELECT", True)]
            body = conn.execute(
                "SELECT prosrc FROM pg_proc WHERE proname = 'buscar_geometrias'"
            ).fetchone()[0]
            assert "geometrias_busca" in body
        finally:
            conn.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {role}"
            )
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
