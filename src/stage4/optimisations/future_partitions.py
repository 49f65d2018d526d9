"""opt4, yearly partitions ahead of time: a self-contained plpgsql routine, run daily.

Why a routine of our own rather than pg_partman: it works on any PostgreSQL 12+
(Supabase included) with nothing to install, and it keeps opt1's naming
(``{table}_p{year}``, default partition ``{table}_default``).

A new partition cannot be created while the default partition holds rows in its
range, so for each missing year the routine, in one transaction, locks the parent
then the default partition (the order queries take them) ACCESS EXCLUSIVE.

It takes those locks with retries. A lock request that waits makes every later query
on the table queue behind it, so one long wait stalls the app's readers for all of
it. Each attempt waits at most ``LOCK_ATTEMPT_MS``; on a timeout it gives back what
it got, sleeps (``LOCK_RETRY_FIRST_MS`` doubling up to ``LOCK_RETRY_MAX_MS``, times a
random 0.5–1.5 so retries do not fall into step with a periodic job) and tries again,
until the ``lock_timeout`` in force when it starts is spent; then it fails with
``lock_not_available`` as one long wait would. A reader waits one attempt at most.
The ``lock_timeout`` in force is put back once the locks are held.

With both locks held it moves that year's rows
out of the default into a temporary table, creates the partition and re-inserts
them through the parent. The new partition gets the parent's indexes
automatically; it lives in stage4's own schema (out of the API's sight), is owned by
the parent's owner and reachable by that owner only,
as opt1's partitions: whatever the schema's default privileges granted is revoked at
once and row level security is enabled on it with no policy (``privileges.owner_only_plpgsql``),
in the same transaction, also when pg_cron runs the routine. Access through the
parent is checked on the parent only and needs nothing.

Moved rows are a DELETE then an INSERT: row triggers on the table fire for them,
and the routine refuses to move rows of a table that foreign keys reference.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from stage4.config import Settings
from stage4.ddl import cron, literal, partitioning, privileges
from stage4.ddl.functions import Function
from stage4.ddl.matviews import MatView
from stage4.optimisations.base import (
    Creates,
    Promise,
    Reference,
    Rewrite,
    creates_function,
    creates_partition,
)

REVISION = "opt4"
# What the generic modules ask of every unit (``base.Unit``): none here.
REBUILDS_TABLE = False
STALENESS: dict[str, str] = {}
CLAIMS: dict[str, float] = {}
FUNCTION = "stage4_ensure_partitions"
JOB = "stage4_ensure_partitions"
SCHEDULE = "17 3 * * *"  # daily at 03:17, away from the hour when other jobs pile up
# Taking the parent's and the default partition's locks: the longest one attempt waits
# (and so the longest a query queues behind it), then the sleep before the next attempt.
LOCK_ATTEMPT_MS = 150
LOCK_RETRY_FIRST_MS = 50
LOCK_RETRY_MAX_MS = 500


def identity(s: Settings) -> str:
    """The routine, in stage4's own schema: in ``public`` every function is an API RPC."""
    return f"{s.own_schema}.{FUNCTION}(integer)"


def legacy_identity(s: Settings) -> str:
    """Where an earlier stage4 created it: the table's schema."""
    return f"{s.schema}.{FUNCTION}(integer)"


def first_future_year(s: Settings) -> int:
    """The first year opt1 did not create a partition for."""
    return s.last_year + 1


def horizon_sql(s: Settings, years_ahead: str = "years_ahead") -> str:
    """The last year kept ready: N years past the later of this year and ``last_year``."""
    return f"greatest(extract(year FROM current_date)::integer, {s.last_year}) + {years_ahead}"


