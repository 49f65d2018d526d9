"""The online backfill vacuums the leaf it fills between batches, so that every row's new
version reuses the space of the versions it updated before instead of doubling the leaf."""

from __future__ import annotations

import logging

import psycopg
import pytest

from stage4.config import settings
from stage4.ddl.backfill import Backfill
from stage4.plumbing import interrupts, migrations, seed

HEAP_BLOCKS = (
    "SELECT relid::regclass::text, pg_relation_size(relid) / 8192 "
    "FROM pg_partition_tree(%s::regclass) WHERE isleaf ORDER BY 1"
)
# five new plain double precision columns widen every row by about an eighth
AREA_RIGHT = (
    "SELECT count(*) FILTER (WHERE area_m2 IS DISTINCT FROM ST_Area(geom::geography) "
    "OR bbox_xmin IS DISTINCT FROM ST_XMin(geom::box3d) "
    "OR bbox_ymax IS DISTINCT FROM ST_YMax(geom::box3d)), count(*) FROM geometrias"
)


def _blocks(conn, table: str) -> dict[str, int]:
    return dict(conn.execute(HEAP_BLOCKS, (table,)).fetchall())


@pytest.mark.slow
@pytest.mark.parametrize(("vacuum_every", "low", "high"), [(0.125, 1.0, 1.5), (0, 1.9, 2.5)])
def test_opt2_grows_each_partition_by_a_fraction_only(seeded_url, vacuum_every, low, high):
    """opt1 then opt2 over leaves of about 90 full blocks, in batches of 8 blocks: with the
    VACUUMs the leaves end about 1.3 times their size (the new columns and one interval);
    without them (``vacuum_every`` 0) about 2.1 times. Every row is filled either way."""
    with psycopg.connect(seeded_url) as conn:
        seed.seed(conn, settings(), features=20_000, append=True)
    migrations.upgrade(seeded_url, "opt1")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        before = _blocks(conn, "public.geometrias")
        metrics: dict = {}
        migrations.upgrade(
            seeded_url,
            "opt2",
            metrics=metrics,
            backfill_target_s=0.0001,
            backfill_first_blocks=8,
            backfill_vacuum_every=vacuum_every,
            backfill_vacuum_min_blocks=8,
        )
        after = _blocks(conn, "public.geometrias")
        assert conn.execute(AREA_RIGHT).fetchone() == (0, 22_000)
    assert migrations.current(seeded_url) == "opt2"
    assert after.keys() == before.keys()
    grown = sum(after.values()) / sum(before.values())
    assert low <= grown <= high, (before, after)
    assert metrics["backfill_batches"] >= 5 * len(before)
    assert metrics["backfill_rows"] == 22_000
    assert (metrics["backfill_vacuums"] > 0) == (vacuum_every > 0)


TABLE = "filled"


def _heap(conn) -> int:
    return sum(_blocks(conn, TABLE).values())


@pytest.fixture
def filled(db_url):
    """A plain table of 2000 rows in full pages (about 64 blocks), ``done`` to fill."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {TABLE} (id int PRIMARY KEY, pad text, done int) "
            "WITH (autovacuum_enabled = off)"
        )
        conn.execute(
            f"INSERT INTO {TABLE} SELECT i, repeat('x', 200), NULL FROM generate_series(1, 2000) i"
        )
        conn.execute(f"VACUUM (ANALYZE) {TABLE}")
        yield conn


def _backfill(conn, **kw) -> Backfill:
    return Backfill(conn, TABLE, "done = 1", "done IS NULL", target_s=0.0001, first_blocks=4, **kw)


@pytest.mark.slow
def test_a_vacuum_it_cannot_lock_is_skipped(filled, db_url, caplog):
    """Another session holds SHARE UPDATE EXCLUSIVE on the table (as autovacuum would):
    each VACUUM gives up after lock_timeout, is skipped and said, and the backfill fills
    every row anyway (the table doubles, as without VACUUMs)."""
    before = _heap(filled)
    filled.execute("SET lock_timeout = '50ms'")
    with psycopg.connect(db_url) as other:
        other.execute(f"LOCK TABLE {TABLE} IN SHARE UPDATE EXCLUSIVE MODE")
        filler = _backfill(filled, vacuum_every=0.125, vacuum_min_blocks=8)
        with caplog.at_level(logging.INFO, logger="stage4.ddl.backfill"):
            assert filler.run() == 2000
    assert filler.left() == 0
    assert filler.metrics["backfill_vacuums"] == 0
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped and all(m.startswith(f"backfill: VACUUM {TABLE} skipped") for m in skipped)
    assert _heap(filled) >= 1.8 * before


def test_the_vacuums_keep_the_table_near_its_size(filled):
    """The same backfill with nobody in the way: VACUUMs run and the rows' new versions
    go into the space they free (the table grows by about one interval, an eighth)."""
    before = _heap(filled)
    filler = _backfill(filled, vacuum_every=0.125, vacuum_min_blocks=8)
    assert filler.run() == 2000
    assert filler.left() == 0
    assert filler.metrics["backfill_vacuums"] >= 5
    assert _heap(filled) <= 1.3 * before


def test_an_interrupt_stops_before_the_vacuum(filled):
    """A signal swallowed during a batch (only ``interrupts.check`` sees it) stops the
    backfill before the VACUUM due after that batch: the batch is committed, no VACUUM
    ran, no other batch either."""

    def progress(phase: str, done: int, total: int) -> None:
        if 0 < done < total:
            interrupts._pending = True  # what a signal handled inside a finaliser leaves

    first = filled.execute(f"SELECT count(*) FROM {TABLE} WHERE ctid < '(4,0)'").fetchone()[0]
    filler = _backfill(filled, vacuum_every=0.01, vacuum_min_blocks=4, progress=progress)
    try:
        with pytest.raises(KeyboardInterrupt):
            filler.run()
    finally:
        interrupts.clear()
    vacuumed = filled.execute(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = %s::regclass", (TABLE,)
    ).fetchone()[0]
    assert vacuumed == 1  # the fixture's own VACUUM only
    assert 2000 - filler.left() == first  # the first batch: blocks 0 to 3
