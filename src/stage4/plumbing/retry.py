"""Lock timeouts that retry: a step blocked by a short transaction waits and tries again.

A step runs with a short ``lock_timeout`` so that it never makes the app queue behind
it (locks.py). Most blockers are short transactions, though, and failing a deploy
because one was open at the wrong second is what pgroll and Rails' strong_migrations
avoid by retrying. A step that hit its lock timeout rolled back whole (one transaction
per revision), so trying it again is safe. The waits grow exponentially, with jitter
so that two deploys retrying against the same blocker do not wake in step; each wait
is logged with the blocker's pid and its query. After the last try the error is the
one a single try gives (who holds the lock, what to do).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from stage4.errors import MigrationError

T = TypeVar("T")
DEFAULT_RETRIES = 5
BASE_SECONDS = 0.5  # the first wait; each next one doubles, up to CAP_SECONDS
CAP_SECONDS = 8.0
log = logging.getLogger("stage4.plumbing.retry")


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed try ``attempt`` (0-based): half to all of
    ``BASE * 2**attempt``, capped."""
    return min(CAP_SECONDS, BASE_SECONDS * 2**attempt) * (rng or random).uniform(0.5, 1.0)


def is_lock_timeout(error: BaseException) -> bool:
    """Whether a step's MigrationError comes from PostgreSQL's lock_timeout."""
    import psycopg

    cause = error.__cause__
    return isinstance(getattr(cause, "orig", cause), psycopg.errors.LockNotAvailable)


def on_lock_timeout(
    call: Callable[[], T],
    *,
    url: str,
    what: str,
    retries: int = DEFAULT_RETRIES,
    notes: list[str] | None = None,
    say: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried again up to ``retries`` times while it fails on a lock timeout.

    ``what`` names the step ("upgrade to opt1"). Each wait is told to ``say`` (the CLI's
    progress lines), else logged, and appended to ``notes`` (the gate's report) if given."""
    if retries < 0:
        from stage4.errors import ConfigError

        raise ConfigError(f"lock retries must be 0 or more, not {retries}")
    for attempt in range(retries + 1):
        try:
            return call()
        except MigrationError as e:
            if attempt == retries or not is_lock_timeout(e):
                raise
            wait = backoff(attempt)
            line = (
                f"{what}: lock timeout on try {attempt + 1} of {retries + 1}, "
                f"{blockers(url, getattr(e.__cause__, 'statement', None))}; "
                f"retrying in {wait:.1f} s"
            )
            if say is not None:
                say(line)
            else:
                log.warning("%s", line)
            if notes is not None:
                notes.append(line)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def blockers(url: str, statement: str | None) -> str:
    """ "blocked by pid N (app, state, modes) running 'query'" for each session holding a
    lock on the table (or a relation the statement names), as locks.py finds them."""
    import psycopg

    from stage4.config import redact, settings
    from stage4.errors import Stage4Error
    from stage4.plumbing import locks
    from stage4.plumbing.db import connect

    s = settings()
    names = [
        s.qualified_table,
        *(
            n
            for n in locks._QUALIFIED.findall(statement or "")
            if not n.startswith(("pg_", "information_schema."))
        ),
    ]
    try:
        with connect(url, autocommit=True) as conn:
            found = locks.holders(conn, list(dict.fromkeys(names)))
            queries = dict(
                conn.execute(
                    "SELECT pid, query FROM pg_stat_activity WHERE pid = ANY(%s)",
                    ([row[0] for row in found],),
                ).fetchall()
            )
    except (Stage4Error, psycopg.Error):
        return "the blocker could not be looked up"
    if not found:
        return "the session that held the lock has finished since"
    parts = []
    for row in found:
        query = " ".join((queries.get(row[0]) or "").split())
        query = query if len(query) <= 200 else query[:199] + "…"
        parts.append(f"blocked by {locks.describe(row)}, last query {redact(query)!r}")
    return "; ".join(parts)
