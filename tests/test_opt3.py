"""opt3: the search index behind buscar_geometrias — same results, fresh, exact round trip."""

from __future__ import annotations

import psycopg
import pytest

from stage4.catalog import snapshot, verify
from stage4.config import settings
from stage4.errors import Stage4Error
from stage4.optimisations import search_matview
from stage4.plumbing import migrations
from stage4.rollout import gate

S = settings()
CALL = "SELECT * FROM buscar_geometrias(%s, %s, %s, %s, %s)"
BOXES = [(-47.2, -24.0, -46.2, -23.3), (-46.70, -23.60, -46.60, -23.50)]
INDEX = search_matview.index(S)


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


def _function(url) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT l.lanname, p.proconfig, p.prosrc FROM pg_proc p "
            "JOIN pg_language l ON l.oid = p.prolang WHERE p.proname = 'buscar_geometrias'"
        ).fetchone()


def _busca_indexes(url) -> list[tuple[str, bool]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_class c JOIN pg_index i "
            "ON i.indexrelid = c.oid WHERE c.relname LIKE %s ORDER BY 1",
            (f"%{INDEX.name.removeprefix(S.table)}",),
        ).fetchall()


def _acl_and_comment(url) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT proacl::text[], obj_description(oid, 'pg_proc') FROM pg_proc "
            "WHERE proname = 'buscar_geometrias'"
        ).fetchone()


@pytest.mark.slow
def test_round_trip_same_results_and_the_index_on_every_partition(seeded_url):
    migrations.upgrade(seeded_url, "opt2")
    before_rows = _results(seeded_url)
    assert sum(len(v) for v in before_rows.values()) > 50
    with psycopg.connect(seeded_url) as conn:
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass",
            (S.qualified_table,),
        ).fetchone()[0]
        conn.execute("COMMENT ON FUNCTION buscar_geometrias IS 'the search of the app'")
        conn.execute("REVOKE EXECUTE ON FUNCTION buscar_geometrias FROM PUBLIC")
        conn.commit()
    access = _acl_and_comment(seeded_url)
    assert access == (["postgres=X/postgres"], "the search of the app")
    before = _snap(seeded_url)
    migrations.upgrade(seeded_url, "opt3")
    assert _results(seeded_url) == before_rows
    assert _acl_and_comment(seeded_url) == access
    indexes = _busca_indexes(seeded_url)
    assert len(indexes) == partitions + 1 and all(valid for _, valid in indexes)
    language, config, _ = _function(seeded_url)
    assert language == "plpgsql" and "plan_cache_mode=force_custom_plan" in config
    assert verify.revision(seeded_url, S, "opt3")[1] == []
    migrations.downgrade(seeded_url, "opt2")
    after = _snap(seeded_url)
    assert snapshot.diff(before, after) == []
    assert after == before
    assert _busca_indexes(seeded_url) == []
    assert _acl_and_comment(seeded_url) == access
    migrations.upgrade(seeded_url, "opt3")
    assert migrations.current(seeded_url) == "opt3"


@pytest.mark.slow
def test_the_search_plans_use_the_index(seeded_url):
    migrations.upgrade(seeded_url, "opt3")
    with psycopg.connect(seeded_url) as conn:
        conn.execute("LOAD 'auto_explain'")
        for setting in ("log_min_duration = 0", "log_nested_statements = on",
                        "log_level = notice"):  # fmt: skip
            conn.execute(f"SET auto_explain.{setting}")
        conn.execute("SET enable_seqscan = off")  # 2,000 rows: a scan could win on cost
        plans: list[str] = []
        conn.add_notice_handler(lambda n: plans.append(n.message_primary))
        conn.execute(CALL, ("escola", *BOXES[1])).fetchall()
    assert any(INDEX.name.removeprefix(S.table) in p for p in plans), plans


@pytest.mark.slow
def test_a_row_written_is_found_by_the_next_search(seeded_url):
    migrations.upgrade(seeded_url, "opt3")
    args = ("zebulon", *BOXES[0])
    with (
        psycopg.connect(seeded_url, autocommit=True) as writer,
        psycopg.connect(seeded_url, autocommit=True) as app,
    ):
        assert app.execute(CALL, args).fetchall() == []
        (new,) = writer.execute(
            "INSERT INTO geometrias (nome, categoria, data_referencia, geom, descricao) VALUES "
            "('Xiloteca Zebulon', 'museu', '2024-03-01', ST_Point(-46.6, -23.5, 4326), 'raro') "
            "RETURNING id"
        ).fetchone()
        assert [r[:2] for r in app.execute(CALL, args).fetchall()] == [(new, "Xiloteca Zebulon")]
        writer.execute("UPDATE geometrias SET nome = 'Xiloteca Yara' WHERE id = %s", (new,))
        assert app.execute(CALL, args).fetchall() == []
        assert [r[1] for r in app.execute(CALL, ("yara", *BOXES[0])).fetchall()] == [
            "Xiloteca Yara"
        ]
        writer.execute("DELETE FROM geometrias WHERE id = %s", (new,))
        assert app.execute(CALL, ("yara", *BOXES[0])).fetchall() == []


@pytest.mark.slow
def test_nothing_new_in_public_and_rls_applies_as_before(seeded_url):
    migrations.upgrade(seeded_url, "opt2")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
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
        relations = "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        relations += "AND relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1"
        listed = conn.execute(relations).fetchall()
    before = {r: _results(seeded_url, r) for r in ("anon", "authenticated")}
    assert before["anon"] != before["authenticated"]
    notes: list[str] = []
    migrations.upgrade(seeded_url, "opt3", notes=notes)
    assert notes == []
    for role in ("anon", "authenticated"):
        assert _results(seeded_url, role) == before[role]
    with psycopg.connect(seeded_url) as conn:
        assert conn.execute(relations).fetchall() == listed


