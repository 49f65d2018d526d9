"""Is a geo read without a date faster on the nearest-features copy than on the partitions?

On a cluster at opt1 or later: for each query (Q ids; default the copy's own,
``ddl.nearest.SERVES``), its base SQL (``queries.base_sql``, what the RPC ran before opt1
re-pointed it) on the table and, every read of the table made on the copy, on
``stage4.geometrias_knn``. Both forms first return the same rows on the bench's four
latency parameter sets (seed 42), else the probe stops. Then ``--rounds`` rounds, the two
forms alternating in turn; prints each parameter set's median ms for each form. Run as the
owner: the copy's policy is not in the way. Read-only.

    STAGE4_HOME=/tmp/scale-1m .venv/bin/python -m benchmarks.probes.copy_reads [Q6,Q7,Q9] [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    from stage4.ddl import nearest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("queries", nargs="?", default=",".join(nearest.SERVES))
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    from stage4.config import settings
    from stage4.measure import workload
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect
    from stage4.queries import base_sql

    s = settings()
    with connect(Cluster.from_settings(s).url(), autocommit=True, prepare_threshold=None) as conn:
        anchors = workload.sample_anchors(conn, s, 42)
        catalogue = workload.queries(s)
        print("query | form | median ms per parameter set")
        for qid in args.queries.split(","):
            forms = {"table": base_sql(s)[qid], "copy": nearest.served_sql(s, qid)}
            params = workload.parameters(qid, anchors, 4, 42, gen=catalogue[qid].params)
            rows = {
                f: [conn.execute(sql, p).fetchall() for p in params] for f, sql in forms.items()
            }
            if rows["table"] != rows["copy"]:
                raise SystemExit(f"{qid}: the copy returns other rows than the table")
            times: dict[tuple[str, int], list[float]] = {}
            for r in range(args.rounds):
                for form in sorted(forms, reverse=r % 2 == 1):
                    for i, p in enumerate(params):
                        t0 = time.perf_counter()
                        conn.execute(forms[form], p).fetchall()
                        times.setdefault((form, i), []).append((time.perf_counter() - t0) * 1000)
            for form in forms:
                each = [statistics.median(times[(form, i)]) for i in range(len(params))]
                print(f"{qid} | {form} | " + " ".join(f"{v:.2f}" for v in each))


if __name__ == "__main__":
    main()
