"""Future yearly partitions (2029 and beyond), created ahead of time by a scheduled routine.

Adds ``{own_schema}.stage4_ensure_partitions(years_ahead)`` (in stage4's own schema, so
it is no API RPC), runs it once (partitions up to ``last_year + years_ahead``, in the own
schema, rows of those years moved out of the default partition) and schedules it daily with pg_cron where pg_cron runs in this
database; elsewhere it says once that the routine must be run by hand.
Downgrade removes the job and the routine (in the own schema, or in the table's where an
earlier stage4 created it) and keeps every partition and row.

Revision ID: opt4
Revises: opt3
"""

from __future__ import annotations

from alembic import context, op

from stage4.config import settings
from stage4.ddl import cron
from stage4.errors import MigrationError
from stage4.optimisations import future_partitions as fp

revision: str = "opt4"
down_revision: str | None = "opt3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the routine, run it once, schedule it."""
    s = settings()
    attributes = context.config.attributes
    progress = attributes.get("progress")
    offline = context.is_offline_mode()
    bind = None if offline else op.get_bind()
    if bind is not None:
        problem = fp.partitioning_problem(bind, s)
        if problem:
            raise MigrationError(f"opt4 cannot apply: {problem}")
    op.execute(fp.create_function_sql(s))
    op.execute(fp.restrict_sql(s))
    if progress:
        progress("future partitions", 0, 1)
    if bind is None:
        op.execute(fp.run_sql(s))
    else:
        for name, moved in bind.exec_driver_sql(fp.run_sql(s)).all():
            msg = "created %s.%s (%d rows moved out of the default partition)"
            cron.log.info(msg, s.own_schema, name, moved)
    if progress:
        progress("future partitions", 1, 1)
    manual = f"run `{fp.command(s)}` at least once a year"
    op.execute(cron.schedule_sql([fp.job(s)], manual))
    if bind is not None:
        state = cron.status(bind)
        if not state.runs:
            cron.note(
                attributes,
                f"opt4: {state.reason}; future partitions are not created automatically: {manual}",
            )


def downgrade() -> None:
    """Remove the job and the routine; every partition and row stays."""
    s = settings()
    op.execute(cron.unschedule_sql([fp.JOB]))
    op.execute(fp.drop_function_sql(s))
