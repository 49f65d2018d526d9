"""The app's writes counted, and the exact source-vs-copy check of a table rebuild."""

from __future__ import annotations

import psycopg
import pytest

from stage4.config import settings
from stage4.errors import MigrationError
from stage4.plumbing import livewrites
from stage4.plumbing.db import engine

COLS = ["id", "nome", "geom"]


def test_check_copy_names_the_lost_the_stray_and_the_altered_ids(seeded_url: str) -> None:
    eng = engine(seeded_url)
    try:
        with eng.begin() as c:
            q = c.exec_driver_sql
            q(
                "CREATE TABLE public.copy_src AS SELECT id, nome, geom FROM public.geometrias "
                "WHERE id <= 50"
            )
            q("CREATE TABLE public.copy_dst AS SELECT * FROM public.copy_src")
            xid = int(q("SELECT pg_current_xact_id()::text").scalar())
            snap = q("SELECT pg_current_snapshot()::text").scalar()
            livewrites.check_copy(c, "public.copy_src", "public.copy_dst", COLS, snap, xid)
            # rows written after the snapshot: compared; a copy that lost or altered any fails
            q("UPDATE public.copy_src SET nome = 'app write' WHERE id IN (3, 4)")
            q("UPDATE public.copy_dst SET nome = 'app write' WHERE id = 3")  # 4: stale copy
            q("DELETE FROM public.copy_dst WHERE id IN (7, 9)")
            q("INSERT INTO public.copy_dst SELECT 100000, 'stray', NULL")
            with pytest.raises(MigrationError) as e:
                livewrites.check_copy(c, "public.copy_src", "public.copy_dst", COLS, snap, xid)
            c.rollback()
    finally:
        eng.dispose()
    assert str(e.value) == (
        "the copy of public.copy_src does not match it (missing from the copy: ids 7, 9; in "
        "the copy only: ids 100000; different in the copy: ids 4): rolled back, nothing was "
        "changed"
    )


def test_counters_see_the_app_writes_and_not_the_reads(seeded_url: str) -> None:
    s = settings()
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        a = livewrites.counters(conn, s)
        conn.execute("SELECT count(*) FROM geometrias").fetchone()
        with psycopg.connect(seeded_url, autocommit=True) as app:
            app.execute("UPDATE geometrias SET descricao = 'x' WHERE id <= 3")
            app.execute("DELETE FROM geometrias WHERE id = 10")
        assert livewrites.settled(conn, s, a, wait=5) == 4
        b = livewrites.counters(conn, s)
    assert livewrites.writes_between(a, b) == 4
    assert livewrites.writes_between(a, {**b, "oids": [1]}) is None  # another relation
    load = livewrites.load(a, b)
    assert load["app_writes"] == 4 and load["tuples_read_per_s"] > 0


def test_a_flushed_session_is_counted_before_it_returns(seeded_url: str) -> None:
    """A session that flushed its statistics less than a second ago keeps its next writes
    pending (up to 10 s while idle): ``flush`` puts them in the shared counters before the
    statement returns, so a reading taken right after counts every one."""
    s = settings()
    with (
        psycopg.connect(seeded_url, autocommit=True) as reader,
        psycopg.connect(seeded_url, autocommit=True) as ours,
    ):
        a = livewrites.counters(reader, s)
        ours.execute("UPDATE geometrias SET descricao = descricao WHERE id = 1")  # flushed
        ours.execute("UPDATE geometrias SET descricao = descricao WHERE id <= 100")  # pending
        livewrites.flush(ours)
        b = livewrites.counters(reader, s)
    assert livewrites.writes_between(a, b) == 101


def test_a_steps_own_writes_are_taken_off() -> None:
    a = {"oids": [1], "writes": 10}
    b = {"oids": [1], "writes": 2_010}
    metrics = {"backfill_rows": 1_990, "backfill_caught_up_rows": 5, "vacuum_s": 0.1}
    assert livewrites.own_writes(metrics) == 1_995
    assert livewrites.own_writes(None) == 0
    assert livewrites.writes_between(a, b, livewrites.own_writes(metrics)) == 5
    assert livewrites.writes_between(a, b) == 2_000


def test_different_load_is_said() -> None:
    assert livewrites.differs({"app_writes_per_s": 0.0}, {"app_writes_per_s": 0.0}) is None
    assert livewrites.differs({"app_writes_per_s": 30.0}, {"app_writes_per_s": 40.0}) is None
    assert livewrites.differs({"app_writes_per_s": 0.0}, {"app_writes_per_s": 31.5}) == (
        "baseline measured under 0 app writes/s, this run under 31.5/s: the comparison ran "
        "under different load"
    )


