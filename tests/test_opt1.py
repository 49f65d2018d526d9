"""opt1: yearly partitioning of geometrias, its round trip, refusals and lock behaviour."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from fixtures_supabase import TO_CARRY_OVER
from stage4.catalog import snapshot
from stage4.config import settings
from stage4.errors import MigrationError
from stage4.optimisations import partition_by_year
from stage4.plumbing import migrations

T = "public.geometrias"
YEARS = range(2020, 2029)


def _snap(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return snapshot.take(conn)


def _one(url: str, sql: str, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()


class TestUpgrade:
    def test_partitions_rows_keys_and_ids(self, seeded_url: str) -> None:
        before = _snap(seeded_url)
        seen: list[tuple[str, int, int]] = []
        metrics: dict = {}
        migrations.upgrade(
            seeded_url, "opt1", progress=lambda *a: seen.append(a), metrics=metrics, batch_rows=700
        )
        after = _snap(seeded_url)
        assert after["data"] == before["data"], snapshot.diff(before, after)
        with psycopg.connect(seeded_url) as conn:
            kind = conn.execute(
                "SELECT relkind::text FROM pg_class WHERE oid = %s::regclass", (T,)
            ).fetchone()[0]
            parts = {
                r[0]
                for r in conn.execute(
                    "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass",
                    (T,),
                )
            }
            pk = conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conname = 'geometrias_pkey'"
            ).fetchone()[0]
            idx = {
                r[0]
                for r in conn.execute(
                    "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
                    (T,),
                )
            }
            outside = conn.execute(
                "SELECT count(*) FILTER (WHERE tableoid <> 'stage4.geometrias_default'::regclass), "
                "count(*) FROM geometrias WHERE data_referencia < '2020-01-01' "
                "OR data_referencia >= '2029-01-01'"
            ).fetchone()
            top = conn.execute("SELECT max(id) FROM geometrias").fetchone()[0]
            new_id = conn.execute(
                "INSERT INTO geometrias (nome, categoria, data_referencia, geom) VALUES "
                "('x', 'escola', '2024-05-01', 'SRID=4326;POINT(-46.6 -23.5)') RETURNING id"
            ).fetchone()[0]
        assert kind == "p"
        assert parts == {f"stage4.geometrias_p{y}" for y in YEARS} | {"stage4.geometrias_default"}
        assert pk == "PRIMARY KEY (id, data_referencia)"
        assert idx == {
            "geometrias_pkey",
            "geometrias_geom_gist",
            "geometrias_data_referencia_idx",
            "geometrias_categoria_idx",
            "geometrias_categoria_geom_gist",  # Q9's, opt1's own
        }
        assert outside[1] > 0 and outside[0] == 0
        assert new_id == top + 1
        assert seen[0] == ("copy", 0, 2000) and ("copy", 2000, 2000) in seen
        settle = "VACUUM (ANALYZE) after the step"  # migrations.settle, once committed
        assert seen[-3:] == [("swap", 1, 1), (settle, 0, 1), (settle, 1, 1)]
        assert metrics["writers_blocked_s"] >= metrics["readers_blocked_s"] > 0

    def test_each_quarter_one_run_in_geometry_order(self, seeded_url: str) -> None:
        """Every partition holds its quarters as runs in the order 2, 4, 1, 3, each in the
        geometry's b-tree order (what makes Q5 read few pages, see ``Rebuild.batches``).
        Tolerant by design: a row may land in free space left on an earlier page."""
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            runs = conn.execute("""
                SELECT tableoid::regclass::text, extract(quarter FROM data_referencia)::int
                FROM geometrias WHERE tableoid <> 'stage4.geometrias_default'::regclass
                GROUP BY 1, 2 ORDER BY 1, percentile_disc(0.5) WITHIN GROUP (ORDER BY ctid)
                """).fetchall()
            # rows out of place: another quarter than the previous row, or before it in
            # geometry order (a shuffled copy has about half its rows out of place)
            out_of_place, total = conn.execute("""
                SELECT count(*) FILTER (WHERE q <> lag_q OR r < lag_r), count(*)
                FROM (SELECT q, r, lag(q) OVER w AS lag_q, lag(r) OVER w AS lag_r
                      FROM (SELECT tableoid, ctid, date_trunc('quarter', data_referencia) AS q,
                                   row_number() OVER (PARTITION BY tableoid,
                                     date_trunc('quarter', data_referencia) ORDER BY geom) AS r
                            FROM geometrias) s
                      WINDOW w AS (PARTITION BY tableoid ORDER BY ctid)) t""").fetchone()
        by_part: dict[str, list[int]] = {}
        for part, quarter in runs:
            by_part.setdefault(part, []).append(quarter)
        assert by_part == {f"stage4.geometrias_p{y}": [2, 4, 1, 3] for y in YEARS}
        assert out_of_place < 0.1 * total, (out_of_place, total)

    def test_offline_sql_renders_without_a_database(self) -> None:
        sql = migrations.offline_sql("upgrade", "schema:opt1")
        assert "PARTITION BY RANGE (data_referencia)" in sql
        assert "CREATE TABLE stage4.geometrias_default PARTITION OF" in sql
        down = migrations.offline_sql("downgrade", "opt1:schema")
        assert "CREATE TABLE public.geometrias__stage4_new (LIKE public.geometrias" in down


class TestSettle:
    """After opt1 and its rollback the table is new: statistics before anyone measures it."""

    ANALYZED = (
        "SELECT count(*) FILTER (WHERE last_analyze IS NOT NULL), count(*) "
        "FROM pg_stat_all_tables WHERE relid IN (SELECT relid FROM pg_partition_tree(%s))"
    )

    def test_the_new_table_is_analyzed_both_ways_and_timed_apart(self, seeded_url: str) -> None:
        settled = migrations.upgrade(seeded_url, "opt1")
        assert list(settled) == ["geometrias"] and settled["geometrias"] > 0
        # the partitioned table itself (autovacuum never analyzes it) and every partition
        assert _one(seeded_url, self.ANALYZED, T) == (11, 11)
        assert (
            _one(seeded_url, "SELECT count(*) FROM pg_statistic WHERE starelid = %s::regclass", T)[
                0
            ]
            > 0
        )
        assert migrations.upgrade(seeded_url, "opt2") == {}  # nothing new to settle
        settled = migrations.downgrade(seeded_url, "schema")
        assert list(settled) == ["geometrias"]
        assert _one(
            seeded_url,
            "SELECT last_analyze IS NOT NULL FROM pg_stat_all_tables WHERE relid = %s::regclass",
            T,
        ) == (True,)


class TestRoundTrip:
    @pytest.mark.slow
    @pytest.mark.supabase(TO_CARRY_OVER)
    def test_everything_carried_over_and_back(self, supabase_url: str) -> None:
        before = _snap(supabase_url)
        migrations.upgrade(supabase_url, "opt1")
        mid = _snap(supabase_url)
        for section in ("policies", "triggers"):
            assert {tuple(r[2:]) for r in before["catalog"][section]} <= {
                tuple(r[2:]) for r in mid["catalog"][section]
            }, section
        rel = {r[1]: r for r in mid["catalog"]["relations"]}
        old = {r[1]: r for r in before["catalog"]["relations"]}
        assert rel["geometrias"][9:12] == old["geometrias"][9:12]  # acl, comment, owner
        assert rel["geometrias"][4:6] == old["geometrias"][4:6]  # RLS flags
        assert rel["geometrias_id_seq"][9] == old["geometrias_id_seq"][9]
        pub = {r[0]: r for r in mid["catalog"]["publications"]}["supabase_realtime"]
        assert pub[1] is True and pub[5] == T
        migrations.downgrade(supabase_url, "schema")
        after = _snap(supabase_url)
        assert after == before, "\n".join(snapshot.diff(before, after))
        migrations.upgrade(supabase_url, "opt1")
        assert _one(supabase_url, "SELECT count(*) FROM geometrias")[0] == 2000

    @pytest.mark.slow
    @pytest.mark.parametrize("previous", [None, "2000", "50000"])
    def test_parallel_setup_cost_for_the_database_then_put_back(self, seeded_url, previous):
        """A Gather over the partitions costs short queries a worker's start: opt1 sets
        parallel_setup_cost = 50000 for the database and leaves the worker limit alone
        (large scans stay parallel); its downgrade restores the value there was (none,
        another value), and leaves a 50000 it did not set."""
        workers = "max_parallel_workers_per_gather"
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            db = conn.execute("SELECT current_database()").fetchone()[0]
            if previous is not None:
                conn.execute(f'ALTER DATABASE "{db}" SET parallel_setup_cost = {previous}')
            before = snapshot.take(conn)["catalog"]["database_settings"]
            default_workers = conn.execute(f"SHOW {workers}").fetchone()[0]
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:  # a new session gets the database's value
            assert conn.execute("SHOW parallel_setup_cost").fetchone()[0] == "50000"
            assert partition_by_year.database_value(conn) == "50000"
            assert conn.execute(f"SHOW {workers}").fetchone()[0] == default_workers
            assert partition_by_year.database_value(conn, workers) is None
        migrations.downgrade(seeded_url, "schema")
        with psycopg.connect(seeded_url) as conn:
            assert partition_by_year.database_value(conn) == previous
            assert snapshot.take(conn)["catalog"]["database_settings"] == before
        # a value someone set after opt1 is theirs: the downgrade keeps it
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{db}" SET parallel_setup_cost = 3000')
        migrations.downgrade(seeded_url, "schema")
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            assert partition_by_year.database_value(conn) == "3000"
            conn.execute(f'ALTER DATABASE "{db}" RESET parallel_setup_cost')

    def test_a_memo_of_the_worker_limit_is_put_back_too(self, seeded_url) -> None:
        """A database partitioned with max_parallel_workers_per_gather = 0 as the serial
        setting (its memo names it) gets its previous worker limit back at downgrade."""
        workers = "max_parallel_workers_per_gather"
        migrations.upgrade(seeded_url, "opt1")
        memo = "stage4 opt1: max_parallel_workers_per_gather of this database before opt1: 1"
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            db = conn.execute("SELECT current_database()").fetchone()[0]
            conn.execute(f'ALTER DATABASE "{db}" RESET parallel_setup_cost')
            conn.execute(f'ALTER DATABASE "{db}" SET {workers} = 0')
            table = partition_by_year.memo_table(settings())
            conn.execute(f"COMMENT ON TABLE {table} IS '{memo}'")
        migrations.downgrade(seeded_url, "schema")
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            assert partition_by_year.database_value(conn, workers) == "1"
            assert partition_by_year.database_value(conn) is None
            conn.execute(f'ALTER DATABASE "{db}" RESET {workers}')

    def test_downgrade_copies_rows_of_later_partitions(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            n = conn.execute(
                "SELECT count(*) FROM stage4.geometrias_default "
                "WHERE data_referencia >= '2029-01-01' "
                "AND data_referencia < '2030-01-01'"
            ).fetchone()[0]
            conn.execute(
                "CREATE TEMP TABLE moved AS SELECT * FROM stage4.geometrias_default "
                "WHERE data_referencia >= '2029-01-01' "
                "AND data_referencia < '2030-01-01'"
            )
            conn.execute(
                "DELETE FROM stage4.geometrias_default WHERE data_referencia >= '2029-01-01' "
                "AND data_referencia < '2030-01-01'"
            )
            conn.execute(
                "CREATE TABLE geometrias_p2029 PARTITION OF geometrias "
                "FOR VALUES FROM ('2029-01-01') TO ('2030-01-01')"
            )
            conn.execute("INSERT INTO geometrias SELECT * FROM moved")
        total = _one(seeded_url, "SELECT count(*) FROM geometrias")[0]
        migrations.downgrade(seeded_url, "schema")
        assert n > 0 and total == 2000
        assert _one(seeded_url, "SELECT count(*), bool_and(true) FROM geometrias")[0] == 2000


class TestRefusal:
    @pytest.mark.parametrize(
        ("ddl", "named"),
        [
            (
                "CREATE VIEW public.v_escolas AS SELECT id, nome FROM public.geometrias "
                "WHERE categoria = 'escola'",
                "view v_escolas",
            ),
            (
                "CREATE TABLE public.visitas (id int PRIMARY KEY, geometria_id bigint "
                "REFERENCES public.geometrias (id))",
                "foreign key visitas_geometria_id_fkey on visitas",
            ),
        ],
    )
    def test_dependents_refuse_before_any_change(self, seeded_url, ddl, named) -> None:
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            conn.execute(ddl)
        before = _snap(seeded_url)
        with pytest.raises(MigrationError) as e:
            migrations.upgrade(seeded_url, "opt1")
        assert str(e.value) == (
            f"refusing to partition public.geometrias: {named} depend(s) on it or cannot be "
            "carried over. Drop them, run the migration, and recreate them (nothing was changed)"
        )
        assert _snap(seeded_url) == before
        assert migrations.current(seeded_url) == "schema"


class TestLocks:
    @pytest.mark.slow
    def test_lock_timeout_fails_fast_then_succeeds(self, seeded_url: str) -> None:
        blocker = psycopg.connect(seeded_url)
        blocker.execute(
            "INSERT INTO geometrias (nome, categoria, data_referencia, geom) "
            "VALUES ('b', 'escola', '2023-01-01', 'SRID=4326;POINT(0 0)')"
        )
        before = _snap(seeded_url)  # after the blocker's nextval
        try:
            started = time.monotonic()
            with pytest.raises(MigrationError, match="lock timeout"):
                migrations.upgrade(seeded_url, "opt1", lock_timeout="1s")
            assert time.monotonic() - started < 10
            after = _snap(seeded_url)
            assert after == before, "\n".join(snapshot.diff(before, after))
        finally:
            blocker.commit()
            blocker.close()
        migrations.upgrade(seeded_url, "opt1", lock_timeout="1s")
        assert _one(seeded_url, "SELECT count(*) FROM geometrias WHERE nome = 'b'")[0] == 1

    def test_concurrent_writes_survive(self, seeded_url: str) -> None:
        stop = threading.Event()
        log: list[str] = []

        def writer() -> None:
            with psycopg.connect(seeded_url, autocommit=True) as conn:
                i = 0
                while not stop.is_set() and i < 400:
                    i += 1
                    conn.execute(
                        "INSERT INTO geometrias (nome, categoria, data_referencia, geom) "
                        "VALUES (%s, 'escola', '2025-03-01', 'SRID=4326;POINT(0 0)')",
                        (f"w{i}",),
                    )
                    conn.execute("UPDATE geometrias SET descricao = %s WHERE id = %s", (f"u{i}", i))
                    conn.execute("DELETE FROM geometrias WHERE id = %s", (1000 + i,))
                    log.append(f"w{i}")

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.05)
        migrations.upgrade(seeded_url, "opt1", batch_rows=200)
        stop.set()
        t.join()
        n = len(log)
        with psycopg.connect(seeded_url) as conn:
            ins = conn.execute("SELECT count(*) FROM geometrias WHERE nome LIKE 'w%'").fetchone()
            upd = conn.execute(
                "SELECT count(*) FROM geometrias WHERE id <= %s AND descricao = 'u' || id", (n,)
            ).fetchone()
            gone = conn.execute(
                "SELECT count(*) FROM geometrias WHERE id > 1000 AND id <= 1000 + %s", (n,)
            ).fetchone()
            total = conn.execute("SELECT count(*) FROM geometrias").fetchone()[0]
        assert n > 0
        assert (ins[0], upd[0], gone[0], total) == (n, n, 0, 2000)
