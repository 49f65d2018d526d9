"""Column-oriented storage for GIS: stored area/bbox columns, lz4 for the wide columns.

Adds ``area_m2`` and ``bbox_xmin/ymin/xmax/ymax`` as STORED generated columns (kept
right by PostgreSQL on every write, cascaded to partitions when the table is
partitioned) and switches ``descricao``/``propriedades`` to lz4 + EXTENDED storage for
values written from now on (existing values are not rewritten: see
``stage4.optimisations.gis_columns``). An app that reads the stored columns (Q1 and Q3 as
``gis_columns.rewrites`` writes them) gains from them; the app's SQL as it is does not
change. Users see five more columns in ``SELECT *`` (read-only:
writing them is an error, as for any generated column).

Downgrade drops exactly these columns and puts back the storage and compression the
wide columns had before (saved in the comment of ``area_m2``).

Revision ID: opt2
Revises: opt1
"""

from __future__ import annotations

from alembic import context, op

from stage4.config import settings
from stage4.errors import MigrationError
from stage4.optimisations import gis_columns

revision: str = "opt2"
down_revision: str | None = "opt1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the derived columns (one table rewrite), comment them, set lz4 on wide columns."""
    s = settings()
    if not context.is_offline_mode():
        bind = op.get_bind()
        clash = [r[0] for r in bind.exec_driver_sql(gis_columns.existing_columns_sql(s))]
        if clash:
            raise MigrationError(
                f"{s.qualified_table} already has column(s) {', '.join(clash)}: "
                "rename or drop them before opt2 (it will not adopt columns it did not create)"
            )
    op.execute(gis_columns.add_columns_sql(s))
    for statement in gis_columns.comments(s):
        op.execute(statement)
    op.execute(gis_columns.set_storage_sql(s))
    # Statistics for the new columns only: the others' are unchanged by the rewrite, and
    # the geometry's (the costly part of a full ANALYZE) would be recomputed for nothing.
    op.execute(f"ANALYZE {s.qualified_table} ({', '.join(gis_columns.derived(s))})")


def downgrade() -> None:
    """Restore the wide columns' storage/compression, then drop the derived columns."""
    s = settings()
    op.execute(gis_columns.restore_storage_sql(s))
    op.execute(gis_columns.drop_columns_sql(s))
