"""The types an optimisation unit declares, and the one helper their references share.

Generic modules (verify, workload, migrations, the scale benchmark) read these and
nothing else of a unit: a promise to check, a rewrite to offer, a reference to time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from stage4.config import Settings
from stage4.ddl import literal
from stage4.ddl.cron import Job
from stage4.ddl.functions import Function
from stage4.ddl.matviews import MatView


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
class Creates:
    """An object a step creates by name, which pre-flight checks before anything runs.

    ``found`` (SQL) returns what holds that name now (``a table``…), no row when nothing
    does; ``mine`` (SQL boolean, optional) holds when what is there is what the step would
    have made itself (a partition of the table left by an earlier run). Anything else of
    that name is someone else's: the step would fail on it, or worse, skip or take it."""

    name: str
    what: str  # what the step makes of that name, for the refusal
    found: str
    mine: str | None = None


_KINDS = ("CASE c.relkind WHEN 'r' THEN 'a table' WHEN 'p' THEN 'a partitioned table' "
          "WHEN 'v' THEN 'a view' WHEN 'm' THEN 'a materialized view' WHEN 'i' THEN 'an index' "
          "WHEN 'I' THEN 'a partitioned index' WHEN 'S' THEN 'a sequence' "
          "WHEN 'f' THEN 'a foreign table' ELSE 'a relation' END")  # fmt: skip


def creates_relation(name: str, what: str, mine: str | None = None) -> Creates:
    """A table, view, index or sequence of that (schema-qualified) name: they share names."""
    found = f"SELECT {_KINDS} FROM pg_class c WHERE c.oid = to_regclass({literal(name)})"
    return Creates(name, what, found, mine)


def creates_function(identity: str, what: str, mine: str | None = None) -> Creates:
    """A function of that signature (``schema.name(argtypes)``)."""
    found = f"SELECT 'a function' WHERE to_regprocedure({literal(identity)}) IS NOT NULL"
    return Creates(identity, what, found, mine)


def creates_column(s: Settings, column: str, what: str, mine: str | None = None) -> Creates:
    """A column of the app's table."""
    found = (
        f"SELECT 'a column of {s.qualified_table} (' || format_type(atttypid, atttypmod) || ')' "
        f"FROM pg_attribute WHERE attrelid = to_regclass({literal(s.qualified_table)}) "
        f"AND attname = {literal(column)} AND attnum > 0 AND NOT attisdropped"
    )
    return Creates(f"{s.qualified_table}.{column}", what, found, mine)


def creates_partition(s: Settings, year: int | None) -> Creates:
    """The table's partition for ``year`` (its default partition for None), named as opt1
    and opt4 name them, in stage4's own schema; one attached to the table with those bounds
    is the step's own."""
    suffix = f"p{year}" if year is not None else "default"
    name = f"{s.own_schema}.{s.table}_{suffix}"
    bound = (
        f"FOR VALUES FROM (''{year}-01-01'') TO (''{year + 1}-01-01'')"
        if year is not None
        else "DEFAULT"
    )
    mine = (
        f"SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        f"WHERE i.inhrelid = to_regclass({literal(name)}) "
        f"AND i.inhparent = to_regclass({literal(s.qualified_table)}) "
        f"AND pg_get_expr(c.relpartbound, c.oid) = '{bound}')"
    )
    what = f"the partition of {s.qualified_table} for " + (
        str(year) if year is not None else "rows of no yearly partition (default)"
    )
    return creates_relation(name, what, mine)


def creates_matview(view) -> list[Creates]:
    """A materialized view (``stage4.ddl.matviews.MatView``) and its indexes."""
    return [
        creates_relation(view.qualified, "the materialized view"),
        *(
            creates_relation(view.qualified_index(n), f"an index of {view.qualified}")
            for n in (view.unique[0], *view.indexes)
        ),
    ]


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


class Unit(Protocol):
    """What one optimisation unit (a module of ``stage4.optimisations``) declares: every
    name below, at module level. The generic modules ask the registry, which asks this.

    ``REVISION`` its Alembic revision; ``REBUILDS_TABLE`` whether its step rebuilds the app's
    table (pre-flight then checks what would stop it); ``STALENESS`` qid -> the staleness
    budget of a read its step serves from a view; ``CLAIMS`` figure -> what MISSION.md
    claims after its step (shown beside the measured one)."""

    REVISION: str
    REBUILDS_TABLE: bool
    STALENESS: Mapping[str, str]
    CLAIMS: Mapping[str, float]

    def promises(self, s: Settings) -> list[Promise]:
        """What holds on the live database once the revision is applied."""

    def views(self, s: Settings) -> list[MatView]:
        """The materialized views it creates (settled after the step)."""

    def repoints(self, s: Settings) -> dict[str, Function]:
        """qid -> the body its revision gives that RPC (where the body is the baseline's)."""

    def jobs(self, s: Settings) -> list[Job]:
        """The pg_cron jobs its step schedules (where pg_cron is installed)."""

    def rewrites(self, s: Settings) -> dict[str, Rewrite]:
        """qid -> SQL the app could adopt, measured beside its query and never judged."""

    def creates(self, s: Settings) -> list[Creates]:
        """The objects its step creates by name (pre-flight refuses collisions)."""

    def reference(self, conn: Any, s: Settings, direction: str, scratch: str) -> Reference:
        """The bare work of its step, for the scale benchmark to time beside it."""
