"""opt1, the table partitioned by year: its promises, its reference, and its parallel cost.

The rebuild itself (plain <-> partitioned in one transaction, readers and writers going
on) is ``stage4.ddl.partitioning.Rebuild``, the helper for partitioned tables.

The parallel cost: ``parallel_setup_cost = 50000`` for the database (PostgreSQL's
default is 1000). Why: once ``geometrias`` is partitioned, PostgreSQL plans short
viewport queries as a Gather over a Parallel Append of the partitions (PostGIS's
function costs make splitting look worth it). Where a worker is slow to start
(pre-flight measures it; on a small VM it takes milliseconds, and a worker running
PostGIS loads it first) that start costs more than the whole serial query. At 1M
features the short reads' plans save under 30,000 cost units by going parallel (Q7:
~3,000–27,000), the large ones over 100,000 (Q1 and Q3 on a big viewport, a scan of
every row: millions): at 50000 the first run serially and the second keep their
workers (``benchmarks/probes/parallel_lever.py``; BENCHMARKS.md, "opt1's planner
setting"). On other tables a plain scan saves fewer units per row (a plain GROUP BY
over 1M rows: ~10,600), so plain scans of up to a few million rows run serially too;
under ``max_parallel_workers_per_gather = 0`` every query does.

Why not narrower: PostgreSQL 15 takes no storage parameter on a partitioned table, and
``parallel_workers = 0`` on each partition still leaves a Parallel Append of their
serial scans (its worker count comes from the number of partitions), which the
planner keeps choosing for Q7. A function's own setting reaches the RPCs only, and most
of Q1–Q10 are SQL. A role's setting misses whatever role the app connects as
(``authenticator`` switching to ``anon``/``authenticated`` on Supabase); a database
setting reaches every new session whatever its role (a role's own setting, where one
exists, still wins). Sessions opened before opt1 keep their value until they reconnect.

Nothing lost: the database's previous value (absent, or a value) is kept in the comment
of the first yearly partition (an object opt1 owns), with the setting's name, and the
downgrade puts it back exactly: RESET when there was none, the old value otherwise.
When the value is no longer opt1's at downgrade (someone changed it since), it is left
as it is. A memo naming ``max_parallel_workers_per_gather`` (set to 0 by stage4s that
kept short reads serial that way) is put back the same way. Changing a database's settings needs its owner
(or a superuser): another role gets a NOTICE and the setting is not changed.
"""

from __future__ import annotations

from dataclasses import replace

from stage4.config import Settings
from stage4.ddl import functions, literal, nearest
from stage4.ddl.cron import Job
from stage4.ddl.functions import Function
from stage4.ddl.matviews import MatView
from stage4.ddl.partitioning import NEW_SUFFIX, partition_name, partitions_sql
from stage4.optimisations.base import (
    Creates,
    Promise,
    Reference,
    Rewrite,
    copy_sql,
    creates_function,
    creates_partition,
    creates_relation,
)
from stage4.queries import base_sql

REVISION = "opt1"
# Pre-flight checks what stops a rebuild (dependent views, foreign keys…) and what a
# parallel worker costs here, before a chain that includes this step.
REBUILDS_TABLE = True
# MISSION.md's figure after this step (claimed, never measured): ``stage4.measure.report`` shows it
# beside the measured one.
CLAIMS = {"Q5": 27.3}
STALENESS: dict[str, str] = {}  # fresh: every read reads the table

SETTING = "parallel_setup_cost"
VALUE = "50000"
# What opt1 sets, by setting: the downgrade restores a memo naming any of them.
OURS = {SETTING: VALUE, "max_parallel_workers_per_gather": "0"}
MEMO = f"stage4 opt1: {SETTING} of this database before opt1: "
# on the default partition: the publications the upgrade set to publish via the root
PUBLICATIONS_MEMO = "stage4 opt1: publish_via_partition_root was false before opt1 on: "
_MEMO_RE = "^stage4 opt1: ([a-z_]+) of this database before opt1: (.*)$"
ABSENT = "(none)"
UNTOUCHED = "(not changed by opt1)"


