"""Result fingerprints while the app writes: an RPC and its base SQL compared in one snapshot.

A step's results are compared with the baseline run's fingerprints. Those two runs are
minutes apart; when the app wrote rows in between, a query's answer changed because its
rows did, and the comparison says nothing about the step. What can change an answer there:

- the app's SQL (``workload.CONTRACT`` "SQL") is sent with the same text at every revision,
  so on the same rows it returns the same answer; the rows are the step's promise ("every
  row kept", checked apart). Its moved fingerprint is the app's writes;
- an RPC a revision re-points (same signature, another body) must return what the body
  revision ``schema`` gives it (``ddl.functions.baseline``: its base SQL) on the same rows.
  ``compare_rpcs`` checks exactly that where the data cannot move: in one REPEATABLE READ
  transaction it creates the base body as a ``pg_temp`` function of the same name, draws
  the fingerprint pass's parameters, and fingerprints the app's call and the same call to
  the base body. The transaction is rolled back: nothing of it stays.

A dozen calls per RPC: cheap next to a bench, and only run when the app wrote and a
fingerprint moved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import psycopg

from stage4.config import Settings
from stage4.ddl import functions
from stage4.measure import workload
from stage4.plumbing.db import Session, lend


@dataclass(frozen=True)
class SnapshotCheck:
    """One RPC, the app's call vs its base SQL in one snapshot."""

    qid: str
    same: bool | None  # None: not compared (``detail`` says why)
    detail: str


def base_rpcs(s: Settings, qids: Iterable[str]) -> dict[str, functions.Function]:
    """qid -> the ``schema`` body of the RPC that query calls, for the RPC queries of ``qids``."""
    catalogue = workload.queries(s)
    out = {}
    for qid in qids:
        q = catalogue.get(qid)
        for fn in functions.baseline(s) if q is not None and q.rpc else ():
            if f"{fn.schema}.{fn.name}(" in q.sql:
                out[qid] = fn
    return out


def compare_rpcs(
    db: str | Session, s: Settings, qids: Iterable[str], seed: int = 42
) -> dict[str, SnapshotCheck]:
    """For each RPC query of ``qids``: does the app's call return what its base SQL returns,
    both run in one snapshot on the fingerprint pass's parameter sets?"""
    rpcs = base_rpcs(s, qids)
    if not rpcs:
        return {}
    catalogue = workload.queries(s)
    out: dict[str, SnapshotCheck] = {}
    with lend(db, autocommit=True, prepare_threshold=None) as conn:
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            anchors = workload.sample_anchors(conn, s, seed)  # takes the snapshot
            sent = workload.as_sent(conn, s, catalogue)
            for qid, fn in rpcs.items():
                q = catalogue[qid]
                if not sent[qid].rpc:  # the database has no such RPC: nothing to compare
                    continue
                conn.execute(replace(fn, schema="pg_temp").create_sql())
                base_sql = q.sql.replace(f"{fn.schema}.{fn.name}(", f"pg_temp.{fn.name}(")
                params = workload.parameters(qid, anchors, workload.FINGERPRINT_SETS, seed, "fp")
                app, base = workload.Fingerprint(), workload.Fingerprint()
                for p in params:
                    app.add(conn.execute(q.sql, p).fetchall(), q.ordered)
                    base.add(conn.execute(base_sql, p).fetchall(), q.ordered)
                same = app.hexdigest() == base.hexdigest()
                rows = f"{app.rows} rows from the app's call, {base.rows} from the base SQL"
                out[qid] = SnapshotCheck(qid, same, f"{len(params)} parameter sets, {rows}")
        except psycopg.Error as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            for qid in rpcs:
                out.setdefault(qid, SnapshotCheck(qid, None, f"not compared: {first}"))
        finally:
            conn.execute("ROLLBACK")  # the pg_temp functions go with it
    return out
