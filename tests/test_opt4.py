"""opt4: future yearly partitions, the routine that keeps them ahead, its pg_cron job.

Real databases from conftest: ``seeded_url`` (pg_cron preloaded for another
database, so jobs cannot run here) and ``cron_url`` (the one where they do).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import date

import psycopg
import pytest

from stage4.catalog import snapshot
from stage4.config import settings
from stage4.ddl import cron, partitioning
from stage4.errors import MigrationError
from stage4.optimisations import future_partitions as fp
from stage4.plumbing import migrations
from stage4.plumbing.db import engine

S = settings()
HORIZON = max(date.today().year, S.last_year) + S.years_ahead
FUTURE = range(S.last_year + 1, HORIZON + 1)
MANUAL = (
    f"future partitions are not created automatically: run "
    f"`SELECT {S.own_schema}.{fp.FUNCTION}()` at least once a year"
)


def _partitions(conn: psycopg.Connection) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            (S.qualified_table,),
        )
    }


def _default_rows(conn: psycopg.Connection, first: int, last: int) -> int:
    return conn.execute(
        f"SELECT count(*) FROM {S.own_schema}.{S.table}_default "
        f"WHERE {S.time_column} >= make_date(%s, 1, 1) AND {S.time_column} < make_date(%s, 1, 1)",
        (first, last + 1),
    ).fetchone()[0]


def _function_exists(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (fp.identity(S),)).fetchone()[0]


class TestUpgrade:
    @pytest.mark.slow
    def test_creates_future_partitions_and_moves_their_rows(self, seeded_url):
        migrations.upgrade(seeded_url, "opt3")
        with psycopg.connect(seeded_url) as conn:
            waiting = _default_rows(conn, FUTURE[0], FUTURE[-1])
            data_before = snapshot.data(conn)
        assert waiting > 0, "the seed puts ~1 % of rows in 2029-2032"
        migrations.upgrade(seeded_url, "opt4")
        with psycopg.connect(seeded_url) as conn:
            assert {f"{S.table}_p{y}" for y in FUTURE} <= _partitions(conn)
            assert HORIZON >= 2031
            assert _default_rows(conn, FUTURE[0], FUTURE[-1]) == 0
            misplaced = conn.execute(
                f"SELECT count(*) FROM {S.qualified_table} WHERE {S.time_column} >= %s "
                f"AND {S.time_column} < %s AND tableoid::regclass::text <> "
                f"%s || '_p' || extract(year FROM {S.time_column})",
                (date(FUTURE[0], 1, 1), date(HORIZON + 1, 1, 1), f"{S.own_schema}.{S.table}"),
            ).fetchone()[0]
            assert misplaced == 0
            assert snapshot.data(conn) == data_before  # every row kept, unchanged
            # every partition, opt1's and the routine's, keeps a smaller geometry histogram
            targets = conn.execute(
                "SELECT DISTINCT a.attstattarget FROM pg_inherits i JOIN pg_attribute a "
                "ON a.attrelid = i.inhrelid AND a.attname = %s WHERE i.inhparent = %s::regclass",
                (S.geometry_column, S.qualified_table),
            ).fetchall()
            assert targets == [(partitioning.GEOMETRY_STATISTICS,)]
            parent = conn.execute(
                "SELECT attstattarget FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attname = %s",
                (S.qualified_table, S.geometry_column),
            ).fetchone()[0]
            assert parent == -1  # the table's own is the app's

    @pytest.mark.slow
    def test_routine_is_idempotent(self, seeded_url):
        migrations.upgrade(seeded_url, "opt4")
        with psycopg.connect(seeded_url) as conn:
            before = snapshot.take(conn)
            assert conn.execute(fp.run_sql(S)).fetchall() == []
            assert snapshot.diff(before, snapshot.take(conn)) == []

    @pytest.mark.slow
    def test_a_row_dated_2031_lands_in_its_own_partition(self, seeded_url):
        migrations.upgrade(seeded_url, "opt4")
        with psycopg.connect(seeded_url) as conn:
            where = conn.execute(
                f"INSERT INTO {S.qualified_table} (nome, categoria, {S.time_column}, "
                f"{S.geometry_column}) VALUES ('Escola Futura', 'escola', '2031-06-01', "
                "ST_SetSRID(ST_MakePoint(-46.63, -23.55), 4326)) RETURNING tableoid::regclass::text"
            ).fetchone()[0]
        assert where == f"{S.own_schema}.{S.table}_p2031"

    @pytest.mark.slow
    def test_one_more_year_moves_that_years_rows(self, seeded_url):
        migrations.upgrade(seeded_url, "opt4")
        year = HORIZON + 1
        with psycopg.connect(seeded_url) as conn:
            waiting = _default_rows(conn, year, year)
            conn.execute("SET lock_timeout = '3s'")
            made = conn.execute(f"SELECT * FROM {S.own_schema}.{fp.FUNCTION}({S.years_ahead + 1})")
            assert made.fetchall() == [(f"{S.table}_p{year}", waiting)]
            assert _default_rows(conn, year, year) == 0
            # its short attempts' lock_timeout is not left behind
            assert conn.execute("SHOW lock_timeout").fetchone()[0] == "3s"

    @pytest.mark.slow
    def test_new_partition_is_its_owners_only(self, seeded_url):
        migrations.upgrade(seeded_url, "opt4")
        reader, stranger = f"reader_{os.getpid()}", f"stranger_{os.getpid()}"
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            for role in (reader, stranger):
                conn.execute(f"DROP ROLE IF EXISTS {role}")
                conn.execute(f"CREATE ROLE {role}")
            try:
                conn.execute(f"GRANT SELECT ON {S.own_schema}.{S.table}_default TO {reader}")
                conn.execute(
                    f"ALTER DEFAULT PRIVILEGES IN SCHEMA {S.own_schema} "
                    f"GRANT ALL ON TABLES TO {stranger}"
                )
                conn.execute(f"SELECT * FROM {S.own_schema}.{fp.FUNCTION}({S.years_ahead + 1})")
                acl, rls, owner = conn.execute(
                    "SELECT relacl::text, relrowsecurity, pg_get_userbyid(relowner) FROM pg_class "
                    "WHERE oid = %s::regclass",
                    (f"{S.own_schema}.{S.table}_p{HORIZON + 1}",),
                ).fetchone()
                assert acl == f"{{{owner}=arwdDxt/{owner}}}"
                assert rls is True
            finally:
                conn.execute(
                    f"ALTER DEFAULT PRIVILEGES IN SCHEMA {S.own_schema} "
                    f"REVOKE ALL ON TABLES FROM {stranger}"
                )
                for role in (reader, stranger):
                    conn.execute(f"DROP OWNED BY {role}")
                    conn.execute(f"DROP ROLE {role}")

    @pytest.mark.slow
    def test_without_pg_cron_it_applies_and_says_the_routine_is_manual(self, seeded_url):
        notes: list[str] = []
        migrations.upgrade(seeded_url, "opt4", notes=notes)
        with psycopg.connect(seeded_url) as conn:
            state = cron.status(conn)
            assert cron.jobs(conn, [fp.JOB]) == []
            assert _function_exists(conn)
        assert not state.runs
        assert notes == [f"opt4: {state.reason}; {MANUAL}"]

    def test_routine_is_not_callable_by_public(self, seeded_url):
        migrations.upgrade(seeded_url, "opt4")
        with psycopg.connect(seeded_url) as conn:
            public = conn.execute(
                "SELECT has_function_privilege('public', %s, 'EXECUTE')", (fp.identity(S),)
            )
            assert public.fetchone()[0] is False


class TestRefusals:
    def test_unpartitioned_table_is_refused(self, seeded_url):
        eng = engine(seeded_url)
        try:
            with eng.connect() as bind:
                assert fp.partitioning_problem(bind, S) == (
                    f"{S.qualified_table} is not partitioned: apply revision opt1 first"
                )
        finally:
            eng.dispose()

    @pytest.mark.slow
    def test_negative_years_ahead_is_refused(self, seeded_url):
        migrations.upgrade(seeded_url, "opt4")
        with (
            psycopg.connect(seeded_url) as conn,
            pytest.raises(psycopg.errors.RaiseException) as refused,
        ):
            conn.execute(f"SELECT * FROM {S.own_schema}.{fp.FUNCTION}(-1)")
        assert refused.value.diag.message_primary == "years_ahead must be 0 or more, not -1"

    @pytest.mark.slow
    def test_lock_timeout_fails_fast_and_leaves_nothing(self, seeded_url):
        migrations.upgrade(seeded_url, "opt3")
        with psycopg.connect(seeded_url) as blocker:
            blocker.execute(f"LOCK TABLE {S.own_schema}.{S.table}_default IN ACCESS SHARE MODE")
            with pytest.raises(
                MigrationError,
                match=r"lock timeout \(200ms\) waiting for a lock on stage4.geometrias_default, held by pid",
            ):
                migrations.upgrade(seeded_url, "opt4", lock_timeout="200ms")
        assert migrations.current(seeded_url) == "opt3"
        with psycopg.connect(seeded_url) as conn:
            assert not _function_exists(conn)
            assert f"{S.table}_p{FUTURE[0]}" not in _partitions(conn)
        migrations.upgrade(seeded_url, "opt4")  # re-runnable once the lock is gone
        assert migrations.current(seeded_url) == "opt4"

    @pytest.mark.slow
    def test_readers_never_queue_behind_its_locks(self, seeded_url):
        migrations.upgrade(seeded_url, "opt3")
        outcome: list[object] = []

        def upgrade():
            try:
                migrations.upgrade(seeded_url, "opt4", lock_timeout="3s")
                outcome.append("done")
            except Exception as e:  # asserted below
                outcome.append(e)

        with (
            psycopg.connect(seeded_url) as blocker,
            psycopg.connect(seeded_url, autocommit=True) as reader,
        ):
            blocker.execute(f"SELECT count(*) FROM {S.qualified_table}")  # ACCESS SHARE, kept
            worker = threading.Thread(target=upgrade)
            worker.start()
            for _ in range(100):  # until the routine is waiting for its locks
                waiting = reader.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'active'",
                    (fp.run_sql(S),),
                ).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
            assert waiting, "the routine never started"
            reader.execute("SET statement_timeout = '1s'")  # queued for the 3 s: canceled
            took = []
            for _ in range(5):
                t0 = time.perf_counter()
                try:
                    reader.execute(f"SELECT count(*) FROM {S.qualified_table} WHERE id = 4242")
                except psycopg.errors.QueryCanceled:
                    pytest.fail("a reader queued 1 s behind the routine's lock request")
                took.append(time.perf_counter() - t0)
                time.sleep(0.1)
            assert worker.is_alive() and not outcome, "the upgrade waits for the blocker"
            assert max(took) < 1, took
            blocker.commit()
            worker.join(10)
        assert outcome == ["done"]
        assert migrations.current(seeded_url) == "opt4"


class TestCron:
    @pytest.mark.slow
    def test_job_is_scheduled_and_downgrade_removes_it(self, cron_url):
        notes: list[str] = []
        migrations.upgrade(cron_url, "opt4", notes=notes)
        assert notes == []
        with psycopg.connect(cron_url) as conn:
            assert cron.status(conn).runs
            assert cron.jobs(conn, [fp.JOB]) == [(fp.JOB, fp.SCHEDULE, fp.command(S))]
        migrations.downgrade(cron_url, "opt3")
        with psycopg.connect(cron_url) as conn:
            assert cron.jobs(conn, [fp.JOB]) == []
            assert not _function_exists(conn)


class TestDowngrade:
    @pytest.mark.slow
    def test_keeps_every_partition_and_row_and_removes_the_routine(self, seeded_url):
        migrations.upgrade(seeded_url, "opt3")
        with psycopg.connect(seeded_url) as conn:
            before = snapshot.take(conn)
        migrations.upgrade(seeded_url, "opt4")
        migrations.downgrade(seeded_url, "opt3")
        with psycopg.connect(seeded_url) as conn:
            after = snapshot.take(conn)
            assert {f"{S.table}_p{y}" for y in FUTURE} <= _partitions(conn)
            assert not _function_exists(conn)
        assert after["data"] == before["data"]
        changes = snapshot.diff(before, after, limit=10_000)
        assert changes, "the created partitions stay"
        created = tuple(f"{S.table}_p{y}" for y in FUTURE)
        assert [c for c in changes if ": + " not in c or not any(p in c for p in created)] == []


def test_offline_sql_renders_without_a_database():
    up = migrations.offline_sql("upgrade", "opt3:opt4")
    assert (
        f"CREATE OR REPLACE FUNCTION {S.own_schema}.{fp.FUNCTION}(years_ahead integer DEFAULT" in up
    )
    assert f"PERFORM cron.schedule('{fp.JOB}', '{fp.SCHEDULE}'" in up
    down = migrations.offline_sql("downgrade", "opt4:opt3")
    assert f"DROP FUNCTION IF EXISTS {fp.identity(S)}" in down