LOST = (
    "DELETE FROM {new} WHERE id = 1234",
    "the copy of public.geometrias does not match it (missing from the copy: ids 1234): "
    "rolled back, nothing was changed",
)
ALTERED = (
    "UPDATE {new} SET nome = 'not the source' WHERE id = 1234",
    "the copy of public.geometrias does not match it (different in the copy: ids 1234): "
    "rolled back, nothing was changed",
)


@pytest.mark.parametrize(("damage", "message"), [LOST, ALTERED], ids=["lost", "altered"])
def test_a_row_damaged_after_the_check_without_the_lock_is_still_caught(
    seeded_url: str, damage: str, message: str
) -> None:
    """The copy loses (or alters) a row between the comparison made while writers go on
    and the lock (here: the catch-up's progress report does it): the part under the lock
    sees that the copy changed by more than the catch-up's own statements, and the full
    comparison names the id."""
    from stage4.ddl import partitioning

    eng = engine(seeded_url)
    seen: list[str] = []
    try:
        with eng.connect() as c:
            r = partitioning.Rebuild(
                s=settings(), bind=c, execute=c.exec_driver_sql, partitioned=True
            )

            def lose_one(phase: str, done: int, total: int) -> None:
                seen.append(phase)
                if phase == "catch-up" and seen.count("catch-up") == 1:
                    c.exec_driver_sql(damage.format(new=r.new))

            r.progress = lose_one
            r.create()
            r.copy()
            r.build_indexes()
            with pytest.raises(MigrationError) as e:
                r.catch_up()
            c.rollback()
    finally:
        eng.dispose()
    assert seen.count("catch-up") == 1  # the report before the lock, not the final one
    assert str(e.value) == message


SCANS = """SELECT coalesce(sum(seq_scan), 0)::int FROM pg_stat_xact_user_tables
WHERE relid = to_regclass(%(t)s)
   OR relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%(t)s))"""
PARTS = "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(%(t)s)"


@pytest.mark.parametrize("delete", [False, True], ids=["no-delete", "a-delete"])
def test_under_the_writers_lock_the_work_follows_the_rows_written(
    seeded_url: str, delete: bool
) -> None:
    """Writers wait from the EXCLUSIVE lock to the commit: there the catch-up passes over
    the source once for the rows written since the check before the lock and counts it
    once; the copy is not scanned (the changed rows are looked up by id), except once,
    when the app deleted rows meanwhile, to find them (an anti-join). Every write the app
    made meanwhile (an update, an insert, a delete) is carried."""
    from stage4.ddl import partitioning

    eng = engine(seeded_url)
    scans: list[tuple[int, int]] = []
    try:
        with eng.connect() as c, psycopg.connect(seeded_url, autocommit=True) as app:
            r = partitioning.Rebuild(
                s=settings(), bind=c, execute=c.exec_driver_sql, partitioned=True
            )

            def at(phase: str, done: int, total: int) -> None:
                if phase != "catch-up":
                    return
                if not scans:  # the report just before the lock: the app writes now
                    app.execute("UPDATE geometrias SET nome = 'late' WHERE id = 11")
                    if delete:
                        app.execute("DELETE FROM geometrias WHERE id = 12")
                    app.execute(
                        "INSERT INTO geometrias (nome, categoria, data_referencia, geom) "
                        "SELECT 'new', categoria, data_referencia, geom FROM geometrias "
                        "WHERE id = 13"
                    )
                q = c.exec_driver_sql
                scans.append((q(SCANS, {"t": r.old}).scalar(), q(SCANS, {"t": r.new}).scalar()))

            r.progress = at
            r.create()
            r.copy()
            r.build_indexes()
            r.catch_up()
            parts = c.exec_driver_sql(PARTS, {"t": r.new}).scalar()
            rows = c.exec_driver_sql(
                f"SELECT (SELECT nome FROM {r.new} WHERE id = 11), "
                f"(SELECT count(*) FROM {r.new} WHERE id = 12), "
                f"(SELECT count(*) FROM {r.new} WHERE nome = 'new')"
            ).first()
            c.rollback()
    finally:
        eng.dispose()
    (old0, new0), (old1, new1) = scans
    assert new1 - new0 <= (parts if delete else 0), "the copy was scanned under the lock"
    assert old1 - old0 <= (3 if delete else 2), f"{old1 - old0} scans of the source"
    assert tuple(rows) == ("late", 0 if delete else 1, 1)
