"""What does the partitioned table cost the app's unchanged SQL, query by query?

On a cluster at opt1 or later: copies the table into a plain ``public.partition_probe_plain``
(geometry order, one GiST, analyzed), then times each query's app SQL on the partitioned
table and on the copy in the same window (alternating, ``--rounds`` rounds of the bench's
four parameter sets; medians of the per-set means), prints planning and execution time
of one set from EXPLAIN, and drops the copy. Queries with no date filter scan every
partition (one index scan per partition, twice for Q6's two passes).

    .venv/bin/python -m benchmarks.probes.partition_overhead [Q1,Q2,Q5,Q6,Q7,Q9] [--rounds 10]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

COPY = "public.partition_probe_plain"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("queries", nargs="?", default="Q1,Q2,Q5,Q6,Q7,Q9")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    from stage4.config import settings
    from stage4.measure import workload
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    s = settings()
    with connect(Cluster.from_settings(s).url(), autocommit=True, prepare_threshold=None) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {COPY}")
        conn.execute(f"CREATE TABLE {COPY} AS SELECT * FROM {s.qualified_table} "
                     f"ORDER BY {s.geometry_column}")  # fmt: skip
        try:
            conn.execute(f"CREATE INDEX ON {COPY} USING gist ({s.geometry_column})")
            conn.execute(f"VACUUM (ANALYZE) {COPY}")
            catalogue = workload.queries(s)
            anchors = workload.sample_anchors(conn, s, 42)
            for qid in args.queries.split(","):
                params = workload.parameters(qid, anchors, 4, 42)
                sqls = {"partitioned": catalogue[qid].sql,
                        "plain": catalogue[qid].sql.replace(s.qualified_table, COPY)}  # fmt: skip
                times: dict[str, list[float]] = {k: [] for k in sqls}
                explain = {}
                for name, sql in sqls.items():
                    for p in params:  # warm-up
                        conn.execute(sql, p).fetchall()
                    plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (ANALYZE) {sql}",
                                                                params[0]))  # fmt: skip
                    explain[name] = " / ".join(
                        re.findall(r"(?:Planning|Execution) Time: [\d.]+ ms", plan)
                    )
                for i in range(args.rounds):
                    for name in sorted(sqls, reverse=i % 2 == 1):
                        t0 = time.perf_counter()
                        for p in params:
                            conn.execute(sqls[name], p).fetchall()
                        times[name].append((time.perf_counter() - t0) * 1000 / len(params))
                part, plain = (statistics.median(times[k]) for k in ("partitioned", "plain"))
                print(f"{qid}: partitioned {part:.2f} ms, plain copy {plain:.2f} ms, "
                      f"x{part / plain:.2f} (one set: {explain['partitioned']} | {explain['plain']})")  # fmt: skip
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {COPY}")


if __name__ == "__main__":
    main()
