"""opt1: geometrias becomes PARTITION BY RANGE (data_referencia), one partition per year.

Same name, columns, defaults, identity sequence (same name, same position: ids
continue), rows, grants, RLS and policies, comments, triggers and publication
membership. Partitions ``geometrias_p2020`` .. ``geometrias_p2028`` (first_year ..
last_year) and ``geometrias_default``, which takes every row outside the range
(nothing is rejected). Indexes are created on the parent under the baseline names
and cascade to every partition. The partitions are their owner's only: what default
privileges granted on them is revoked and row level security is enabled on them with
no policy (rows are reached through the parent, whose grants and policies apply).

What changes for users (PostgreSQL requires a partitioned table's unique keys to
contain the partition key):

* the primary key ``geometrias_pkey`` is ``(id, data_referencia)``: ``id`` alone is no
  longer unique *by constraint* (the identity sequence still hands out unique ids;
  an explicit duplicate id with another date is accepted);
* ``INSERT ... ON CONFLICT (id)`` fails ("no unique or exclusion constraint matching"):
  use ``ON CONFLICT (id, data_referencia)``; PostgREST upserts need
  ``on_conflict=id,data_referencia``;
* a foreign key to ``geometrias(id)`` must become ``(id, data_referencia)``; an UPDATE
  that changes ``data_referencia`` moves the row to another partition;
* publications that publish the table get ``publish_via_partition_root = true`` (so
  Supabase realtime keeps reporting changes as ``public.geometrias``); the downgrade
  restores the previous value;
* inserting directly into a partition bypasses the identity default (use the parent);
* the database gets ``parallel_setup_cost = 50000`` (new sessions): a parallel plan
  over the partitions costs more in worker start-up than short queries take (pre-flight
  measures it), while large scans still save far more than that and stay parallel
  (``stage4.optimisations.partition_by_year``); the downgrade restores the previous
  value exactly;
* a GiST on ``(categoria, geom)`` (btree_gist, created beside PostGIS where missing) is
  built with the other indexes, for Q9's join: each of its probes then visits one
  category's features per partition (``partition_by_year.category_index``); the
  downgrade leaves it out of the plain table and drops btree_gist when this step made it;
* the RPCs of the short reads without a date filter (Q2, Q6, Q7) keep their plans for
  the session instead of planning every partition on every call, and Q2's finds a box's
  rows from the GiST index instead of walking every partition's primary key
  (``partition_by_year.repoints``: same rows, same order), where their bodies are the
  baseline's; the downgrade restores their definitions;
* Q6 (the k nearest) reads one GiST over every row instead of one per partition:
  ``stage4.geometrias_knn``, a narrow copy of its columns kept by a trigger in each
  writing transaction, built from the new table before the catch-up, row level security
  following the table's (``stage4.ddl.nearest``); the downgrade drops it.

The upgrade REFUSES, before changing anything and naming them, when views,
materialized views, SQL-body functions or foreign keys depend on the table (drop,
migrate, recreate: refusing is simpler and safer than recreating them blind), and on
table features it cannot carry over (other unique indexes or constraints, storage
parameters, replica identity using an index, inheritance).

One transaction: a kill or a lock timeout at any point rolls back to the exact
previous state. Writers are blocked only from ``LOCK ... EXCLUSIVE`` (after the
batched copy and a catch-up pass) to commit; readers only during the final swap.
``config.attributes["progress"]`` gets (phase, done, total); when
``config.attributes["metrics"]`` is a dict it receives ``writers_blocked_s`` and
``readers_blocked_s``.

Revision ID: opt1
Revises: schema
"""

from __future__ import annotations

import logging

from alembic import context, op

from stage4 import optimisations
from stage4.config import settings
from stage4.ddl import nearest, partitioning, privileges
from stage4.errors import MigrationError
from stage4.optimisations import partition_by_year

revision: str = "opt1"
down_revision: str | None = "schema"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def _rebuild(partitioned: bool) -> partitioning.Rebuild:
    attrs = context.config.attributes
    s = settings()
    q9 = partition_by_year.category_index(s)
    return partitioning.Rebuild(
        s=s,
        extra_indexes=(q9,) if partitioned else (),
        left_out=() if partitioned else (q9[0],),
        before_swap=() if partitioned else tuple(nearest.drop_sql(s)),
        bind=None if context.is_offline_mode() else op.get_bind(),
        execute=op.execute,
        partitioned=partitioned,
        progress=attrs.get("progress"),
        batch_rows=int(attrs.get("batch_rows", 50_000)),
    )


def _check(r: partitioning.Rebuild, want: str, verb: str) -> None:
    """Refuse, before any change, a table of the wrong kind or with dependents."""
    if r.bind is None:
        op.execute(
            f"-- online: refuses unless {r.old} is a {'plain' if want == 'r' else 'partitioned'}"
            " table without dependent views, functions or foreign keys"
        )
        return
    kind = partitioning.relkind(r.bind, r.s)
    if kind != want:
        shape = {"r": "a plain table", "p": "a partitioned table", None: "missing"}
        raise MigrationError(
            f"cannot {verb} {r.old}: it is {shape.get(kind, f'of relkind {kind}')}, "
            f"expected {shape[want]} (nothing was changed)"
        )
    partitioning.refuse_if_blocked(r.bind, r.s, verb)


def _report(r: partitioning.Rebuild) -> None:
    metrics = context.config.attributes.get("metrics")
    if isinstance(metrics, dict):
        metrics.update(r.metrics)
    if r.metrics:
        blocked = r.metrics["writers_blocked_s"], r.metrics["readers_blocked_s"]
        log.info("opt1: writers blocked %.3f s, readers blocked %.3f s (until commit)", *blocked)


def upgrade() -> None:
    """Plain -> partitioned: check, create, copy, index, catch up, swap, carry over."""
    r = _rebuild(partitioned=True)
    _check(r, "r", "partition")
    op.execute(partition_by_year.btree_gist_sql())  # for Q9's index
    r.create()
    r.copy()
    r.build_indexes()
    for sql in nearest.build_sql(r.s, r.new):  # before the catch-up: its re-copies reach it
        op.execute(sql)
    r.catch_up()
    r.swap()
    for sql in nearest.expose_sql(r.s):
        op.execute(sql)
    partitioning.publications_up(r, partition_by_year.PUBLICATIONS_MEMO)
    op.execute(partition_by_year.index_comment_sql(r.s))
    op.execute(partition_by_year.serial_sql(r.s))
    for sql in optimisations.repoint_sql(r.s, revision):
        op.execute(sql)
    _report(r)


def downgrade() -> None:
    """Partitioned -> plain, from the parent (every partition, opt4's included)."""
    r = _rebuild(partitioned=False)
    _check(r, "p", "un-partition")
    for sql in optimisations.restore_rpcs_sql(r.s, revision):
        op.execute(sql)
    op.execute(partition_by_year.remember_btree_gist_sql(r.s))  # before its index goes
    op.execute(partition_by_year.restore_sql(r.s))  # its memo lives on a partition: first
    flipped = partitioning.publications_down(r, partition_by_year.PUBLICATIONS_MEMO)
    r.create()
    r.copy()
    r.build_indexes()
    r.catch_up()
    r.swap()  # drops the nearest-features copy first (``before_swap``)
    for sql in privileges.via_root_sql(flipped, False):
        op.execute(sql)
    op.execute(partition_by_year.drop_btree_gist_sql())
    _report(r)
