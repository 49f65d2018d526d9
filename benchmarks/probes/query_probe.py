"""Time (or EXPLAIN) workload queries on an existing embedded cluster, per parameter set.

A quick look at where a query's time goes at the current revision: for each
query, the app's SQL and the rewrites the database offers now (``workload.available``), on the bench's
first four parameter sets (seed 42), each timed as the mean of five executions after
one warm-up; ``--explain`` prints EXPLAIN (ANALYZE, BUFFERS) of each instead.
``--set`` runs session statements first (e.g. ``SET max_parallel_workers_per_gather = 0``).

    STAGE4_HOME=/tmp/scale-1m .venv/bin/python -m benchmarks.probes.query_probe Q2,Q5
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("queries", help="comma-separated query ids, e.g. Q2,Q5")
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--set", action="append", default=[], help="a session statement to run first")
    args = ap.parse_args()
    from stage4.config import settings
    from stage4.measure import workload
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    s = settings()
    with connect(Cluster.from_settings(s).url(), autocommit=True, prepare_threshold=None) as conn:
        for stmt in args.set:
            conn.execute(stmt)
        offered = workload.available(conn)
        catalogue = workload.queries(s)
        anchors = workload.sample_anchors(conn, s, 42)
        for qid in args.queries.split(","):
            runs = {"app": catalogue[qid].sql, **offered.get(qid, {})}
            for i, params in enumerate(workload.parameters(qid, anchors, 4, 42), 1):
                for name, sql in runs.items():
                    if args.explain:
                        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
                        print(f"== {qid} set {i} [{name}] {params}")
                        print("\n".join(r[0] for r in plan.fetchall()))
                        continue
                    conn.execute(sql, params).fetchall()
                    t0 = time.perf_counter()
                    for _ in range(5):
                        conn.execute(sql, params).fetchall()
                    print(f"{qid} set {i} [{name}]: {(time.perf_counter() - t0) * 200:.2f} ms")


if __name__ == "__main__":
    main()
