"""Search index behind the search RPC: GIN on ``geometrias``' own tsvector, current at every commit.

Creates ``geometrias_busca_gin``, a GIN index on the tsvector expression that
``buscar_geometrias`` filters by, on the app's table, and re-points the RPC to the same
query planned at each call (see its unit, ``stage4.optimisations.search_matview``). The
RPC keeps its signature and reads the table as before: same rows, fresh (PostgreSQL keeps
the index in every writing transaction), row level security as on any read. Nothing new
appears in the API: an index is no relation PostgREST shows. A body of the app's own is
not re-pointed, and the revision says so.

Online, the index is built without blocking writers (``stage4.ddl.online_index``): on a
partitioned table an index ``ON ONLY`` the parent, then one built CONCURRENTLY per
partition and attached; on a plain table one CONCURRENTLY. That cannot run in a
transaction, so the step commits before it (there is nothing to commit yet), then ANALYZE
gives the planner the statistics of the indexed expression. A failure or an interrupt
drops what was built before it re-raises; after a kill ``alembic upgrade opt3`` resumes.
The re-pointing (definition saved in the index's comment) commits with the version.
Offline (``--sql``) shows the plain CREATE INDEX, which holds SHARE (writers wait) for
the whole build.

Downgrade re-creates the saved definition of the RPC exactly, then drops the index (and
every partition's), in short lock attempts.

Revision ID: opt3
Revises: opt2
"""

from __future__ import annotations

from alembic import context, op

from stage4.config import settings
from stage4.ddl import cron
from stage4.errors import MigrationError
from stage4.optimisations import search_matview

revision: str = "opt3"
down_revision: str | None = "opt2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The index, built CONCURRENTLY outside the step's transaction; then the RPC."""
    s = settings()
    ix = search_matview.index(s)
    if context.is_offline_mode():
        op.execute(
            "-- online: CREATE INDEX CONCURRENTLY per partition, attached to an index ON ONLY\n"
            "-- the parent (writers never wait for the build), then ANALYZE\n" + ix.create_sql()
        )
        op.execute(ix.comment_sql())
    else:
        _build(ix, s)
        if not search_matview.is_baseline(op.get_bind(), s):
            cron.note(
                context.config.attributes,
                "opt3: buscar_geometrias is the app's own (not the baseline body): kept as it "
                f"is; it uses {ix.qualified} only where it filters by the same expression",
            )
    op.execute(search_matview.repoint_sql(s))


def _build(ix, s) -> None:
    with op.get_context().autocommit_block():
        raw = op.get_bind().connection.driver_connection  # psycopg, in autocommit
        try:
            ix.build(raw)
        except BaseException as e:
            first = _first_line(e)
            try:
                ix.undo(raw)
            except Exception as u:
                raise MigrationError(
                    f"opt3: building {ix.qualified} failed ({first}) and dropping what it "
                    f"had built failed too ({_first_line(u)}): `alembic upgrade opt3` "
                    f"resumes it, `DROP INDEX {ix.qualified}` drops it"
                ) from e
            if isinstance(e, MigrationError | KeyboardInterrupt):
                raise
            raise MigrationError(
                f"opt3: building {ix.qualified} failed ({first}); what it had built is dropped"
            ) from e
        # the expression's statistics (most common lexemes) for the per-call plans; blocks
        # neither readers nor writers, and the step is complete without it
        raw.execute(f"ANALYZE {s.qualified_table}")


def downgrade() -> None:
    """The RPC as it was, then the index and every partition's attached to it."""
    s = settings()
    op.execute(search_matview.restore_sql(s))
    op.execute(search_matview.index(s).drop_sql())


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
