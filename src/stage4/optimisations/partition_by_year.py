"""opt1, the table partitioned by year: its promises, its reference, and its serial setting.

The rebuild itself (plain <-> partitioned in one transaction, readers and writers going
on) is ``stage4.ddl.partitioning.Rebuild``, the helper for partitioned tables.

The serial setting: ``max_parallel_workers_per_gather = 0`` for the database. Why: once
``geometrias`` is partitioned, PostgreSQL plans short viewport queries as a Gather over a
Parallel Append of the partitions (PostGIS's function costs make splitting look worth
it). Where a worker is slow to start (pre-flight measures it; on a small VM it takes
milliseconds, and a worker running PostGIS loads it first) that start costs more than
the whole serial query, and the app's unchanged SQL gets slower. The cure is part of the
revision, not a setting the user must type.

Why the database and not a role or the functions: the app's SQL runs under whatever role
its connection uses (``authenticator`` switching to ``anon``/``authenticated`` on
Supabase), and most of Q1–Q10 are SQL, not functions; a database setting reaches every
new session whatever its role (a role's own setting, where one exists, still wins).
Sessions opened before opt1 keep their value until they reconnect.

Nothing lost: the database's previous value (absent, or a value) is kept in the comment
of the first yearly partition (an object opt1 owns), and the downgrade puts it back
exactly: RESET when there was none, the old value otherwise. When the value is no
longer opt1's ``0`` at downgrade (someone changed it since), it is left as it is.
Changing a database's settings needs its owner (or a superuser): another role gets a
NOTICE and the setting is not changed.
"""

from __future__ import annotations

from dataclasses import replace

from stage4.config import Settings
from stage4.ddl.matviews import MatView
from stage4.ddl.partitioning import NEW_SUFFIX, partition_name, partitions_sql
from stage4.optimisations.base import (
    Creates,
    Promise,
    Reference,
    Rewrite,
    copy_sql,
    creates_partition,
    creates_relation,
)

REVISION = "opt1"
# Pre-flight checks what stops a rebuild (dependent views, foreign keys…) and what a
# parallel worker costs here, before a chain that includes this step.
REBUILDS_TABLE = True

SETTING = "max_parallel_workers_per_gather"
MEMO = f"stage4 opt1: {SETTING} of this database before opt1: "
ABSENT = "(none)"
UNTOUCHED = "(not changed by opt1)"

# The database-level value (setrole = 0), NULL when absent.
_CURRENT = f"""(SELECT split_part(c, '=', 2) FROM pg_db_role_setting d, unnest(d.setconfig) c
   WHERE d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND d.setrole = 0 AND split_part(c, '=', 1) = '{SETTING}')"""
_MAY = """(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
   OR pg_has_role(current_user, (SELECT datdba FROM pg_database
                                 WHERE datname = current_database()), 'USAGE')"""


def memo_table(s: Settings) -> str:
    return f"{s.own_schema}.{partition_name(s, s.first_year)}"


def _memo_of(s: Settings) -> str:
    """The memo table's regclass, in the own schema or where an earlier stage4 put it."""
    legacy = f"{s.schema}.{partition_name(s, s.first_year)}"
    return f"coalesce(to_regclass('{memo_table(s)}'), to_regclass('{legacy}'))"


def serial_sql(s: Settings) -> str:
    """Set the database's value to 0, remembering the previous one (one DO block)."""
    return f"""DO $par$
DECLARE
  previous text := {_CURRENT};
  memo text;
BEGIN
  IF previous = '0' THEN
    memo := '{UNTOUCHED}';
  ELSIF NOT ({_MAY}) THEN
    RAISE NOTICE 'opt1: % is not the owner of database %: {SETTING} not set; short queries on the partitions may run in parallel', current_user, current_database();
    memo := '{UNTOUCHED}';
  ELSE
    memo := coalesce(previous, '{ABSENT}');
    EXECUTE format('ALTER DATABASE %I SET {SETTING} = 0', current_database());
  END IF;
  EXECUTE format('COMMENT ON TABLE {memo_table(s)} IS %L', '{MEMO}' || memo);
END
$par$"""