def _current(name: str) -> str:
    """The database-level value (setrole = 0) of the setting ``name`` (an SQL text
    expression), NULL when absent."""
    return f"""(SELECT split_part(c, '=', 2) FROM pg_db_role_setting d, unnest(d.setconfig) c
   WHERE d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND d.setrole = 0 AND split_part(c, '=', 1) = {name})"""


_CURRENT = _current(f"'{SETTING}'")
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
    """Set the database's value to opt1's, remembering the previous one (one DO block)."""
    return f"""DO $par$
DECLARE
  previous text := {_CURRENT};
  memo text;
BEGIN
  IF previous = '{VALUE}' THEN
    memo := '{UNTOUCHED}';
  ELSIF NOT ({_MAY}) THEN
    RAISE NOTICE 'opt1: % is not the owner of database %: {SETTING} not set; short queries on the partitions may run in parallel', current_user, current_database();
    memo := '{UNTOUCHED}';
  ELSE
    memo := coalesce(previous, '{ABSENT}');
    EXECUTE format('ALTER DATABASE %I SET {SETTING} = {VALUE}', current_database());
  END IF;
  EXECUTE format('COMMENT ON TABLE {memo_table(s)} IS %L', '{MEMO}' || memo);
END
$par$"""


def restore_sql(s: Settings) -> str:
    """Put back the value ``serial_sql`` found (before the partitions, and the memo, go)."""
    ours = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in OURS.items())
    return f"""DO $par$
DECLARE
  memo text[] := regexp_match(
    obj_description({_memo_of(s)}, 'pg_class'), '{_MEMO_RE}');
  setting text := memo[1];
  previous text := memo[2];
BEGIN
  IF memo IS NULL OR (CASE setting {ours} END) IS NULL THEN
    RETURN;  -- no memo: opt1 did not change a setting
  END IF;
  IF previous = '{UNTOUCHED}'
     OR {_current("setting")} IS DISTINCT FROM (CASE setting {ours} END) THEN
    RETURN;  -- not opt1's value (any more): keep what is there
  END IF;
  IF previous = '{ABSENT}' THEN
    EXECUTE format('ALTER DATABASE %I RESET %I', current_database(), setting);
  ELSE
    EXECUTE format('ALTER DATABASE %I SET %I = %L', current_database(), setting, previous);
  END IF;
END
$par$"""


def database_value(bind, setting: str = SETTING) -> str | None:
    """The database-level value of ``setting`` now (None when absent): for tests and verify."""
    name = f"'{setting}'"
    return bind.execute(f"SELECT {_current(name)}").fetchone()[0]


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
        Promise(
            "Q9's (categoria, geometry) GiST index on the parent",
            f"SELECT to_regclass('{s.schema}.{category_index(s)[0]}') IS NOT NULL",
        ),
        Promise(
            f"{nearest.table(s)}: its two GiSTs over every row, kept by a trigger on each write",
            f"SELECT to_regclass({literal(nearest.index(s))}) IS NOT NULL "
            f"AND to_regclass({literal(nearest.category_index(s))}) IS NOT NULL AND EXISTS (SELECT 1 "
            f"FROM pg_trigger WHERE tgrelid = to_regclass({literal(s.qualified_table)}) "
            f"AND tgname = {literal(nearest.trigger(s))} AND tgenabled <> 'D')",
        ),
        Promise(
            f"{nearest.table(s)} holds as many rows as the table (no write bypassed the trigger)",
            f"SELECT (SELECT count(*) FROM {nearest.table(s)}) = "
            f"(SELECT count(*) FROM {s.qualified_table})",
            # where the copy exists (the promise before names it missing)
            f"SELECT to_regclass({literal(nearest.table(s))}) IS NOT NULL",
        ),
    ]


# ------------------------------------------------------------------ Q9's index

