"""opt2: stored area/bbox columns and lz4 storage — round trip, correctness, variants."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from fixtures_supabase import ROLES
from stage4.catalog import snapshot
from stage4.config import settings
from stage4.ddl import functions
from stage4.errors import MigrationError
from stage4.optimisations import gis_columns
from stage4.plumbing import migrations
from stage4.queries import base_sql

S = settings()
VIEWPORTS = [
    (-46.70, -23.60, -46.60, -23.50),
    (-46.645, -23.56, -46.625, -23.54),
    (-47.2, -24.0, -46.2, -23.3),
    (-47.15, -23.95, -47.05, -23.85),
    (-46.80, -23.70, -46.50, -23.40),
]


def _snap(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return snapshot.take(conn)


def _round_trip(url: str) -> None:
    before = _snap(url)
    migrations.upgrade(url, "opt2")
    assert _snap(url) != before
    migrations.downgrade(url, "opt1")
    after = _snap(url)
    assert snapshot.diff(before, after) == []
    assert after == before
    migrations.upgrade(url, "opt2")
    assert migrations.current(url) == "opt2"


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)
    return a == b


def _same(a: list, b: list) -> bool:
    a, b = sorted(a, key=repr), sorted(b, key=repr)
    return len(a) == len(b) and all(
        all(_close(x, y) for x, y in zip(ra, rb, strict=True)) for ra, rb in zip(a, b, strict=True)
    )


class TestRoundTrip:
    @pytest.mark.slow
    def test_partitioned_table(self, seeded_url):
        """After opt1 the table is partitioned: columns and settings cascade to partitions."""
        migrations.upgrade(seeded_url, "opt1")
        _round_trip(seeded_url)
        with psycopg.connect(seeded_url) as conn:
            rows = conn.execute(
                "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
                "a.attgenerated, a.attcompression::text FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname LIKE 'geometrias_p20%%' "
                "AND a.attname IN ('area_m2', 'descricao') ORDER BY 1, 2"
            ).fetchall()
            triggers = conn.execute(
                "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE c.relname LIKE 'geometrias_p20%%' AND t.tgname = %s AND t.tgparentid <> 0",
                (gis_columns.TRIGGER,),
            ).fetchone()[0]
        years = S.last_year - S.first_year + 1
        assert {(r[1], r[2], r[3]) for r in rows} == {
            ("area_m2", "double precision", ""),  # plain, not generated: no rewrite
            ("descricao", "text", ""),
        }
        assert len(rows) == 2 * years
        assert {r[4] for r in rows if r[1] == "descricao"} == {"l"}
        assert triggers == years  # cloned to every partition

    @pytest.mark.slow
    def test_restores_non_default_storage(self, seeded_url):
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            conn.execute(
                "ALTER TABLE geometrias ALTER COLUMN descricao SET STORAGE MAIN, "
                "ALTER COLUMN descricao SET COMPRESSION pglz"
            )
        _round_trip(seeded_url)

    def test_refuses_foreign_column(self, seeded_url):
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            conn.execute("ALTER TABLE geometrias ADD COLUMN area_m2 numeric")
        with pytest.raises(MigrationError) as e:
            migrations.upgrade(seeded_url, "opt2")
        assert str(e.value) == (
            "public.geometrias already has column(s) area_m2: rename or drop them before opt2 "
            "(it will not adopt columns it did not create)"
        )
        assert migrations.current(seeded_url) == "opt1"


class TestDerivedColumns:
    def test_insert_and_update(self, seeded_url):
        migrations.upgrade(seeded_url, "opt2")
        with psycopg.connect(seeded_url) as conn:
            new_id = conn.execute(
                "INSERT INTO geometrias (nome, categoria, data_referencia, geom) VALUES "
                "('x', 'lote', '2024-05-01', ST_MakeEnvelope(-46.60, -23.50, -46.59, -23.49, "
                "4326)) RETURNING id"
            ).fetchone()[0]
            check = (
                "SELECT area_m2 = ST_Area(geom::geography), bbox_xmin, bbox_ymin, bbox_xmax, "
                "bbox_ymax, area_m2 FROM geometrias WHERE id = %s"
            )
            ok, *box, area = conn.execute(check, (new_id,)).fetchone()
            assert ok and box == [-46.60, -23.50, -46.59, -23.49]
            conn.execute(
                "UPDATE geometrias SET geom = ST_MakeEnvelope(-46.60, -23.50, -46.58, -23.49, "
                "4326) WHERE id = %s",
                (new_id,),
            )
            ok, *box, area2 = conn.execute(check, (new_id,)).fetchone()
            assert ok and box == [-46.60, -23.50, -46.58, -23.49]
            assert area2 == pytest.approx(2 * area, rel=1e-3)
            wrong = conn.execute(
                "SELECT count(*) FROM geometrias WHERE area_m2 IS DISTINCT FROM "
                "ST_Area(geom::geography) OR bbox_xmin IS DISTINCT FROM ST_XMin(geom::box3d)"
            ).fetchone()[0]
            assert wrong == 0

    def test_wide_columns_lz4(self, seeded_url):
        migrations.upgrade(seeded_url, "opt2")
        with psycopg.connect(seeded_url) as conn:
            rows = conn.execute(
                "SELECT attname, attstorage::text, attcompression::text FROM pg_attribute "
                "WHERE attrelid = 'geometrias'::regclass AND attname IN "
                "('descricao', 'propriedades') ORDER BY 1"
            ).fetchall()
            assert rows == [("descricao", "x", "l"), ("propriedades", "x", "l")]
            conn.execute(
                "INSERT INTO geometrias (nome, categoria, data_referencia, geom, descricao) "
                "VALUES ('y', 'lote', '2024-01-01', ST_Point(-46.6, -23.5, 4326), "
                "repeat('biblioteca ', 2000))"
            )
            method = conn.execute(
                "SELECT pg_column_compression(descricao) FROM geometrias WHERE nome = 'y'"
            ).fetchone()[0]
            assert method == "lz4"


def _calls() -> dict[str, str]:
    """qid -> how the app calls the RPCs opt2 re-points."""
    return {q: functions.call_sql(fn) for q, fn in gis_columns.repoints(S).items()}


class TestRepointed:
    def test_same_results_as_base(self, seeded_url):
        migrations.upgrade(seeded_url, "opt2")
        base, calls = base_sql(S), _calls()
        assert sorted(calls) == ["Q1", "Q3"]
        with psycopg.connect(seeded_url) as conn:
            for q, call in calls.items():
                fn = gis_columns.repoints(S)[q]
                assert conn.execute(
                    "SELECT btrim(prosrc, E' \\n') = %s FROM pg_proc WHERE oid = %s::regprocedure",
                    (fn.body.strip(), fn.identity),
                ).fetchone() == (True,)
                for x0, y0, x1, y1 in VIEWPORTS:
                    p = {"min_lon": x0, "min_lat": y0, "max_lon": x1, "max_lat": y1}
                    want = conn.execute(base[q], p).fetchall()
                    got = conn.execute(call, p).fetchall()
                    assert want and want[0][0], (q, p)
                    assert _same(want, got), (q, p)

    def test_baseline_bodies_before_opt2(self, seeded_url):
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            for fn in gis_columns.repoints(S).values():
                src = conn.execute(
                    "SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure", (fn.identity,)
                ).fetchone()[0]
                assert "area_m2" not in src and "ST_Area" in src


def test_offline_sql():
    sql = migrations.offline_sql("upgrade", "opt1:opt2")
    assert "ADD COLUMN area_m2 double precision,\n" in sql and "GENERATED" not in sql
    assert "SET COMPRESSION lz4" in sql
    assert f"CREATE TRIGGER {gis_columns.TRIGGER} BEFORE INSERT OR UPDATE OF geom, area_m2" in sql
    # part 1 commits before the backfill, which runs outside any transaction block
    assert (
        sql.index("CREATE TRIGGER")
        < sql.index("COMMIT;")
        < sql.index(
            "UPDATE public.geometrias SET area_m2 = NULL WHERE area_m2 IS NULL AND geom IS NOT NULL"
        )
        < sql.index("VACUUM (ANALYZE) public.geometrias (area_m2, ")
        < sql.rindex("BEGIN;")
    )
    down = migrations.offline_sql("downgrade", "opt2:opt1")
    assert "pg_partition_tree" in down
    assert f"DROP TRIGGER IF EXISTS {gis_columns.TRIGGER} ON public.geometrias" in down
    assert "DROP FUNCTION IF EXISTS stage4.stage4_geometrias_gis_columns()" in down
    assert "DROP COLUMN IF EXISTS area_m2" in down


# ------------------------------------------------------------------ online: the backfill

AREA_RIGHT = (
    "SELECT count(*) FILTER (WHERE area_m2 IS DISTINCT FROM ST_Area(geom::geography) "
    "OR bbox_xmin IS DISTINCT FROM ST_XMin(geom::box3d) "
    "OR bbox_ymax IS DISTINCT FROM ST_YMax(geom::box3d)), count(*) FROM geometrias"
)
WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND query LIKE 'UPDATE ONLY%%' AND datname = current_database()"
)
ROW = "md5(ROW(id, nome, categoria, data_referencia, geom, propriedades, descricao)::text)"


def _rows(url: str) -> dict[int, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute(f"SELECT id, {ROW} FROM geometrias").fetchall())


def _exclusive_locks(conn: psycopg.Connection) -> int:
    """ACCESS EXCLUSIVE locks held by anyone on the table or its partitions."""
    return conn.execute(
        "SELECT count(*) FROM pg_locks l WHERE l.mode = 'AccessExclusiveLock' AND l.granted "
        "AND l.relation IN (SELECT relid FROM pg_partition_tree('public.geometrias'))"
    ).fetchone()[0]


class TestOnline:
    def test_readers_and_writers_go_on_during_the_backfill(self, seeded_url):
        """At every batch boundary of the backfill, from another session with a 100 ms
        lock_timeout: nobody holds ACCESS EXCLUSIVE, a full read and a write succeed, and
        the row written is computed by the trigger. Afterwards every row is right."""
        migrations.upgrade(seeded_url, "opt1")
        seen: list[tuple[int, int, int]] = []
        written: list[int] = []
        with psycopg.connect(seeded_url, autocommit=True) as app:
            app.execute("SET lock_timeout = '100ms'")

            def progress(phase: str, done: int, total: int) -> None:
                if phase != "backfill" or not 0 < done < total:
                    return
                rows = app.execute("SELECT count(*) FROM geometrias").fetchone()[0]
                new_id, area = app.execute(
                    "INSERT INTO geometrias (nome, categoria, data_referencia, geom) VALUES "
                    "('app', 'lote', '2023-03-01', ST_Buffer(ST_Point(-46.6, -23.5, 4326), "
                    "0.001)) RETURNING id, area_m2"
                ).fetchone()
                assert area is not None and area > 0
                written.append(new_id)
                seen.append((_exclusive_locks(app), rows, done))

            metrics: dict = {}
            migrations.upgrade(
                seeded_url,
                "opt2",
                progress=progress,
                metrics=metrics,
                backfill_target_s=0.0001,
                backfill_first_blocks=8,
            )
            assert len(seen) >= 5, seen  # several batches, each committed on its own
            assert all(locks == 0 for locks, _, _ in seen), seen
            assert metrics["backfill_batches"] >= 5
            assert metrics["backfill_rows"] == 2000
            assert metrics["readers_blocked_s"] < 1.0
            wrong, total = app.execute(AREA_RIGHT).fetchone()
            assert (wrong, total) == (0, 2000 + len(written))

    @pytest.mark.slow
    def test_a_row_written_behind_the_backfill_is_caught_up(self, seeded_url):
        """A row written, once every block has been passed, by a session whose triggers do
        not fire (a replication apply: session_replication_role = replica) still gets its
        columns: the catch-up fills what the block pass left."""
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url, autocommit=True) as app:

            def progress(phase: str, done: int, total: int) -> None:
                if phase == "backfill" and done == total > 0:
                    app.execute("SET session_replication_role = replica")
                    app.execute(
                        "INSERT INTO geometrias (nome, categoria, data_referencia, geom) VALUES "
                        "('late', 'rio', '2022-02-02', ST_Buffer(ST_Point(-46.6, -23.5, 4326), "
                        "0.001))"
                    )
                    app.execute("RESET session_replication_role")

            metrics: dict = {}
            migrations.upgrade(seeded_url, "opt2", progress=progress, metrics=metrics)
            assert metrics["backfill_caught_up_rows"] == 1
            assert app.execute(AREA_RIGHT).fetchone() == (0, 2001)

    def test_rows_written_after_the_upgrade_are_right_and_the_rpcs_agree(self, seeded_url):
        """Insert, update geom, update another column, move a row to another partition,
        write a derived column directly: the columns stay equal to their expressions, and
        the rewrites return what the base queries return."""
        migrations.upgrade(seeded_url, "opt2")
        with psycopg.connect(seeded_url) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM geometrias ORDER BY id LIMIT 4")]
            conn.execute(
                "INSERT INTO geometrias (nome, categoria, data_referencia, geom) "
                "SELECT 'n' || i, 'escola', date '2021-01-01' + i, ST_Buffer(ST_Point("
                "-46.65 + i * 0.0007, -23.55, 4326), 0.002) FROM generate_series(1, 50) i"
            )
            conn.execute(
                "UPDATE geometrias SET geom = ST_Buffer(geom, 0.001) WHERE id = %s", (ids[0],)
            )
            conn.execute("UPDATE geometrias SET nome = 'renamed' WHERE id = %s", (ids[1],))
            conn.execute(
                "UPDATE geometrias SET data_referencia = '2031-06-01', "
                "geom = ST_Translate(geom, 0.01, 0) WHERE id = %s",
                (ids[2],),
            )
            conn.execute(
                "UPDATE geometrias SET area_m2 = -1, bbox_xmin = 0 WHERE id = %s", (ids[3],)
            )
            wrong, _ = conn.execute(AREA_RIGHT).fetchone()
            assert wrong == 0
            base = base_sql(S)
            for q, call in _calls().items():
                for x0, y0, x1, y1 in VIEWPORTS:
                    p = {"min_lon": x0, "min_lat": y0, "max_lon": x1, "max_lat": y1}
                    assert _same(
                        conn.execute(base[q], p).fetchall(), conn.execute(call, p).fetchall()
                    ), (q, p)

    @pytest.mark.slow
    def test_a_failed_backfill_drops_what_it_added(self, seeded_url):
        """An app's row trigger that refuses updates of one row (the backfill is an UPDATE
        of every row) fails the backfill: the step fails with one line, and the database
        is back exactly at opt1."""
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            conn.execute(
                "CREATE FUNCTION frozen() RETURNS trigger LANGUAGE plpgsql AS "
                "$$BEGIN RAISE EXCEPTION 'row % is frozen', OLD.id; END$$; "
                "CREATE TRIGGER app_frozen BEFORE UPDATE ON geometrias FOR EACH ROW "
                "WHEN (OLD.id = 1500) EXECUTE FUNCTION frozen()"
            )
        before, rows = _snap(seeded_url), _rows(seeded_url)
        with pytest.raises(MigrationError) as e:
            migrations.upgrade(seeded_url, "opt2")
        assert str(e.value) == (
            "upgrade to opt2 failed during its backfill and was rolled back (its columns and "
            "trigger dropped): row 1500 is frozen"
        )
        assert "\n" not in str(e.value)
        assert migrations.current(seeded_url) == "opt1"
        assert snapshot.diff(before, _snap(seeded_url)) == []
        assert _rows(seeded_url) == rows

    @pytest.mark.slow
    def test_an_interrupt_during_the_backfill_leaves_opt1_exactly(self, seeded_url):
        """SIGINT while a batch waits for an app's row lock: the batch is cancelled, the
        batches already committed are dropped with the columns, nothing of the app's lost.

        No race: the app locks its row from inside the backfill's first progress report,
        before any batch runs, and the SIGINT is sent once a batch waits for that lock."""
        migrations.upgrade(seeded_url, "opt1")
        before, rows = _snap(seeded_url), _rows(seeded_url)
        ticks: list[int] = []
        locked, over = threading.Event(), threading.Event()

        def send_sigint_once_a_batch_waits() -> None:
            """SIGINT the upgrade while a batch waits for the app's lock, then let go. A
            signal that lands while the upgrade shields a commit is ignored (as it should
            be): while the batch still waits a second later, it is sent again."""
            sent = 0
            with psycopg.connect(seeded_url, autocommit=True) as watch:
                while not over.is_set():
                    if locked.is_set() and watch.execute(WAITING).fetchone()[0]:
                        os.kill(os.getpid(), signal.SIGINT)
                        sent += 1
                        time.sleep(1.0)
                        continue
                    if sent:
                        break
                    time.sleep(0.05)
            time.sleep(0.5)
            app.rollback()  # the app's transaction ends: the upgrade's undo gets its lock

        def progress(phase: str, done: int, total: int) -> None:
            """At the backfill's first report (no batch run yet), the app locks the last
            row of the last leaf the backfill reaches (earlier batches commit first)."""
            if phase == "backfill" and not locked.is_set():
                leaf = app.execute(
                    "SELECT max(relid::regclass::text) FROM pg_partition_tree("
                    "'public.geometrias') WHERE isleaf AND pg_relation_size(relid) > 0"
                ).fetchone()[0]
                app.execute(f"SELECT id FROM {leaf} ORDER BY ctid DESC LIMIT 1 FOR UPDATE")
                locked.set()
            ticks.append(done)

        with psycopg.connect(seeded_url) as app:
            watcher = threading.Thread(target=send_sigint_once_a_batch_waits)
            watcher.start()
            try:
                with pytest.raises(KeyboardInterrupt):
                    migrations.upgrade(
                        seeded_url,
                        "opt2",
                        lock_timeout="60s",
                        progress=progress,
                        backfill_target_s=0.0001,
                        backfill_first_blocks=8,
                    )
            finally:
                over.set()
                watcher.join()
        assert len(ticks) > 2  # some batches had committed before the interrupt
        assert migrations.current(seeded_url) == "opt1"
        assert snapshot.diff(before, _snap(seeded_url)) == []
        assert _rows(seeded_url) == rows
        migrations.upgrade(seeded_url, "opt2")  # and it can be run again
        with psycopg.connect(seeded_url) as conn:
            assert conn.execute(AREA_RIGHT).fetchone()[0] == 0

    @pytest.mark.slow
    def test_a_killed_backfill_is_resumed_then_downgraded_exactly(self, seeded_url, tmp_path):
        """SIGKILL during the backfill leaves part 1 committed at opt1; the next upgrade
        resumes the backfill (no clash with its own columns), the downgrade restores opt1.

        No race: the child's backfill waits at its first progress report (no batch run
        yet) until the app holds its row lock."""
        migrations.upgrade(seeded_url, "opt1")
        before, rows = _snap(seeded_url), _rows(seeded_url)
        go = tmp_path / "locked"
        script = (
            "import pathlib, sys, time\n"
            "from stage4.plumbing import migrations\n"
            "def progress(phase, done, total):\n"
            "    go = pathlib.Path(sys.argv[2])\n"
            "    while phase == 'backfill' and done == 0 and not go.exists():\n"
            "        time.sleep(0.01)\n"
            "migrations.upgrade(sys.argv[1], 'opt2', lock_timeout='60s', "
            "backfill_target_s=0.0001, backfill_first_blocks=8, progress=progress)\n"
        )
        with (
            psycopg.connect(seeded_url) as app,
            psycopg.connect(seeded_url, autocommit=True) as watch,
        ):
            child = subprocess.Popen([sys.executable, "-c", script, seeded_url, str(go)])
            try:
                # once part 1 has committed (the trigger exists; the child then waits for
                # `go`), the app locks the first row of the second leaf the backfill
                # reaches: it waits there, the first leaf filled, the later ones not
                for _ in range(2400):
                    if watch.execute(gis_columns.leftover_sql(S)).fetchone()[0]:
                        break
                    time.sleep(0.05)
                leaf = app.execute(
                    "SELECT relid::regclass::text FROM pg_partition_tree('public.geometrias') "
                    "WHERE isleaf AND pg_relation_size(relid) > 0 ORDER BY 1 OFFSET 1 LIMIT 1"
                ).fetchone()[0]
                app.execute(f"SELECT id FROM {leaf} ORDER BY ctid LIMIT 1 FOR UPDATE")
                go.touch()
                for _ in range(2400):
                    if watch.execute(WAITING).fetchone()[0]:
                        break
                    time.sleep(0.05)
                else:
                    pytest.fail("the backfill never waited for the row lock")
            finally:
                child.kill()
                child.wait()
            app.rollback()
        with psycopg.connect(seeded_url) as conn:
            filled, nulls = conn.execute(
                "SELECT count(area_m2), count(*) - count(area_m2) FROM geometrias"
            ).fetchone()
            assert filled > 0 and nulls > 0  # partly filled
            assert conn.execute(f"SELECT {gis_columns.filled_check_sql(S)}").fetchone() == (False,)
        assert migrations.current(seeded_url) == "opt1"
        migrations.upgrade(seeded_url, "opt2")
        with psycopg.connect(seeded_url) as conn:
            assert conn.execute(AREA_RIGHT).fetchone() == (0, 2000)
        migrations.downgrade(seeded_url, "opt1")
        assert snapshot.diff(before, _snap(seeded_url)) == []
        assert _rows(seeded_url) == rows

    @pytest.mark.slow
    def test_a_lost_connection_says_what_is_left_and_is_resumed(self, seeded_url):
        """The migration's session terminated mid-backfill: the columns cannot be dropped
        on it, so the error says where the database stands (one line), and the next
        upgrade resumes the backfill."""
        migrations.upgrade(seeded_url, "opt1")

        def progress(phase: str, done: int, total: int) -> None:
            if phase == "backfill" and done > 0:
                with psycopg.connect(seeded_url, autocommit=True) as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                        "datname = current_database() AND pid <> pg_backend_pid() "
                        "AND backend_type = 'client backend'"
                    )

        with pytest.raises(MigrationError) as e:
            migrations.upgrade(
                seeded_url,
                "opt2",
                progress=progress,
                backfill_target_s=0.0001,
                backfill_first_blocks=8,
            )
        assert str(e.value).startswith(
            "upgrade to opt2 stopped during its backfill (terminating connection due to "
            "administrator command) and dropping its columns failed ("
        )
        assert str(e.value).endswith(
            "public.geometrias is at opt1 with opt2's columns and trigger; `alembic upgrade "
            "opt2` resumes the backfill"
        )
        assert migrations.current(seeded_url) == "opt1"
        migrations.upgrade(seeded_url, "opt2")
        with psycopg.connect(seeded_url) as conn:
            assert conn.execute(AREA_RIGHT).fetchone() == (0, 2000)


# ------------------------------------------------------------------ who reaches the trigger


def test_trigger_function_roles(seeded_url):
    """Owned by the table's owner, SECURITY INVOKER, fixed search_path, executable by no
    one else (not PUBLIC, not anon/authenticated even with default privileges granting
    every function to them); an authenticated write still fires it (a trigger function
    needs no EXECUTE grant), within the writes its policies allow."""
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(ROLES)
        conn.execute(
            "GRANT USAGE ON SCHEMA public TO anon, authenticated; "
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS "
            "TO anon, authenticated; "
            "GRANT SELECT ON geometrias TO anon; GRANT SELECT, INSERT ON geometrias TO "
            "authenticated; ALTER TABLE geometrias ENABLE ROW LEVEL SECURITY; "
            "CREATE POLICY r ON geometrias FOR SELECT TO anon, authenticated USING (true); "
            "CREATE POLICY w ON geometrias FOR INSERT TO authenticated "
            "WITH CHECK (categoria = 'escola')"
        )
    migrations.upgrade(seeded_url, "opt2")
    fn = f"{gis_columns.function(S)}()"
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        owner, table_owner, definer, config = conn.execute(
            "SELECT pg_get_userbyid(p.proowner), (SELECT pg_get_userbyid(relowner) FROM "
            "pg_class WHERE oid = 'geometrias'::regclass), p.prosecdef, p.proconfig "
            "FROM pg_proc p WHERE p.oid = %s::regprocedure",
            (fn,),
        ).fetchone()
        assert owner == table_owner and definer is False
        assert config == ["search_path=pg_catalog, public, pg_temp"]
        reach = conn.execute(
            "SELECT r, has_function_privilege(r, %s, 'EXECUTE') FROM unnest(ARRAY['public', "
            "'anon', 'authenticated']) r ORDER BY r",
            (fn,),
        ).fetchall()
        assert reach == [("anon", False), ("authenticated", False), ("public", False)]
        conn.execute("SET ROLE authenticated")
        area = conn.execute(
            "INSERT INTO geometrias (nome, categoria, data_referencia, geom) VALUES ('a', "
            "'escola', '2024-01-01', ST_Buffer(ST_Point(-46.6, -23.5, 4326), 0.001)) "
            "RETURNING area_m2"
        ).fetchone()[0]
        assert area > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO geometrias (nome, categoria, data_referencia, geom) VALUES "
                "('b', 'lote', '2024-01-01', ST_Point(-46.6, -23.5, 4326))"
            )
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT {fn.removesuffix('()')}()")
