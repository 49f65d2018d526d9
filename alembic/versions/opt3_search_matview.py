"""Indexed view behind the search RPC: ``geometrias_busca`` and ``buscar_geometrias`` on it.

Creates the materialized view (tsvector, bbox, centroid, category, year) WITH DATA,
its unique, GIN and GiST indexes, copies the table's SELECT grants to it, saves the
live definition of ``buscar_geometrias`` in the view's comment and re-points the
function at the view (same signature; it joins back to the table, so RLS policies
still apply: see ``stage4.ddl.search_matview``). Users see the same results for
data as of the last ``REFRESH MATERIALIZED VIEW CONCURRENTLY public.geometrias_busca``.

Downgrade re-creates the saved function definition exactly, then drops the view.

Revision ID: opt3
Revises: opt2
"""

from __future__ import annotations

from alembic import op

from stage4.config import settings
from stage4.ddl import matviews, search_matview

revision: str = "opt3"
down_revision: str | None = "opt2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """View, indexes, grants, saved definition, then the function's new body."""
    s = settings()
    mv = search_matview.view(s)
    for statement in mv.create_sql():
        op.execute(statement)
    op.execute(matviews.copy_select_grants_sql(s.qualified_table, mv))
    op.execute(search_matview.save_previous_sql(s))
    op.execute(search_matview.search_on_view(s).create_sql())


def downgrade() -> None:
    """Restore the function as it was (it no longer reads the view), then drop the view."""
    s = settings()
    op.execute(search_matview.restore_previous_sql(s))
    op.execute(search_matview.view(s).drop_sql())
