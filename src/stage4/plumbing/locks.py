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
from contextlib import contextmanager

from stage4.config import settings
from stage4.errors import Stage4Error

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
    from stage4.plumbing.db import connect

    s = settings()
    timeout = lock_timeout or s.lock_timeout
    names = [
        s.qualified_table,
        *(
            n
            for n in _QUALIFIED.findall(statement or "")
            if not n.startswith(("pg_", "information_schema."))
        ),
    ]
    retry = (
        "retry when it has finished, or raise the lock timeout "
        "(stage4 upgrade --lock-timeout 30s, stage4 downgrade --lock-timeout 30s, "
        "alembic -x lock_timeout=30s)"
    )
    try:
        with connect(url, autocommit=True) as conn:
            found = holders(conn, list(dict.fromkeys(names)))
    except Stage4Error:
        found = None
    if found is None:
        return f"lock timeout ({timeout}) waiting for a lock on {s.qualified_table}; {retry}"
    if not found:
        return (
            f"lock timeout ({timeout}) waiting for a lock on {s.qualified_table}; the "
            "session that held it has finished since: retry"
        )
    relation = found[0][5]
    who = ", ".join(describe(r) for r in found)
    return f"lock timeout ({timeout}) waiting for a lock on {relation}, held by {who}; {retry}"


# --------------------------------------------------------------------------- one rollout at a time
# A session-level advisory lock on the app's table, in two-key form: (ROLLOUT_CLASS,
# hashtext('schema.table')). ROLLOUT_CLASS is stage4's key space ('S4' 0x5334, then 0001),
# so the lock cannot collide with an app's own single-key advisory locks; pg_locks shows
# it as locktype 'advisory', classid ROLLOUT_CLASS, objsubid 2. Advisory locks belong to
# one database: a rehearsal on a copy never waits for the live one.
ROLLOUT_CLASS = 0x53340001
_KEY = "%s::int, hashtext(%s)"
ROLLOUT_HOLDER = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), 'application name hidden'),
       to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid = %s::int::oid AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY a.backend_start LIMIT 1
"""
# Connections this process holds the lock on: url -> psycopg connection. Alembic, run by
# a process that holds the lock, runs on another connection and must not be refused.
_HELD: dict[str, object] = {}


class RolloutBusy(Stage4Error):
    """Another rollout (or an Alembic command) holds the table's rollout lock."""


def rollout_holder(conn) -> tuple[int, str, str] | None:
    """(pid, application name, since when) of the session holding the rollout lock, else None."""
    return conn.execute(ROLLOUT_HOLDER, (ROLLOUT_CLASS, settings().qualified_table)).fetchone()


def busy_message(holder: tuple[int, str, str]) -> str:
    pid, app, since = holder
    return (
        f"another rollout is running on {settings().qualified_table}: pid {pid} ({app}) "
        f"since {since}; wait for it to finish (`stage4 status` shows it)"
    )


def _ours(holder: tuple | None) -> bool:
    return holder is not None and holder[0] in {c.info.backend_pid for c in _HELD.values()}


@contextmanager
def rollout_lock(url: str, doing: str):
    """Hold the table's rollout lock while the block runs: ``doing`` is what the holder is
    doing, as a stage4 command line (``upgrade --to opt3``, ``rehearse --to opt3``); other
    sessions see it as the holder's application name ``stage4 upgrade --to opt3``.

    Taken on a connection of its own, idle meanwhile (no transaction, so it blocks nobody
    and nothing), released when the block ends or the process dies (the server drops the
    session). Never waits: a second rollout raises RolloutBusy at once, naming the first.
    Re-entrant within a process (a rollout that calls another verb keeps its one lock).
    """
    from stage4.plumbing.db import connect

    if url in _HELD:
        yield
        return
    conn = connect(url, autocommit=True, application_name=f"stage4 {doing}"[:63])
    try:
        conn.execute("SET idle_session_timeout = 0")  # an idle lock holder must not be cut off
        got = conn.execute(
            f"SELECT pg_try_advisory_lock({_KEY})", (ROLLOUT_CLASS, settings().qualified_table)
        ).fetchone()[0]
        if not got:
            holder = rollout_holder(conn)
            if not _ours(holder):
                raise RolloutBusy(
                    busy_message(holder)
                    if holder
                    else "another rollout is running (its session just ended): retry"
                )
            conn.close()  # this process holds it on another URL spelling of the same database
            yield
            return
        _HELD[url] = conn
        try:
            yield
        finally:
            _HELD.pop(url, None)
    finally:
        conn.close()  # closing the session releases the lock


def held(url: str) -> bool:
    """Whether this process holds the rollout lock for ``url``."""
    return url in _HELD


def running(url: str) -> str | None:
    """The line naming a rollout that runs now (not this process's), or None."""
    from stage4.plumbing.db import connect

    with connect(url, autocommit=True) as conn:
        holder = rollout_holder(conn)
    if holder is None or _ours(holder):
        return None
    pid, app, since = holder
    return f"pid {pid} ({app}) since {since}"


@contextmanager
def alembic_guard(connection, held_by_caller: bool = False):
    """For alembic/env.py: run the migrations under the rollout lock, taken on Alembic's own
    connection, so `alembic downgrade -1` during a rollout is refused. Skipped when the
    caller holds it (a stage4 rollout running Alembic: ``rollout_lock_held`` in the
    Config's attributes), or when this process holds it on another connection."""
    from sqlalchemy.exc import SQLAlchemyError

    if held_by_caller:
        yield
        return
    key = (ROLLOUT_CLASS, settings().qualified_table)
    got = connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({_KEY})", key).scalar()
    if not got:
        holder = connection.exec_driver_sql(ROLLOUT_HOLDER, key).fetchone()
        connection.commit()
        if not _ours(holder):
            raise RolloutBusy(
                busy_message(tuple(holder))
                if holder
                else "another rollout is running (its session just ended): retry"
            )
        yield
        return
    connection.commit()
    try:
        yield
    finally:
        try:
            connection.rollback()  # a failed step leaves its transaction aborted
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_KEY})", key)
            connection.commit()
        except SQLAlchemyError:  # a dead connection: its session's lock went with it
            pass
