"""Where does a query's time go on two clusters: planning or execution? (e.g. A at `schema`,
B at opt5: the same-window A/B of ``benchmarks.scale``)

For each query (Q1–Q10 by id, or a workload file's name with ``--workload``), on the
bench's four latency parameter sets (seed 42): after one warm-up, ``--rounds`` rounds
alternating the two clusters (A B, then B A) of ``EXPLAIN (ANALYZE, SUMMARY, FORMAT
JSON)``, and of the query itself timed by the client. Prints per query and cluster the
medians over rounds of the per-set means: planning ms, execution ms, the client's ms, how
many relations (tables, partitions, views) the plan reads, and the relation locks one
execution takes: in the backend's fast-path slots (16 in PostgreSQL 15) or in the shared
lock table (slower: a partition of it locked for each). Read-only.

    .venv/bin/python -m benchmarks.probes.plan_split /tmp/scale-1m-app-ab /tmp/scale-1m-app \\
        Q6,Q7,Q9,app_by_id --workload benchmarks/workload
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def _relations(node: dict) -> set[str]:
    found = {node["Relation Name"]} if "Relation Name" in node else set()
    for child in node.get("Plans", []):
        found |= _relations(child)
    return found


LOCKS = """SELECT count(*) FILTER (WHERE fastpath), count(*) FILTER (WHERE NOT fastpath)
FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation'
  AND relation <> 'pg_locks'::regclass"""


def _locks(conn, sql: str, params) -> tuple[int, int]:
    """(fast-path, shared-table) relation locks one execution of ``sql`` holds."""
    conn.execute("BEGIN")
    try:
        conn.execute(sql, params).fetchall()
        return conn.execute(LOCKS).fetchone()
    finally:
        conn.execute("ROLLBACK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("home_a")
    ap.add_argument("home_b")
    ap.add_argument("queries", help="comma-separated: Q ids and workload file names")
    ap.add_argument("--workload", help="folder of the workload files named")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from stage4.config import settings
    from stage4.measure import workload
    from stage4.plumbing import version_table
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    s = settings()
    catalogue = workload.queries(s)
    if args.workload:
        catalogue.update(workload.load_dir(args.workload))
    clusters = {"A": Cluster(home=Path(args.home_a)), "B": Cluster(home=Path(args.home_b))}
    conns = {}
    for k, c in clusters.items():
        c.ensure_started()
        conns[k] = connect(c.url(), autocommit=True, prepare_threshold=None)
    try:
        anchors = workload.sample_anchors(conns["A"], s, 42)
        print("query | cluster | revision | planning ms | execution ms | client ms | relations "
              "| locks fast-path / shared")  # fmt: skip
        for qid in args.queries.split(","):
            q = catalogue[qid]
            params = workload.parameters(qid, anchors, 4, 42, gen=q.params)
            got: dict[str, dict[str, list[float]]] = {
                k: {"plan": [], "exec": [], "client": []} for k in conns
            }
            rels: dict[str, int] = {}
            for conn in conns.values():  # warm-up
                for p in params:
                    conn.execute(q.sql, p).fetchall()
            for i in range(args.rounds):
                for k in sorted(conns, reverse=i % 2 == 1):
                    conn, plan, execute, client = conns[k], [], [], []
                    for p in params:
                        [[doc]] = conn.execute(
                            "EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) " + q.sql, p
                        ).fetchall()
                        plan.append(doc[0]["Planning Time"])
                        execute.append(doc[0]["Execution Time"])
                        rels[k] = len(_relations(doc[0]["Plan"]))
                        t0 = time.perf_counter()
                        conn.execute(q.sql, p).fetchall()
                        client.append((time.perf_counter() - t0) * 1000)
                    for name, v in (("plan", plan), ("exec", execute), ("client", client)):
                        got[k][name].append(statistics.fmean(v))
            for k, conn in conns.items():
                rev = version_table.revision(conn)
                m = {name: statistics.median(v) for name, v in got[k].items()}
                fast, shared = _locks(conn, q.sql, params[0])
                print(f"{qid} | {k} | {rev} | {m['plan']:.2f} | {m['exec']:.2f} | "
                      f"{m['client']:.2f} | {rels[k]} | {fast} / {shared}")  # fmt: skip
    finally:
        for conn in conns.values():
            conn.close()


if __name__ == "__main__":
    main()
