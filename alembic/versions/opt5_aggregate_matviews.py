"""Q8 from counts kept by each write; materialized views for the queries an app could rewrite.

Creates the monthly counts (``stage4.ddl.counts``: a table of month, category and count,
kept current by a trigger on the table in each writing transaction) and re-points
``contagem_mensal`` at them: same signature, same results at every commit. Creates two
materialized views with unique indexes (tile-ready geometry, the POINT features for
Q9's join; GiST (categoria, geom) indexes need the btree_gist extension, created only
when missing and then dropped by the downgrade), refreshed by one pg_cron job each: the
app's RPCs do not read them (the unit's ``rewrites`` do). Without pg_cron it says once
that refresh is manual: ``stage4 refresh``.

The views and the counts get the grants of ``matviews.grants_sql`` (column by column: a
role granted only some columns of the table reads the columns built from those) and
live in stage4's own schema, out of the API's sight (PostgREST shows what ``public``
holds). The roles the grants let read them get USAGE on that schema (the RPCs are
SECURITY INVOKER); its other objects stay their owner's.

With row level security enabled on the table the views and the counts are readable by
their owner only and the RPC keeps reading the table: they would show every row to every
caller, whatever the policies say.

The counts come last: their trigger holds SHARE ROW EXCLUSIVE on the table until the
step commits (writers wait for the count, not for the views).

Downgrade unschedules the jobs, restores the previous function bodies exactly, takes
back the USAGE it granted and drops the counts and the views (and what an earlier opt5
made: a monthly view, its job, RPC bodies reading the views).

Revision ID: opt5
Revises: opt4
"""

from __future__ import annotations

from alembic import context, op

from stage4.config import settings
from stage4.ddl import cron, functions, matviews
from stage4.errors import MigrationError
from stage4.optimisations import aggregates as agg

revision: str = "opt5"
down_revision: str | None = "opt4"
branch_labels = None
depends_on = None

# Nothing it re-points is served stale (its unit's ``STALENESS`` is empty).


def _repointed(s, schema=None):
    """(previous definition, opt5 definition) of each re-pointed RPC (reading what is in
    ``schema``: default, stage4's own)."""
    return [
        (
            functions.monthly_counts(s),
            functions.monthly_counts(s, agg.monthly_counts_body(s, schema)),
        )
    ]


def _restorable(s, schema=None):
    """(previous definition, the bodies opt5 may have left it with): this one's and an
    earlier opt5's."""
    legacy = agg.legacy_bodies(s, schema)
    return [
        (functions.monthly_counts(s), (agg.monthly_counts_body(s, schema), legacy["Q8"])),
        (functions.tile(s), (legacy["Q10"],)),
    ]


def upgrade() -> None:
    """Views, indexes, counts, grants, RPC body, refresh jobs."""
    s = settings()
    attributes = context.config.attributes
    progress = attributes.get("progress")
    bind = None if context.is_offline_mode() else op.get_bind()
    pairs = _repointed(s)
    if bind is not None:
        for old, new in pairs:
            live = functions.live_body(bind, old.identity)
            if live not in (old.body.strip(), new.body.strip()):
                raise MigrationError(
                    f"opt5 cannot re-point {old.identity}: its body is not the one stage4 "
                    "created (revision schema), so the counts-backed body might not return the "
                    "same results; compare it with `stage4 plan --to schema --since base`"
                )
    views = agg.views(s)
    op.execute(agg.btree_gist_sql())
    for i, view in enumerate(views):
        if progress:
            progress("materialized views", i, len(views))
        for stmt in view.create_sql():
            op.execute(stmt)
        op.execute(view.grants_sql(s.qualified_table))
    op.execute(agg.btree_gist_mark_sql(s))
    if progress:
        progress("materialized views", len(views), len(views))
    op.execute(cron.schedule_sql(agg.jobs(s), "refresh is manual: run `stage4 refresh`"))
    for stmt in agg.monthly(s).build_sql():
        op.execute(stmt)
    op.execute(agg.usage_sql(s))
    if bind is not None and matviews.rls_enabled(bind, s.qualified_table):
        cron.note(
            attributes,
            f"opt5: {s.qualified_table} has row level security enabled; the monthly counts "
            "and the materialized views ignore it, so the RPC keeps reading the table and "
            "they are readable by their owner only",
        )
    else:
        for _, new in pairs:
            op.execute(new.create_sql())
    if bind is not None:
        state = cron.status(bind)
        if not state.runs:
            cron.note(
                attributes,
                f"opt5: {state.reason}; the materialized views are not refreshed "
                "automatically: run `stage4 refresh`",
            )


def downgrade() -> None:
    """Unschedule, restore the previous RPC bodies, take back USAGE, drop the counts and the
    views (in the own schema, or in the table's where an earlier stage4 put them)."""
    s = settings()
    bind = None if context.is_offline_mode() else op.get_bind()
    where = None if bind is None else agg.located(bind, s)
    op.execute(cron.unschedule_sql([j.name for j in agg.jobs(s)] + agg.legacy_jobs(s)))
    for old, bodies in _restorable(s, where):
        live = None if bind is None else functions.live_body(bind, old.identity)
        if bind is None or live in {b.strip() for b in bodies}:
            op.execute(old.create_sql())
    for stmt in agg.usage_revoke_sql(s, where):
        op.execute(stmt)
    for stmt in agg.monthly(s).drop_sql():
        op.execute(stmt)
    op.execute(agg.btree_gist_drop_sql(s, where))
    for view in reversed([agg.legacy_monthly(s, where), *agg.views(s, where)]):
        op.execute(view.drop_sql())
