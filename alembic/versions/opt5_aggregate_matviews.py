"""Materialized views for Q8–Q10, refreshed CONCURRENTLY on a pg_cron schedule.

Creates three views with unique indexes (monthly counts, tile-ready geometry,
the POINT features for Q9's join; GiST (categoria, geom) indexes need the btree_gist
extension, created only when missing and then dropped by the downgrade), gives them
the grants of ``matviews.grants_sql`` (column by column: a role granted only some
columns of the table reads the view columns built from those), re-points
``contagem_mensal`` and ``tile_mvt`` at them (same signatures, same results after
a refresh) and schedules one refresh job per view. Without pg_cron it says once
that refresh is manual: ``stage4 refresh``.

The views live in stage4's own schema, out of the API's sight (PostgREST shows what
``public`` holds). The roles the grants let read a view get USAGE on that schema (the
RPCs are SECURITY INVOKER); its other objects stay their owner's.

With row level security enabled on the table the views are created for their
owner only and the RPCs keep reading the table: a view would show every row to
every caller, whatever the policies say.

Downgrade unschedules the jobs, restores the previous function bodies exactly, takes
back the USAGE it granted and drops the views.

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

# Its staleness budgets (Q8, Q10) are declared by its unit: ``agg.STALENESS``.


def _repointed(s, schema=None):
    """(previous definition, opt5 definition) of each re-pointed RPC (reading the views in
    ``schema``: default, stage4's own)."""
    return [
        (
            functions.monthly_counts(s),
            functions.monthly_counts(s, agg.monthly_counts_body(s, schema)),
        ),
        (functions.tile(s), functions.tile(s, agg.tile_body(s, schema))),
    ]


def upgrade() -> None:
    """Views, indexes, grants, RPC bodies, refresh jobs."""
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
                    "created (revision schema), so the view-backed body might not return the "
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
    op.execute(agg.usage_sql(s))
    op.execute(agg.btree_gist_mark_sql(s))
    if progress:
        progress("materialized views", len(views), len(views))
    if bind is not None and matviews.rls_enabled(bind, s.qualified_table):
        cron.note(
            attributes,
            f"opt5: {s.qualified_table} has row level security enabled; materialized views "
            "ignore it, so the RPCs keep reading the table and the views are readable by "
            "their owner only",
        )
    else:
        for _, new in pairs:
            op.execute(new.create_sql())
    op.execute(cron.schedule_sql(agg.jobs(s), "refresh is manual: run `stage4 refresh`"))
    if bind is not None:
        state = cron.status(bind)
        if not state.runs:
            cron.note(
                attributes,
                f"opt5: {state.reason}; the materialized views are not refreshed "
                "automatically: run `stage4 refresh`",
            )


def downgrade() -> None:
    """Unschedule, restore the previous RPC bodies, take back USAGE, drop the views (in the
    own schema, or in the table's where an earlier stage4 put them)."""
    s = settings()
    bind = None if context.is_offline_mode() else op.get_bind()
    where = None if bind is None else agg.located(bind, s)
    op.execute(cron.unschedule_sql([j.name for j in agg.jobs(s)]))
    for old, new in _repointed(s, where):
        if bind is None or functions.live_body(bind, old.identity) == new.body.strip():
            op.execute(old.create_sql())
    op.execute(agg.usage_revoke_sql(s, where))
    op.execute(agg.btree_gist_drop_sql(s, where))
    for view in reversed(agg.views(s, where)):
        op.execute(view.drop_sql())
