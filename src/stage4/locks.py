"""Who holds the lock a migration timed out on: the line that tells the user whom to wait for.

A migration runs with a short ``lock_timeout`` so it fails fast instead of queueing
behind the app (and making every later query queue behind *it*). "canceling statement
due to lock timeout" alone does not say what to do; the blocking session's pid,
application and state do. By the time we ask, the failed transaction has rolled back,
so this looks, from a fresh connection, at the sessions that still hold locks on the
table (and its partitions, and any relation the failing statement names). A session
without an application name is named by its kind when it is not a client: ``pg_cron``
(a scheduled refresh of opt5's views), ``autovacuum worker``.
"""

from __future__ import annotations

import re

from stage4.config import settings

HOLDERS = """
WITH wanted AS (
    SELECT r::oid AS oid FROM unnest(%(names)s::text[]) n, to_regclass(n) r WHERE r IS NOT NULL
), rel AS (
    SELECT oid FROM wanted UNION SELECT inhrelid FROM pg_inherits JOIN wanted ON inhparent = oid
)
SELECT a.pid, coalesce(nullif(a.application_name, ''),
                      nullif(a.backend_type, 'client backend'), 'no application_name')
             || coalesce(' as ' || a.usename::text, ''),
       coalesce(a.state, 'state hidden'),
       extract(epoch FROM now() - coalesce(a.state_change, a.xact_start))::bigint,
       string_agg(DISTINCT l.mode, ', ' ORDER BY l.mode),
       min(n.nspname || '.' || c.relname)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation IN (SELECT oid FROM rel)
GROUP BY a.pid, a.application_name, a.backend_type, a.usename, a.state, a.state_change,
         a.xact_start
ORDER BY a.xact_start NULLS LAST, a.pid
LIMIT 5
"""
_QUALIFIED = re.compile(r"\b([a-z_][a-z0-9_]*\.[a-z_][a-z0-9_$]*)\b")


def holders(conn, names: list[str]) -> list[tuple]:
    """(pid, application, state, seconds in that state, modes, relation) per blocking session."""
    return conn.execute(HOLDERS, {"names": names}).fetchall()


def describe(row: tuple) -> str:
    pid, app, state, secs, modes, _ = row
    return f"pid {pid} ({app}, {state} for {secs} s, holds {modes})"


def explain_timeout(url: str, lock_timeout: str | None, statement: str | None) -> str:
    """The reason line: lock timeout, the relation, who holds it (pid, client, state), what to do."""
    from stage4.db import connect
    from stage4.errors import Stage4Error

    s = settings()
    timeout = lock_timeout or s.lock_timeout
    names = [s.qualified_table, *(n for n in _QUALIFIED.findall(statement or "")
                                  if not n.startswith(("pg_", "information_schema.")))]  # fmt: skip
    retry = ("retry when it has finished, or raise the lock timeout "
             "(stage4 upgrade --lock-timeout 30s, stage4 downgrade --lock-timeout 30s, "
             "alembic -x lock_timeout=30s)")  # fmt: skip
    try:
        with connect(url, autocommit=True) as conn:
            found = holders(conn, list(dict.fromkeys(names)))
    except Stage4Error:
        found = None
    if found is None:
        return f"lock timeout ({timeout}) waiting for a lock on {s.qualified_table}; {retry}"
    if not found:
        return (f"lock timeout ({timeout}) waiting for a lock on {s.qualified_table}; the "
                "session that held it has finished since: retry")  # fmt: skip
    relation = found[0][5]
    who = ", ".join(describe(r) for r in found)
    return f"lock timeout ({timeout}) waiting for a lock on {relation}, held by {who}; {retry}"
