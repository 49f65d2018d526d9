"""The types an optimisation unit declares, and the one helper their references share.

Generic modules (verify, workload, migrations, the scale benchmark) read these and
nothing else of a unit: a promise to check, a rewrite to offer, a reference to time.
"""

from __future__ import annotations

from dataclasses import dataclass

from stage4.config import Settings


@dataclass(frozen=True)
class Promise:
    """What a revision promises once applied: ``sql`` returns one boolean on the live database.

    ``condition`` (a SQL boolean) limits the promise to databases where it holds (pg_cron
    installed, row level security off); elsewhere it is not checked."""

    text: str
    sql: str
    condition: str | None = None


@dataclass(frozen=True)
class Rewrite:
    """A faster SQL for a query that the app would have to adopt (its code changes).

    Offered when ``requires`` (a SQL boolean; one naming a relation or column that does
    not exist does not hold) is true; measured beside the app's query, never judged."""

    requires: str
    sql: str


@dataclass(frozen=True)
class Reference:
    """The bare work a step does at least, for the scale benchmark to time beside the step.

    ``setup`` runs first, untimed and committed (copies in the scratch schema for a
    downgrade to drop); ``statements`` are timed, then rolled back, or committed when
    ``committed``: a DROP costs little until COMMIT (file unlink, eviction from
    shared_buffers, the commit record), which the step pays too."""

    statements: tuple[str, ...]
    setup: tuple[str, ...] = ()
    committed: bool = False


def copy_sql(
    conn, s: Settings, dst: str, like: str, partitions: list[str] | None = None
) -> list[str]:
    """CREATE TABLE ``dst`` (LIKE the table …), partitioned by the time column when
    ``partitions`` (their CREATE statements) are given, then INSERT … SELECT of every row
    (the stored, non-generated columns, read from ``conn``)."""
    cols = ", ".join(
        r[0]
        for r in conn.execute(
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (s.qualified_table,),
        ).fetchall()
    )
    create = f"CREATE TABLE {dst} (LIKE {s.qualified_table} {like})"
    if partitions is not None:
        create += f" PARTITION BY RANGE ({s.time_column})"
    insert = f"INSERT INTO {dst} ({cols}) SELECT {cols} FROM {s.qualified_table}"
    return [create, *(partitions or []), insert]
