"""Indexed view behind the search RPC: ``geometrias_busca`` and ``buscar_geometrias`` on it.

Creates the materialized view (tsvector, bbox, centroid, category, year) WITH DATA,
its unique, GIN and GiST indexes, copies the table's SELECT grants to it, saves the
live definition of ``buscar_geometrias`` in the view's comment and re-points the
function at the view (same signature; it joins back to the table, so RLS policies
still apply: see ``stage4.ddl.search_matview``). Users see the same results for
data as of the last ``REFRESH MATERIALIZED VIEW CONCURRENTLY public.geometrias_busca``,
which pg_cron runs every 15 minutes where it runs (``stage4 refresh`` elsewhere): Q4's
staleness budget (``STALENESS``), which the gate accepts only with ``--accept-stale``.

Downgrade unschedules the refresh, re-creates the saved function definition exactly,
then drops the view.

Revision ID: opt3
Revises: opt2
"""

from __future__ import annotations

from alembic import op

from stage4.config import settings
from stage4.ddl import cron, matviews, search_matview

revision: str = "opt3"
down_revision: str | None = "opt2"
branch_labels = None
depends_on = None

# The gate's canary check finds Q4 stale (rows written since the last refresh are not
# found): the budget the user accepts with --accept-stale.
STALENESS = {"Q4": "up to 15 minutes (pg_cron refresh; manual `stage4 refresh` without pg_cron)"}
SCHEDULE = "7-59/15 * * * *"  # between opt5's refreshes


def _job(s) -> cron.Job:
    mv = search_matview.view(s)
    return cron.Job(f"stage4_refresh_{mv.name}", SCHEDULE,
                    f"REFRESH MATERIALIZED VIEW CONCURRENTLY {mv.qualified}")  # fmt: skip


def upgrade() -> None:
    """View, indexes, grants, saved definition, then the function's new body."""
    s = settings()
    mv = search_matview.view(s)
    for statement in mv.create_sql():
        op.execute(statement)
    op.execute(matviews.copy_select_grants_sql(s.qualified_table, mv))
    op.execute(search_matview.save_previous_sql(s))
    op.execute(search_matview.search_on_view(s).create_sql())
    op.execute(cron.schedule_sql([_job(s)], "refresh is manual: run `stage4 refresh`"))


def downgrade() -> None:
    """Restore the function as it was (it no longer reads the view), then drop the view."""
    s = settings()
    op.execute(cron.unschedule_sql([_job(s).name]))
    op.execute(search_matview.restore_previous_sql(s))
    op.execute(search_matview.view(s).drop_sql())
