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

Online, in two parts (``stage4.optimisations.gis_columns.online`` runs them step by step):

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

from alembic import context, op

from stage4 import optimisations
from stage4.config import Settings, settings
from stage4.optimisations import gis_columns
from stage4.optimisations.gis_columns import online

revision: str = "opt2"
down_revision: str | None = "opt1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Part 1 in the step's transaction, the backfill in short ones of its own, then the
    RPCs, once every row is filled (``gis_columns.online`` runs each part)."""
    s = settings()
    if context.is_offline_mode():
        online.render(op, s)
        _repoint(s)
        return
    step = online.Upgrade(op, s, context.config.attributes, undo=_down_sql(s))
    step.resume_or_refuse()
    step.add_catalog()
    step.backfill()
    _repoint(s)
    step.report()


def _repoint(s: Settings) -> None:
    """Q1's and Q3's RPCs read the new columns: only once every row is filled."""
    for sql in optimisations.repoint_sql(s, revision):
        op.execute(sql)


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
    then drop the derived columns (catalog only). A stopped backfill runs the same."""
    for sql in _down_sql(settings()):
        op.execute(sql)
