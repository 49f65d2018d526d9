"""Column-oriented storage for GIS: area/bbox columns kept by a trigger, lz4 for the wide columns.

Adds ``area_m2`` and ``bbox_xmin/ymin/xmax/ymax`` (plain ``double precision``, kept
equal to their expressions of ``geom`` by a BEFORE INSERT OR UPDATE trigger, cloned to
every partition) and switches ``descricao``/``propriedades`` to lz4 + EXTENDED storage
for values written from now on (existing values are not rewritten: see
``stage4.optimisations.gis_columns``). The RPCs of Q1 and Q3 are re-pointed to read the
stored columns (``gis_columns.repoints``: same signature, same rows), once every row is
filled, where their bodies are the baseline's; downgrade restores their definitions first.
 Users see five more columns in ``SELECT *``; what a client writes into them is
replaced by the trigger.

Online, in two parts:

1. One short transaction, catalog only: the columns (no default: no rewrite), their
   comments, the storage settings, the trigger function and the trigger. It holds
   ACCESS EXCLUSIVE from the ALTER TABLE to its commit (milliseconds; it waits for
   at most ``lock_timeout`` for the app's running queries, readers queueing behind it
   meanwhile). From its commit on, every row the app writes is computed by the trigger.
2. The backfill of the rows already there (``stage4.ddl.backfill``), outside that
   transaction: batches of heap blocks, each an UPDATE committed on its own (Alembic's
   ``autocommit_block``), then a catch-up of rows the app moved into blocks already
   passed, a count proving no row with a geometry is left without its area, a marker on
   the trigger (what the rewrites require), and VACUUM (ANALYZE) of the new columns.
   Readers never wait for it; a writer waits only when it writes a row of the batch in
   flight (batches last about 0.2 s).

What the backfill does to the app, accepted because the alternative, a STORED generated
column, rewrites the table under ACCESS EXCLUSIVE (every reader and writer waits for
the whole rewrite, seconds to tens of seconds at a million rows):

* it is an UPDATE of every row: the app's row triggers without a column list fire for
  each (ones with ``UPDATE OF`` a column of the app's do not), logical replication and
  Supabase Realtime receive every row as updated, and the WAL carries every row once;
* every row gets a new version: the indexes hold the old ones' entries until the
  VACUUM at the end; the heap grows by a fraction of each partition only (the backfill
  vacuums each partition between batches, so new versions reuse the old ones' space).

Interrupted or failed during the backfill (SIGINT/SIGTERM, a lock that never came
free, an error), the upgrade drops what part 1 added (the downgrade's statements,
catalog only) before it re-raises: the database is back at opt1 exactly, whatever
share of rows was filled. Killed outright (SIGKILL), it leaves part 1 committed at
opt1; ``alembic upgrade opt2`` then resumes the backfill (the trigger marks what is
this revision's own; columns of the same names without it are refused).

Downgrade, catalog only: drops the trigger, its function and exactly these columns,
and puts back the storage and compression the wide columns had before (saved in the
comment of ``area_m2``). It loses nothing the app wrote: the columns only ever held
values derived from ``geom``.

``config.attributes["progress"]`` gets (phase, done, total) during the backfill (done
and total in heap blocks; ``backfill_target_s`` and ``backfill_first_blocks`` size the
batches, ``backfill_vacuum_every`` and ``backfill_vacuum_min_blocks`` space the VACUUMs
between them); a ``config.attributes["metrics"]`` dict receives
``readers_blocked_s`` (part 1), ``writers_blocked_s`` (the longer of part 1 and the
longest batch), and the backfill's figures.

Revision ID: opt2
Revises: opt1
"""

from __future__ import annotations

import contextlib
import logging
import time

from alembic import context, op

from stage4 import interrupts, optimisations
from stage4.config import Settings, settings
from stage4.ddl import backfill
from stage4.errors import MigrationError
from stage4.optimisations import gis_columns

revision: str = "opt2"
down_revision: str | None = "opt1"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def _catalog(s: Settings) -> None:
    """Part 1 (the step's transaction): columns, comments, storage, column grants (who
    reads ``geom`` column by column reads them too), function, trigger."""
    op.execute(gis_columns.add_columns_sql(s))
    for statement in gis_columns.comments(s):
        op.execute(statement)
    op.execute(gis_columns.set_storage_sql(s))
    op.execute(gis_columns.column_grants_sql(s))
    op.execute(gis_columns.function_sql(s))
    op.execute(gis_columns.trigger_sql(s))


def _vacuum_sql(s: Settings) -> str:
    return f"VACUUM (ANALYZE) {s.qualified_table} ({', '.join(gis_columns.derived(s))})"


def _offline(s: Settings) -> None:
    _catalog(s)
    with op.get_context().autocommit_block():
        op.execute(
            "-- online: filled in batches of heap blocks per partition, each committed on its\n"
            "-- own (any write of a derived column makes the trigger compute all five), then\n"
            "-- the rows the app moved meanwhile, then a check that none is left\n"
            f"UPDATE {s.qualified_table} SET {gis_columns.backfill_set(s)} "
            f"WHERE {gis_columns.backfill_todo(s)}"
        )
        op.execute(gis_columns.filled_sql(s))
        op.execute(_vacuum_sql(s))
    for sql in optimisations.repoint_sql(s, revision):
        op.execute(sql)