@pytest.mark.slow
def test_the_apps_own_search_body_is_kept_and_said(seeded_url):
    migrations.upgrade(seeded_url, "opt2")
    fn = search_matview.functions.search(S)
    own = fn.body.replace("LIMIT limite", "LIMIT limite + 0")
    with psycopg.connect(seeded_url) as conn:
        conn.execute(search_matview.functions.search(S, source=own).create_sql())
        conn.commit()
    kept = _function(seeded_url)
    notes: list[str] = []
    migrations.upgrade(seeded_url, "opt3", notes=notes)
    assert notes == [
        "opt3: buscar_geometrias is the app's own (not the baseline body): kept as it is; it "
        f"uses {INDEX.qualified} only where it filters by the same expression"
    ]
    assert _function(seeded_url) == kept
    assert verify.revision(seeded_url, S, "opt3")[1] == []
    migrations.downgrade(seeded_url, "opt2")
    assert _function(seeded_url) == kept


@pytest.mark.slow
def test_an_index_of_the_same_name_is_refused(seeded_url):
    migrations.upgrade(seeded_url, "opt2")
    with psycopg.connect(seeded_url) as conn:
        conn.execute(f"CREATE INDEX {INDEX.name} ON ONLY {S.qualified_table} (nome)")
        conn.commit()
    before = _snap(seeded_url)
    with pytest.raises(Stage4Error) as e:
        migrations.upgrade(seeded_url, "opt3")
    assert str(e.value) == (
        f"{S.qualified_table} already has an index named {INDEX.name} that stage4 did not "
        "create: rename or drop it first"
    )
    assert migrations.current(seeded_url) == "opt2"
    assert snapshot.diff(before, _snap(seeded_url)) == []


@pytest.mark.slow
def test_a_failed_build_leaves_nothing_and_a_killed_one_resumes(seeded_url):
    migrations.upgrade(seeded_url, "opt2")
    sub = f"{S.schema}.{S.table}_p2040"
    with psycopg.connect(seeded_url) as conn:  # a partition the build refuses
        conn.execute(
            f"CREATE TABLE {sub} PARTITION OF {S.qualified_table} "
            f"FOR VALUES FROM ('2040-01-01') TO ('2041-01-01') PARTITION BY RANGE (id)"
        )
        conn.commit()
    with pytest.raises(Stage4Error) as e:
        migrations.upgrade(seeded_url, "opt3")
    assert "is itself partitioned" in str(e.value)
    assert migrations.current(seeded_url) == "opt2"
    assert _busca_indexes(seeded_url) == []
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {sub}")
        # what a build killed after its first partition leaves: the parent's index, invalid,
        # one partition's attached, another's invalid (as a killed CONCURRENTLY leaves it)
        conn.execute(f"CREATE INDEX {INDEX.name} ON ONLY {S.qualified_table} USING {INDEX.using}")
        conn.execute(INDEX.comment_sql())
        first, second = conn.execute(
            "SELECT quote_ident(c.relname) FROM pg_inherits p JOIN pg_class c "
            "ON c.oid = p.inhrelid WHERE p.inhparent = %s::regclass ORDER BY 1 LIMIT 2",
            (S.qualified_table,),
        ).fetchall()
        name, qualified = INDEX.leaf_index(S.own_schema, first[0])
        conn.execute(f"CREATE INDEX {name} ON {S.own_schema}.{first[0]} USING {INDEX.using}")
        conn.execute(f"ALTER INDEX {INDEX.qualified} ATTACH PARTITION {qualified}")
        name, qualified = INDEX.leaf_index(S.own_schema, second[0])
        conn.execute(f"CREATE INDEX {name} ON {S.own_schema}.{second[0]} (nome)")
        conn.execute(
            f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{qualified}'::regclass"
        )
    migrations.upgrade(seeded_url, "opt3")
    indexes = _busca_indexes(seeded_url)
    assert indexes and all(valid for _, valid in indexes)
    assert verify.revision(seeded_url, S, "opt3")[1] == []


def test_offline_sql():
    sql = migrations.offline_sql("upgrade", "opt2:opt3")
    assert f"CREATE INDEX {INDEX.name} ON {S.qualified_table} USING gin" in sql
    assert "pg_get_functiondef" in sql and "LANGUAGE plpgsql" in sql
    down = migrations.offline_sql("downgrade", "opt3:opt2")
    assert f"DROP INDEX IF EXISTS {INDEX.qualified}" in down


@pytest.mark.slow
def test_the_gate_takes_opt3_without_accepting_staleness(seeded_url, tmp_path):
    # wide timing margins (2,000 rows, a shared machine): freshness is under test here
    opts = gate.GateOptions(backup_dir=tmp_path / "b", reports_dir=tmp_path / "r",
                            threshold=1.0, min_delta_ms=25, iterations=6, concurrency=2,
                            duration=1.0)  # fmt: skip
    assert opts.accept_stale is False
    rollout = gate.upgrade(seeded_url, "opt3", opts)
    assert [s.verdict for s in rollout.steps] == ["GO"] * 3, [s.reasons for s in rollout.steps]
    assert all(v["fresh"] for v in rollout.steps[-1].freshness.values())
    assert migrations.current(seeded_url) == "opt3"