INDEX_MARK = "stage4 opt1: Q9's category and geometry index, dropped on downgrade"
BTREE_GIST_MARK = "; it created btree_gist"


def category_index(s: Settings) -> tuple[str, str]:
    """(name, ``USING`` tail) of a GiST on (categoria, geom) (btree_gist), built with the
    partitioned table's other indexes.

    Q9 joins points of one category to the polygons of another containing them. On the
    partitioned table each point probes every partition, where the GiST on ``geom`` and
    the b-tree on ``categoria`` are combined by a BitmapAnd that reads the whole category
    in each (at 100,000 features opt1 made Q9 ×1.6 slower without this index). With it one
    probe per partition visits that category's features only. Partial on ``categoria IS
    NOT NULL`` so that only a query filtering on a category uses it: without the predicate
    the planner also picks it for plain ``geom`` filters, scanning many times the buffers.
    On the table itself: current at every commit, RLS as on any read, nothing in the API."""
    name = f"{s.table}_categoria_{s.geometry_column}_gist"
    return name, f"USING gist (categoria, {s.geometry_column}) WHERE (categoria IS NOT NULL)"


def btree_gist_sql() -> str:
    """btree_gist in PostGIS's schema (``extensions`` on Supabase) unless it is installed;
    the transaction remembers that it created it (``stage4.created_btree_gist``)."""
    return """DO $ext$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'btree_gist') THEN
    EXECUTE format('CREATE EXTENSION btree_gist SCHEMA %I', (SELECT extnamespace::regnamespace::text
                   FROM pg_extension WHERE extname = 'postgis'));
    PERFORM set_config('stage4.created_btree_gist', 'on', true);
  END IF;
END
$ext$"""


def index_comment_sql(s: Settings) -> str:
    """The index's comment: what it is, and whether this step created btree_gist."""
    name = f"{s.schema}.{category_index(s)[0]}"
    created = literal(INDEX_MARK + BTREE_GIST_MARK)
    return f"""DO $ext$
BEGIN
  EXECUTE 'COMMENT ON INDEX {name} IS ' || CASE
    WHEN current_setting('stage4.created_btree_gist', true) = 'on' THEN {literal(created)}
    ELSE {literal(literal(INDEX_MARK))} END;
END
$ext$"""


def remember_btree_gist_sql(s: Settings) -> str:
    """Before the downgrade drops the index: did this step create btree_gist?"""
    name = f"{s.schema}.{category_index(s)[0]}"
    return f"""DO $ext$
BEGIN
  IF obj_description(to_regclass('{name}'), 'pg_class') = {literal(INDEX_MARK + BTREE_GIST_MARK)} THEN
    PERFORM set_config('stage4.drop_btree_gist', 'on', true);
  END IF;
END
$ext$"""


def drop_btree_gist_sql() -> str:
    """After the downgrade: btree_gist dropped where this step created it and nothing else
    (an index or a view the app made since) uses it."""
    return """DO $ext$
BEGIN
  IF current_setting('stage4.drop_btree_gist', true) = 'on' THEN
    DROP EXTENSION btree_gist;
  END IF;
EXCEPTION WHEN dependent_objects_still_exist THEN
  RAISE NOTICE 'opt1: btree_gist kept: other objects now use it';
END
$ext$"""


# ------------------------------------------------------------------ the RPCs it re-points

# The short geo reads without a date filter: each reads every partition, and planning them
# costs about what running them does. Q1 and Q3 read whole regions: their plans depend on
# the box (a generic plan once made Q3 at 1M features ×1.4 slower), so they stay per call.
UNDATED = ("Q2", "Q6", "Q7")


