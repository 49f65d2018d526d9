"""Refresh the materialized views of the app's schema and stage4's by hand: ``stage4 refresh``.

Where pg_cron runs, opt3/opt5 schedule these refreshes; elsewhere this is how
the views catch up with the table. Each view is refreshed CONCURRENTLY (readers
are not blocked) when it is populated and has a plain unique index, otherwise
with a plain REFRESH; each in its own transaction, so one slow view does not
hold the others' locks.
"""

from __future__ import annotations

import time

from stage4.errors import Stage4Error

_VIEWS = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relispopulated,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique
               AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm' AND n.nspname = ANY(%s)
ORDER BY 1"""


def refresh_all(url: str, schema: str | None = None) -> list[tuple[str, float]]:
    """Refresh every materialized view of ``schema`` (default: the app's and stage4's own);
    (name, seconds) each."""
    import psycopg

    from stage4.config import redact, settings
    from stage4.plumbing.db import connect

    s = settings()
    schemas = [schema] if schema else [s.schema, s.own_schema]
    done: list[tuple[str, float]] = []
    with connect(url, autocommit=True) as conn:
        for name, populated, unique in conn.execute(_VIEWS, (schemas,)).fetchall():
            how = "CONCURRENTLY " if populated and unique else ""
            t0 = time.perf_counter()
            try:
                conn.execute(f"REFRESH MATERIALIZED VIEW {how}{name}")
            except psycopg.Error as e:
                reason = str(e).strip().splitlines()[0]
                raise Stage4Error(
                    f"refreshing {name} failed: {redact(reason)} "
                    f"({len(done)} views refreshed before it)"
                ) from e
            done.append((name, time.perf_counter() - t0))
    return done
