"""App writes during a rollout: counted, so the promises and the benchmarks can tell the app's
own writes from a loss, a changed result or a different load.

- ``counters``: rows the app table (and its partitions) has had inserted, updated or deleted
  since the statistics began (``pg_stat_user_tables``), with the relations counted. Two
  readings on the same relations give the writes in between; across a table swap (opt1) they
  cannot be compared (``writes_between`` says None) and the step reports what the app wrote
  while it ran (``Rebuild`` re-copies exactly those rows). Backends flush these counters at
  most once a second while busy: ``settled`` waits that long before concluding "no write".
- ``flush``: stage4's own writes to the table (a step's copy or backfill, the canary rows)
  are counted too, and a backend that flushed less than a second before its commit keeps
  them pending for up to 10 s, long enough to land in the next benchmark's window as "app
  writes". Every stage4 session that wrote the table calls ``flush`` before it reports its
  work done: its counts are then in the shared counters before the server answers, so the
  readings stage4 takes afterwards count the app's writes only. Around a step, its own
  writes to the table are taken off the count (``own_writes``: opt2's backfill updates
  every row; opt1's copy writes another table, swapped in, where nothing is compared).
- ``check_copy``: the exact "every row kept" of a table rebuild, in the step's transaction:
  every id of the source is in the copy, none extra, and every row written since the copy
  began is identical in the copy (the rows not written since were copied from the same
  version). A loss names the ids. ``Rebuild.catch_up`` runs it in two parts so that writers
  wait only for the second: the rows not written lately, before the lock that stops
  writers; under it, the rows written since (``check_delta``), PostgreSQL's count of this
  transaction's writes to the copy (``copy_writes``: nothing but the catch-up's own) and
  both row counts. Any doubt there runs the whole comparison, which names the ids.
"""

from __future__ import annotations

import time
from typing import Any

from stage4.config import Settings
from stage4.errors import MigrationError

COUNTERS = """
SELECT coalesce(array_agg(relid ORDER BY relid), '{}'),
       coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint,
       coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)::bigint
FROM pg_stat_user_tables
WHERE relid = to_regclass(%(t)s)
   OR relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%(t)s))
"""


def counters(conn, s: Settings) -> dict[str, Any]:
    """{"oids": [...], "writes": n, "reads": n, "at": epoch seconds} for the app table now."""
    conn.execute("SELECT pg_stat_clear_snapshot()")  # a fresh reading, not the transaction's
    oids, writes, reads = conn.execute(COUNTERS, {"t": s.qualified_table}).fetchone()
    return {
        "oids": [int(o) for o in oids],
        "writes": int(writes),
        "reads": int(reads),
        "at": time.time(),
    }


# PostgreSQL 15's function, called where it exists (older servers flush as they always did)
FLUSH = (
    "DO $$BEGIN IF current_setting('server_version_num')::int >= 150000 THEN "
    "PERFORM pg_stat_force_next_flush(); END IF; END$$"
)


def flush(conn) -> None:
    """Have this connection's pending statistics written to the shared counters when its
    transaction ends (at once, outside one), before the server answers. Works on a
    psycopg connection or a SQLAlchemy one."""
    run = getattr(conn, "exec_driver_sql", None) or conn.execute
    run(FLUSH)


# The metrics in which a step reports the rows of the app table it wrote itself
# (``stage4.ddl.backfill``): PostgreSQL counts them with the app's.
OWN_WRITES = ("backfill_rows", "backfill_caught_up_rows")


def own_writes(metrics: dict | None) -> int:
    """Rows of the app table a step's metrics say the step wrote itself."""
    return sum(int((metrics or {}).get(k) or 0) for k in OWN_WRITES)


def writes_between(a: dict | None, b: dict | None, own: int = 0) -> int | None:
    """Rows the app table had written between two readings, less ``own`` (stage4's own
    writes in between); None when not comparable."""
    if not a or not b or a.get("oids") != b.get("oids") or b["writes"] < a["writes"]:
        return None
    return max(b["writes"] - a["writes"] - own, 0)


def settled(conn, s: Settings, since: dict, wait: float = 1.2, own: int = 0) -> int | None:
    """``writes_between(since, now, own)``, read again until ``wait`` seconds have passed
    while it says 0: a writer's last commits may not be counted yet."""
    deadline = time.monotonic() + wait
    while True:
        n = writes_between(since, counters(conn, s), own)
        if n != 0 or time.monotonic() >= deadline:
            return n
        time.sleep(0.2)


def load(start: dict, end: dict, own: int = 0) -> dict[str, Any]:
    """What a benchmark run saw: app writes (less ``own``, its own rolled-back writes) and
    tuples read (its own included) per second, and the readings (to count writes between
    runs)."""
    seconds = max(end["at"] - start["at"], 1e-6)
    writes = writes_between(start, end, own)
    reads = end["reads"] - start["reads"] if start["oids"] == end["oids"] else None
    return {
        "seconds": round(seconds, 3),
        "app_writes": writes,
        "app_writes_per_s": None if writes is None else round(writes / seconds, 2),
        "tuples_read_per_s": None if reads is None else round(reads / seconds, 1),
        "start": start,
        "end": end,
    }


