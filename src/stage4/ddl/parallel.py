"""opt1's serial setting: ``max_parallel_workers_per_gather = 0`` for the database.

Why: once ``geometrias`` is partitioned, PostgreSQL plans short viewport queries as a
Gather over a Parallel Append of the partitions (PostGIS's function costs make splitting
look worth it). Where a worker is slow to start (pre-flight measures it; on a small VM
it takes milliseconds, and a worker running PostGIS loads it first) that start costs
more than the whole serial query, and the app's unchanged SQL gets slower. The cure is part of
the revision, not a setting the user must type.

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

from stage4.config import Settings
from stage4.ddl.partitioning import partition_name

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
    return f"{s.schema}.{partition_name(s, s.first_year)}"


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
  note text := obj_description(to_regclass('{memo_table(s)}'), 'pg_class');
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