def create_function_sql(s: Settings) -> str:
    """``{own_schema}.stage4_ensure_partitions(years_ahead)``: returns one row per partition
    it made, in the own schema. A year whose partition exists under that name, there or in
    any schema (an earlier stage4 made them in the table's), is skipped."""
    schema, table, t = s.own_schema, s.table, s.time_column
    return f"""CREATE OR REPLACE FUNCTION {schema}.{FUNCTION}(years_ahead integer DEFAULT {s.years_ahead})
RETURNS TABLE(partition_name text, rows_moved bigint)
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  parent regclass := {literal(s.qualified_table)}::regclass;
  horizon integer;
  deflt regclass;
  created regclass;
  cols text;
  part text;
  y integer;
  moved bigint;
  r record;
  budget interval;
  saved text;
  deadline timestamptz;
  tries integer;
BEGIN
  IF years_ahead IS NULL OR years_ahead < 0 THEN
    RAISE EXCEPTION 'years_ahead must be 0 or more, not %', years_ahead;
  END IF;
  horizon := {horizon_sql(s)};
  -- A pg_cron run has no lock_timeout: fail fast (and retry tomorrow) rather than queue
  -- the app's queries behind ours. A caller's own lock_timeout (the migration's) wins.
  IF current_setting('lock_timeout') IN ('0', '0ms') THEN
    PERFORM set_config('lock_timeout', {literal(s.lock_timeout)}, true);
  END IF;
  -- The whole wait for a year's locks, spread over short attempts.
  saved := current_setting('lock_timeout');
  budget := make_interval(secs => (SELECT setting::bigint FROM pg_settings WHERE name = 'lock_timeout') / 1000.0);
  FOR y IN {first_future_year(s)} .. horizon LOOP
    part := {literal(table)} || '_p' || y;
    CONTINUE WHEN to_regclass(format('%I.%I', {literal(schema)}, part)) IS NOT NULL
      OR EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = parent AND c.relname = part);
    -- Parent first, then the default partition: the order every query locks them in.
    -- Short attempts: a query that arrives while one waits queues behind it for that
    -- attempt only. A failed attempt's block is rolled back, releasing what it took.
    deadline := clock_timestamp() + budget;
    tries := 0;
    LOOP
      PERFORM set_config('lock_timeout', greatest(1, least({LOCK_ATTEMPT_MS},
        ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000)))::integer || 'ms', true);
      BEGIN
        EXECUTE format('LOCK TABLE ONLY %s IN ACCESS EXCLUSIVE MODE', parent);
        SELECT nullif(p.partdefid, 0)::regclass INTO deflt
          FROM pg_partitioned_table p WHERE p.partrelid = parent;
        IF deflt IS NOT NULL THEN
          EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', deflt);
        END IF;
        EXIT;
      EXCEPTION WHEN lock_not_available THEN
        IF clock_timestamp() >= deadline THEN
          RAISE;  -- the budget is spent: the lock timeout, as one long wait would end
        END IF;
      END;
      tries := tries + 1;
      PERFORM pg_sleep(least(
        least({LOCK_RETRY_FIRST_MS} * 2 ^ (tries - 1), {LOCK_RETRY_MAX_MS}) * (0.5 + random()),
        greatest(0, extract(epoch FROM deadline - clock_timestamp()) * 1000)) / 1000.0);
    END LOOP;
    PERFORM set_config('lock_timeout', saved, true);
    IF deflt IS NULL AND NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = parent) THEN
      RAISE EXCEPTION '% is not partitioned: apply revision opt1 first', parent;
    END IF;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a
     WHERE a.attrelid = parent AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    moved := 0;
    IF deflt IS NOT NULL THEN
      EXECUTE format('SELECT count(*) FROM %s WHERE {t} >= %L AND {t} < %L',
                     deflt, make_date(y, 1, 1), make_date(y + 1, 1, 1)) INTO moved;
      IF moved > 0 AND EXISTS (SELECT 1 FROM pg_constraint WHERE confrelid = parent AND contype = 'f') THEN
        RAISE EXCEPTION 'cannot move % rows of year % out of %: foreign keys reference %; move them by hand',
          moved, y, deflt, parent;
      END IF;
      IF moved > 0 THEN
        EXECUTE format('CREATE TEMP TABLE stage4_moving ON COMMIT DROP AS SELECT %s FROM %s WITH NO DATA',
                       cols, deflt);
        EXECUTE format('WITH gone AS (DELETE FROM %s WHERE {t} >= %L AND {t} < %L RETURNING %s) '
                       'INSERT INTO stage4_moving SELECT * FROM gone',
                       deflt, make_date(y, 1, 1), make_date(y + 1, 1, 1), cols);
      END IF;
    END IF;
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                   {literal(schema)}, part, parent, make_date(y, 1, 1), make_date(y + 1, 1, 1));
    created := format('%I.%I', {literal(schema)}, part)::regclass;
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET STATISTICS {partitioning.GEOMETRY_STATISTICS}',
                   created, {literal(s.geometry_column)});
    IF moved > 0 THEN
      EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM stage4_moving',
                     parent, cols, cols);
      DROP TABLE stage4_moving;
    END IF;
    -- The parent's owner owns it; nobody else reaches it directly (rows are read and
    -- written through the parent, where grants and policies apply).
    IF (SELECT relowner FROM pg_class WHERE oid = created) <> (SELECT relowner FROM pg_class WHERE oid = parent) THEN
      EXECUTE format('ALTER TABLE %s OWNER TO %I', created,
                     (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = parent));
    END IF;
  {privileges.owner_only_plpgsql("created")}
    EXECUTE format('ANALYZE %s', created);
    partition_name := part;
    rows_moved := moved;
    RETURN NEXT;
  END LOOP;
END
$fn$"""


def restrict_sql(s: Settings) -> str:
    """Only the owner runs the routine. In Supabase every function in ``public`` is an RPC
    endpoint; this one must not be."""
    return privileges.function_owner_only_sql(identity(s))


