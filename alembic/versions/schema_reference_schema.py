"""The reference schema: PostGIS, geometrias and the baseline RPC functions, where absent.

On a database that already has the table (production), the table is adopted:
its columns are checked against the contract and nothing destructive happens;
only what is missing (indexes, functions) is created.

Revision ID: schema
Revises:
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy.schema import CreateIndex, CreateTable

from stage4.config import settings
from stage4.ddl import functions, table
from stage4.errors import MigrationError

revision: str = "schema"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the extension, the table, its baseline indexes and the RPC functions if absent."""
    s = settings()
    offline = context.is_offline_mode()
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    geometrias = table.geometrias_table(s)
    bind = None if offline else op.get_bind()
    if bind is not None and table.exists(bind, s):
        problems = table.contract_violations(bind, s)
        if problems:
            raise MigrationError(
                f"{s.qualified_table} exists but cannot be adopted: {'; '.join(problems)}"
            )
        leading = table.indexed_columns(bind, s)
    else:
        op.execute(CreateTable(geometrias, if_not_exists=True))
        leading = set()
    for index in table.baseline_indexes(s, geometrias):
        if next(iter(index.columns)).name not in leading:
            op.execute(CreateIndex(index, if_not_exists=True))
    for fn in functions.baseline(s):
        if bind is not None and (
            other := bind.exec_driver_sql(functions.same_name_sql(fn)).first()
        ):
            raise MigrationError(
                f"{other[0]} exists: the app's RPC {fn.identity} cannot be created beside it "
                "(PostgREST could not tell the two apart); rename or drop it"
            )
        if bind is None or bind.exec_driver_sql(functions.exists_sql(fn)).first() is None:
            op.execute(fn.create_sql())


def downgrade() -> None:
    """Drop the functions and the table; refuse while the table holds rows unless forced."""
    s = settings()
    flag = context.get_x_argument(as_dictionary=True).get("force")
    forced = flag in {"1", "true", "yes"} or bool(context.config.attributes.get("force"))
    if not context.is_offline_mode() and not forced:
        bind = op.get_bind()
        if table.exists(bind, s):
            n = table.row_count(bind, s)
            if n:
                raise MigrationError(
                    f"refusing to drop {s.qualified_table}: it holds {n} rows "
                    "(back it up, then run `alembic -x force=1 downgrade base` to drop it anyway)"
                )
    for fn in functions.baseline(s):
        op.execute(fn.drop_sql())
    op.execute(f"DROP TABLE IF EXISTS {s.qualified_table}")