def repoints(s: Settings) -> dict[str, Function]:
    """The short geo reads without a date filter (``UNDATED``), with plans kept for the
    session (``functions.CACHED_PLANS``), and Q2 found from the box.

    Planning a read of the partitioned table plans every partition (at 1M features
    0.3–0.8 ms a call for these, where the plain table took 0.1): a plan kept for the
    session is planned once. Q5 keeps a plan per call: its date prunes partitions at
    planning time.

    Q2 (the first 500 features of a box, by id): on the plain table the planner may walk
    the primary key in id order until 500 rows fall in the box, which pays on a dense box.
    On the partitioned table that walk is a Merge Append over every partition's key, each
    read until the merge has its 500: on a dense box at 1M features ×5 the plain table's
    time. Ordering by ``id + 0`` (the same order: ids are integers) takes that path away:
    the GiST finds the box's rows, a top-N sort keeps 500. Same rows, same order."""
    sql = base_sql(s)
    if " ORDER BY id LIMIT 500" not in sql["Q2"]:
        raise ValueError("Q2's base query changed: update opt1's re-pointed body")
    sql["Q2"] = sql["Q2"].replace(" ORDER BY id LIMIT", " ORDER BY id + 0 LIMIT")
    out = {q: functions.read(s, q, sql[q], functions.CACHED_PLANS) for q in UNDATED}
    for q in nearest.SERVES:  # Q9 planned per call: its categories change its plan
        out[q] = replace(out.get(q) or functions.read(s, q), body=copy_body(s, q))
    return out


def copy_body(s: Settings, qid: str) -> str:
    """``qid`` from the nearest-features copy's one GiST (``stage4.ddl.nearest``) for a
    caller who may read it, else the baseline query: one descent instead of one per
    partition, same rows, same order."""
    copy, base = nearest.served_sql(s, qid), base_sql(s)[qid]
    return functions.per_call_if(nearest.readable_sql(s), copy, base)


def jobs(s: Settings) -> list[Job]:
    """None: its step schedules nothing."""
    return []


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
        creates_relation(f"{s.schema}.{category_index(s)[0]}", "Q9's index"),
        creates_relation(nearest.table(s), "the nearest-features copy (one GiST)"),
        creates_relation(nearest.index(s), "the nearest-features GiST"),
        creates_relation(nearest.category_index(s), "the nearest-features GiST for Q9"),
        creates_function(nearest.sync_function(s), "the nearest-features copy's trigger"),
    ]


def reference(conn, s: Settings, direction: str, scratch: str) -> Reference:
    """Both ways: INSERT…SELECT of every row into a bare copy (partitioned up, plain down)
    with the same indexes (primary key, GiST, two b-trees; up, Q9's GiST too, and the
    nearest-features copy with its key and GiSTs), rolled back."""
    ref = f"{scratch}.{s.table}"
    like = "INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION INCLUDING CONSTRAINTS"
    up = direction == "up"
    parts = partitions_sql(replace(s, schema=scratch), ref, scratch) if up else None
    g, d = s.geometry_column, s.time_column
    return Reference(
        (
            *([btree_gist_sql()] if up else []),
            *copy_sql(conn, s, ref, like, parts),
            f"ALTER TABLE {ref} ADD PRIMARY KEY (id{f', {d}' if up else ''})",
            f"CREATE INDEX ON {ref} USING gist ({g})",
            f"CREATE INDEX ON {ref} ({d})",
            f"CREATE INDEX ON {ref} (categoria)",
            *([f"CREATE INDEX ON {ref} {category_index(s)[1]}"] if up else []),
            *(_copy_reference(s, ref, scratch) if up else []),
        )
    )


def _copy_reference(s: Settings, ref: str, scratch: str) -> list[str]:
    """The nearest-features copy built the plain way: its rows from the new table, its key
    and its two GiSTs (``ddl.nearest``)."""
    k = f"{scratch}.{s.table}_knn_ref"
    return [
        f"CREATE TABLE {k} AS SELECT {', '.join(nearest.columns(s))} FROM {ref}",
        f"ALTER TABLE {k} ADD PRIMARY KEY (id, {s.time_column})",
        *(f"CREATE INDEX ON {k} {using}" for _, using in nearest.indexes(s)),
    ]