def run_sql(s: Settings) -> str:
    """Run the routine once with its default horizon; one row per partition created."""
    return f"SELECT partition_name, rows_moved FROM {s.own_schema}.{FUNCTION}()"


def command(s: Settings) -> str:
    """What the pg_cron job runs."""
    return f"SELECT {s.own_schema}.{FUNCTION}()"


def drop_function_sql(s: Settings, legacy: bool = True) -> str:
    """The routine, wherever stage4 created it (``legacy``: also in the table's schema)."""
    also = f", {legacy_identity(s)}" if legacy else ""
    return f"DROP FUNCTION IF EXISTS {identity(s)}{also}"


def partitioning_problem(bind, s: Settings) -> str | None:
    """Why the table cannot take future partitions (not partitioned by range on the time column)."""
    key = bind.exec_driver_sql(
        "SELECT pg_get_partkeydef(c.oid) FROM pg_class c WHERE c.oid = to_regclass(%(t)s)",
        {"t": s.qualified_table},
    ).scalar()
    if key is None:
        return f"{s.qualified_table} is not partitioned: apply revision opt1 first"
    if key != f"RANGE ({s.time_column})":
        return f"{s.qualified_table} is partitioned by {key}, not RANGE ({s.time_column})"
    return None


def job(s: Settings) -> cron.Job:
    return cron.Job(JOB, SCHEDULE, command(s))


# ------------------------------------------------------------------ what the unit declares


def views(s: Settings) -> list[MatView]:
    """None to settle: the routine's partitions are analyzed as it creates them."""
    return []


def promises(s: Settings) -> list[Promise]:
    return [
        Promise(
            "partition maintenance routine exists",
            f"SELECT to_regprocedure('{identity(s)}') IS NOT NULL",
        ),
        future_partitions_promise(s),
        Promise(
            "scheduled with pg_cron (pg_cron is installed in this database)",
            f"SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = '{JOB}')",
            f"SELECT {cron.INSTALLED}",
        ),
    ]


def future_partitions_promise(s: Settings) -> Promise:
    """A partition for every year from the first one opt1 did not create up to the routine's
    horizon, ``years_ahead`` past the later of this year and ``last_year`` (the routine's
    own expression, so the two cannot disagree)."""
    first = first_future_year(s)
    last = max(date.today().year, s.last_year) + s.years_ahead
    n = s.years_ahead
    if last < first:
        text = f"no partition after {s.last_year} is due yet (years_ahead = {n})"
    else:
        years = f"{first}–{last}" if last > first else f"{first}"
        text = f"partitions {years} exist (years_ahead = {n})"
    # An empty range (nothing due yet) holds: bool_and of no rows is NULL.
    # a partition of the table (in any schema: an earlier stage4 made them in the table's),
    # not merely a relation of that name (which the routine skips)
    sql = (
        f"SELECT coalesce(bool_and(EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c "
        f"ON c.oid = i.inhrelid WHERE c.relname = '{s.table}_p' || y AND i.inhparent = "
        f"to_regclass('{s.qualified_table}'))), true) "
        f"FROM generate_series({first}, {horizon_sql(s, str(n))}) AS y"
    )
    return Promise(text, sql)


def repoints(s: Settings) -> dict[str, Function]:
    """None: no RPC changes; rows of future years find their partition."""
    return {}


def jobs(s: Settings) -> list[cron.Job]:
    """The routine's daily job (where pg_cron is installed)."""
    return [job(s)]


def rewrites(s: Settings) -> dict[str, Rewrite]:
    """None: the app's queries gain nothing new; rows of future years find their partition."""
    return {}


def creates(s: Settings) -> list[Creates]:
    """The routine, and the partitions its first run makes (up to the horizon of today):
    a relation of such a name that is not that partition would be skipped for good."""
    last = max(date.today().year, s.last_year) + s.years_ahead
    return [
        creates_function(identity(s), "the partition maintenance routine"),
        *(creates_partition(s, y) for y in range(first_future_year(s), last + 1)),
    ]


def reference(conn, s: Settings, direction: str, scratch: str) -> Reference:
    """Up: create the routine and run it (rolled back). Down: the routine built in
    ``scratch`` with a pg_cron job like its own (where pg_cron is installed), then the
    job unscheduled and the routine dropped, committed."""
    if direction == "up":
        return Reference((create_function_sql(s), run_sql(s)))
    r = replace(s, own_schema=scratch)
    name = f"{scratch}_ensure_partitions"
    schedule = (
        f"DO $$BEGIN IF {cron.INSTALLED} THEN "
        f"PERFORM cron.schedule('{name}', '0 3 1 * *', 'SELECT 1'); END IF; END$$"
    )
    return Reference(
        (cron.unschedule_sql([name]), drop_function_sql(r, legacy=False)),
        setup=(create_function_sql(r), schedule),
        committed=True,
    )
