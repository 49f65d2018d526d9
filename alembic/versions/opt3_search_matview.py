"""Indexed view behind the search RPC: ``geometrias_busca`` and ``buscar_geometrias`` on it.

Creates the materialized view (tsvector, bbox, centroid, category, year) WITH DATA,
its unique, GIN and GiST indexes, gives it the grants of ``matviews.grants_sql``
(the table's SELECT grants while the table has no row level security, its owner only
otherwise), saves the live definition of ``buscar_geometrias`` in the view's comment
and, while the table has no RLS, re-points the function at the view (same signature;
it joins back to the table: see its unit, ``stage4.optimisations.search_matview``). With RLS the function
keeps reading the table, and the revision says so. Users see the same results for
data as of the last ``REFRESH MATERIALIZED VIEW CONCURRENTLY public.geometrias_busca``,
which pg_cron runs every 15 minutes where it runs (``stage4 refresh`` elsewhere): Q4's
staleness budget (``STALENESS``), which the gate accepts only with ``--accept-stale``.

Downgrade unschedules the refresh, re-creates the saved function definition exactly,
then drops the view.

Revision ID: opt3
Revises: opt2
"""

from __future__ import annotations

from alembic import context, op

from stage4.config import settings
from stage4.ddl import cron, matviews
from stage4.optimisations import search_matview

revision: str = "opt3"
down_revision: str | None = "opt2"
branch_labels = None
depends_on = None

# The gate's canary check finds Q4 stale (rows written since the last refresh are not
# found): the budget the user accepts with --accept-stale.
STALENESS = {"Q4": "up to 15 minutes (pg_cron refresh; manual `stage4 refresh` without pg_cron)"}


def upgrade() -> None:
    """View, indexes, grants, saved definition, then the function's new body."""
    s = settings()
    mv = search_matview.view(s)
    for statement in mv.create_sql():
        op.execute(statement)
    op.execute(matviews.grants_sql(s.qualified_table, mv.qualified))
    op.execute(search_matview.save_previous_sql(s))
    op.execute(search_matview.repoint_sql(s))
    bind = None if context.is_offline_mode() else op.get_bind()
    if bind is not None and matviews.rls_enabled(bind, s.qualified_table):
        cron.note(
            context.config.attributes,
            f"opt3: {s.qualified_table} has row level security enabled; a materialized "
            "view ignores it, so buscar_geometrias keeps reading the table and the view "
            "is readable by its owner only",
        )
    op.execute(
        cron.schedule_sql([search_matview.job(s)], "refresh is manual: run `stage4 refresh`")
    )


def downgrade() -> None:
    """Restore the function as it was (it no longer reads the view), then drop the view."""
    s = settings()
    op.execute(cron.unschedule_sql([search_matview.job(s).name]))
    op.execute(search_matview.restore_previous_sql(s))
    op.execute(search_matview.view(s).drop_sql())