def upgrade() -> None:
    """Part 1 in the step's transaction, then the backfill in its own short ones."""
    s = settings()
    if context.is_offline_mode():
        _offline(s)
        return
    bind = op.get_bind()
    resumed = bool(bind.exec_driver_sql(gis_columns.leftover_sql(s)).scalar())
    t0 = time.perf_counter()
    if resumed:
        log.info("opt2: columns and trigger found from an upgrade that was stopped: resuming")
    else:
        clash = [r[0] for r in bind.exec_driver_sql(gis_columns.existing_columns_sql(s))]
        if clash:
            raise MigrationError(
                f"{s.qualified_table} already has column(s) {', '.join(clash)}: "
                "rename or drop them before opt2 (it will not adopt columns it did not create)"
            )
        _catalog(s)
    attrs = context.config.attributes
    left: list[str] = []  # what is left when the undo failed too
    try:
        with op.get_context().autocommit_block():  # commits part 1
            held = 0.0 if resumed else time.perf_counter() - t0
            raw = op.get_bind().connection.driver_connection  # psycopg, in autocommit
            filler = backfill.Backfill(
                raw,
                s.qualified_table,
                gis_columns.backfill_set(s),
                gis_columns.backfill_todo(s),
                progress=attrs.get("progress"),
                **{
                    k: attrs[f"backfill_{k}"]
                    for k in ("target_s", "first_blocks", "vacuum_every", "vacuum_min_blocks")
                    if f"backfill_{k}" in attrs
                },
            )
            try:
                _fill(raw, s, filler)
            except BaseException as e:
                left.extend(_undo(raw, s, e))
                if isinstance(e, Exception):  # an interrupt stays one
                    raise MigrationError(left[0] if left else _rolled_back(e)) from e
                raise
    except Exception as e:
        # a lost connection also fails Alembic's commit on leaving the block, whose error
        # would hide where the database stands
        if left and not isinstance(e, MigrationError):
            raise MigrationError(left[0]) from e
        raise
    for sql in optimisations.repoint_sql(s, revision):  # with the version, once every row is filled
        op.execute(sql)
    m = filler.metrics
    m["readers_blocked_s"] = round(held, 4)
    m["writers_blocked_s"] = round(max(held, m.get("backfill_longest_batch_s", 0.0)), 4)
    metrics = attrs.get("metrics")
    if isinstance(metrics, dict):
        metrics.update(m)
    log.info(
        "opt2: ACCESS EXCLUSIVE %.3f s, %s rows filled in %s batches (longest %.3f s)",
        held,
        m.get("backfill_rows"),
        m.get("backfill_batches"),
        m.get("backfill_longest_batch_s", 0.0),
    )


def _fill(raw, s: Settings, filler: backfill.Backfill) -> None:
    """Part 2: backfill, catch up, prove it, mark it, VACUUM (ANALYZE)."""
    import psycopg

    prior = raw.execute("SELECT current_setting('row_security')").fetchone()[0]
    # row level security hiding rows from us would be an error, never a partial fill
    raw.execute("SET row_security = off")
    try:
        filler.run()
        filler.catch_up()
        filler.check()
        raw.execute(gis_columns.filled_sql(s))
    finally:
        with contextlib.suppress(psycopg.Error):
            raw.execute("SELECT set_config('row_security', %s, false)", (prior,))
    t0 = time.perf_counter()
    if filler.progress:
        filler.progress("VACUUM (ANALYZE) after the backfill", 0, 1)
    try:  # the old row versions: blocks nobody; the step is complete without it
        raw.execute(_vacuum_sql(s))
        filler.metrics["vacuum_s"] = round(time.perf_counter() - t0, 3)
    except psycopg.Error as e:
        log.warning(
            "opt2: VACUUM (ANALYZE) after the backfill failed (autovacuum will do it): %s",
            str(e).strip().splitlines()[0],
        )
    if filler.progress:
        filler.progress("VACUUM (ANALYZE) after the backfill", 1, 1)


def _why(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _rolled_back(error: BaseException) -> str:
    return (
        "upgrade to opt2 failed during its backfill and was rolled back (its columns and "
        f"trigger dropped): {_why(error)}"
    )


def _undo(raw, s: Settings, error: BaseException) -> list[str]:
    """The backfill stopped: drop what part 1 committed (one transaction, catalog only),
    signals held off meanwhile. Returns the line saying what is left when that failed too
    (a lost connection, a lock never granted), else nothing."""
    import psycopg

    try:
        with interrupts.shielded(), raw.transaction():
            for sql in _down_sql(s):
                raw.execute(sql)
    except psycopg.Error as e:
        message = (
            f"upgrade to opt2 stopped during its backfill ({_why(error)}) and dropping its "
            f"columns failed ({_why(e)}): {s.qualified_table} is at opt1 with opt2's columns "
            "and trigger; `alembic upgrade opt2` resumes the backfill"
        )
        log.warning("%s", message)
        return [message]
    return []


def _down_sql(s: Settings) -> list[str]:
    # The table (then its partitions) first: DROP TRIGGER opens the table with a weak lock,
    # drops the partitions' clones, and only then asks for ACCESS EXCLUSIVE on the table,
    # which deadlocks with any reader between the two.
    return [
        f"LOCK TABLE {s.qualified_table} IN ACCESS EXCLUSIVE MODE",
        *optimisations.restore_rpcs_sql(s, revision),
        *gis_columns.drop_trigger_sql(s),
        gis_columns.restore_storage_sql(s),
        gis_columns.drop_columns_sql(s),
    ]


def downgrade() -> None:
    """Drop the trigger and its function, restore the wide columns' storage/compression,
    then drop the derived columns (catalog only)."""
    for sql in _down_sql(settings()):
        op.execute(sql)
