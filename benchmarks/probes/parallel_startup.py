"""What starting a parallel worker costs on this server, against the planner's guess.

The partitioned table (opt1–opt4) makes the planner run the app's short viewport queries
(Q2, Q6, Q7) as Gather over a Parallel Append: the PostGIS functions' COST 10000 makes
sharing the rows look worth more than ``parallel_setup_cost`` (1000). Times a trivial
query with ``force_parallel_mode`` (one worker launched) and without, median of 50
(``preflight.worker_start_ms``, what pre-flight warns on), and
Q7's first parameter sets at the current revision with and without parallel workers.

    STAGE4_HOME=/tmp/scale-1m .venv/bin/python -m benchmarks.probes.parallel_startup
"""

from __future__ import annotations

from benchmarks._timing import median_ms


def main() -> None:
    from stage4.config import settings
    from stage4.measure import workload
    from stage4.plumbing import migrations
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect
    from stage4.rollout import preflight

    s = settings()
    url = Cluster.from_settings(s).url()
    with connect(url, autocommit=True, prepare_threshold=None) as conn:
        print(f"one worker: {preflight.worker_start_ms(conn, 50):.2f} ms (median of 50)")
        sql = workload.queries(s)["Q7"].sql
        anchors = workload.sample_anchors(conn, s, 42)
        print(f"revision {migrations.current(url)}; Q7 (the app's SQL), median of 15:")
        for i, p in enumerate(workload.parameters("Q7", anchors, 4, 42)):
            with_workers = median_ms(conn, sql, p, 15, warm_up=True)
            conn.execute("SET max_parallel_workers_per_gather = 0")
            without = median_ms(conn, sql, p, 15, warm_up=True)
            conn.execute("RESET max_parallel_workers_per_gather")
            print(
                f"  set {i + 1}: {with_workers:.2f} ms as planned, {without:.2f} ms without workers"
            )


if __name__ == "__main__":
    main()