def differs(base: dict | None, run: dict | None) -> str | None:
    """A line saying that two runs saw different app write rates, else None."""
    a = (base or {}).get("app_writes_per_s")
    b = (run or {}).get("app_writes_per_s")
    if a is None or b is None or (a == 0 and b == 0):
        return None
    if min(a, b) > 0 and max(a, b) / min(a, b) < 2:
        return None
    return (
        f"baseline measured under {a:g} app writes/s, this run under {b:g}/s: the "
        "comparison ran under different load"
    )


def _written(alias: str, snapshot: str, xid: int) -> str:
    """SQL: the row version ``alias`` was committed after ``snapshot`` (``xid``: ours)."""
    return (
        f"NOT pg_visible_in_snapshot(({xid} - age({alias}.xmin)::bigint)::text::xid8, "
        f"'{snapshot}'::pg_snapshot)"
    )


def _row(alias: str, cols: list[str]) -> str:
    return "(" + ", ".join(f"{alias}.{c}" for c in cols) + ")"


def check_copy(
    bind,
    old: str,
    new: str,
    cols: list[str],
    snapshot: str | None,
    xid: int,
    stable_since: str | None = None,
) -> None:
    """Source vs copy, exact (see the module's docstring); raises naming lost/altered ids.

    With ``stable_since`` (a snapshot taken after ``snapshot``; the first part of the
    two-part check, run while writers go on): only the source's rows not written since it,
    and no "in the copy only" (rows the app deletes meanwhile are still in the copy); the
    rest is ``check_delta``'s and ``copy_writes``'s, under the lock. With ``snapshot``
    None, every row's content is compared (when something is already known to be wrong)."""
    q = bind.exec_driver_sql
    stable = "" if stable_since is None else f" AND NOT {_written('o', stable_since, xid)}"
    missing = [
        r[0]
        for r in q(
            f"SELECT o.id FROM {old} o WHERE NOT EXISTS (SELECT 1 FROM "
            f"{new} n WHERE n.id = o.id){stable} ORDER BY 1 LIMIT 10"
        )
    ]
    extra = (
        []
        if stable_since is not None
        else [
            r[0]
            for r in q(
                f"SELECT n.id FROM {new} n WHERE NOT EXISTS (SELECT 1 FROM "
                f"{old} o WHERE o.id = n.id) ORDER BY 1 LIMIT 10"
            )
        ]
    )
    written = "true" if snapshot is None else _written("o", snapshot, xid)
    altered = [
        r[0]
        for r in q(
            f"SELECT o.id FROM {old} o JOIN {new} n ON n.id = o.id "
            f"WHERE {written}{stable} AND "
            f"{_row('o', cols)} IS DISTINCT FROM {_row('n', cols)} "
            "ORDER BY 1 LIMIT 10"
        )
    ]
    problems = [
        f"{what}: ids {', '.join(map(str, ids))}"
        for what, ids in (
            ("missing from the copy", missing),
            ("in the copy only", extra),
            ("different in the copy", altered),
        )
        if ids
    ]
    if problems:
        raise MigrationError(
            f"the copy of {old} does not match it ({'; '.join(problems)}): "
            "rolled back, nothing was changed"
        )


def check_delta(bind, old: str, new: str, cols: list[str], delta: str) -> list[int]:
    """Ids listed in the table ``delta`` whose source row is missing or different in the
    copy (up to 10): the second part, under the lock, for the rows written meanwhile."""
    return [
        r[0]
        for r in bind.exec_driver_sql(
            f"SELECT o.id FROM {delta} d JOIN {old} o ON o.id = d.id LEFT JOIN {new} n "
            f"ON n.id = o.id WHERE n.id IS NULL OR {_row('o', cols)} IS DISTINCT FROM "
            f"{_row('n', cols)} ORDER BY 1 LIMIT 10"
        )
    ]


def copy_writes(bind, new: str) -> tuple[int, int, int]:
    """(inserted, updated, deleted) rows of ``new`` and its partitions by this transaction
    so far, as PostgreSQL counts them: between the two parts of the check, the copy must
    have changed by exactly the catch-up's own statements."""
    row = bind.exec_driver_sql(
        "SELECT coalesce(sum(n_tup_ins), 0)::bigint, coalesce(sum(n_tup_upd), 0)::bigint, "
        "coalesce(sum(n_tup_del), 0)::bigint FROM pg_stat_xact_user_tables "
        "WHERE relid = to_regclass(%(t)s) OR relid IN "
        "(SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%(t)s))",
        {"t": new},
    ).first()
    return int(row[0]), int(row[1]), int(row[2])