def restore_sql(s: Settings) -> str:
    """Put back the value ``serial_sql`` found (before the partitions, and the memo, go)."""
    return f"""DO $par$
DECLARE
  note text := obj_description({_memo_of(s)}, 'pg_class');
  previous text;
BEGIN
  IF note IS NULL OR position('{MEMO}' IN note) <> 1 THEN
    RETURN;  -- no memo: opt1 did not change the setting
  END IF;
  previous := substr(note, length('{MEMO}') + 1);
  IF previous = '{UNTOUCHED}' OR {_CURRENT} IS DISTINCT FROM '0' THEN
    RETURN;  -- not opt1's value (any more): keep what is there
  END IF;
  IF previous = '{ABSENT}' THEN
    EXECUTE format('ALTER DATABASE %I RESET {SETTING}', current_database());
  ELSE
    EXECUTE format('ALTER DATABASE %I SET {SETTING} = %L', current_database(), previous);
  END IF;
END
$par$"""


def database_value(bind) -> str | None:
    """The database-level value now (None when absent): for tests and verify."""
    return bind.execute(f"SELECT {_CURRENT}").fetchone()[0]


# ------------------------------------------------------------------ what the unit declares


def views(s: Settings) -> list[MatView]:
    """None: the new table itself is settled as every never-analyzed table is."""
    return []


def promises(s: Settings) -> list[Promise]:
    q, t = s.qualified_table, s.table
    names = ", ".join(
        f"'{partition_name(s, y)}'" for y in [*range(s.first_year, s.last_year + 1), None]
    )
    # partitions of the table by name, in whichever schema they live (the own schema; the
    # table's own where an earlier stage4 put them)
    parts = (
        f"SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        f"WHERE i.inhparent = to_regclass('{q}')"
    )
    return [
        Promise(
            f"{q} is partitioned by range",
            f"SELECT relkind = 'p' FROM pg_class WHERE oid = '{q}'::regclass",
        ),
        Promise(
            f"yearly partitions {s.first_year}–{s.last_year} and a default exist",
            f"SELECT bool_and(p IN ({parts})) FROM unnest(ARRAY[{names}]::name[]) p",
        ),
        Promise(
            "GiST index on the geometry of the parent",
            f"SELECT count(*) > 0 FROM pg_indexes WHERE schemaname = '{s.schema}' "
            f"AND tablename = '{t}' AND indexdef ILIKE '%USING gist ({s.geometry_column})%'",
        ),
    ]


def rewrites(s: Settings) -> dict[str, Rewrite]:
    """None: the app's SQL gains (or loses) from the partitions as it is."""
    return {}


def creates(s: Settings) -> list[Creates]:
    """The yearly partitions, the default one, and the copy built while the step runs."""
    years = range(s.first_year, s.last_year + 1)
    copy = f"{s.schema}.{s.table}{NEW_SUFFIX}"
    return [
        *(creates_partition(s, y) for y in years),
        creates_partition(s, None),
        creates_relation(copy, f"the partitioned copy of {s.qualified_table}"),
    ]


def reference(conn, s: Settings, direction: str, scratch: str) -> Reference:
    """Both ways: INSERT…SELECT of every row into a bare copy (partitioned up, plain down)
    with the same indexes (primary key, GiST, two b-trees), rolled back."""
    ref = f"{scratch}.{s.table}"
    like = "INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION INCLUDING CONSTRAINTS"
    up = direction == "up"
    parts = partitions_sql(replace(s, schema=scratch), ref, scratch) if up else None
    g, d = s.geometry_column, s.time_column
    return Reference(
        (
            *copy_sql(conn, s, ref, like, parts),
            f"ALTER TABLE {ref} ADD PRIMARY KEY (id{f', {d}' if up else ''})",
            f"CREATE INDEX ON {ref} USING gist ({g})",
            f"CREATE INDEX ON {ref} ({d})",
            f"CREATE INDEX ON {ref} (categoria)",
        )
    )
