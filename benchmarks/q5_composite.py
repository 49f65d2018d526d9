"""Q5 end to end with and without a two-column GiST ``(geom, data_referencia)``, interleaved.

Creates the index (and btree_gist) when missing, then for each of ``--rounds`` rounds
times the bench's four Q5 parameter sets (seed 42; execute + fetch, as the bench does)
once inside a transaction that has dropped the index (rolled back: the planner does not
see it) and once with it, in alternating order; prints each set's median ms both ways.
Drops what it created at the end. On an embedded cluster at opt1 or later, 1M rows:

    STAGE4_HOME=/tmp/scale-1m PYTHONPATH=src .venv/bin/python benchmarks/q5_composite.py
"""

from __future__ import annotations

import argparse
import statistics
import time

INDEX = "q5_probe_geom_date"
WARM = 2  # rounds that warm both ways, not kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    from stage4 import workload
    from stage4.cluster import Cluster
    from stage4.config import settings
    from stage4.db import connect

    s = settings()
    with connect(Cluster.from_settings(s).url(), autocommit=True) as conn:
        had_ext = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'btree_gist'").fetchone()
        conn.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON {s.qualified_table} "
                     "USING gist (geom, data_referencia)")  # fmt: skip
        try:
            sql = workload.queries(s)["Q5"].sql
            sets = list(workload.parameters("Q5", workload.sample_anchors(conn, s, 42), 4, 42))
            times = {k: [[] for _ in sets] for k in ("plain", "composite")}

            def run(kind: str) -> None:
                for i, p in enumerate(sets):
                    t0 = time.perf_counter()
                    conn.execute(sql, p).fetchall()
                    times[kind][i].append((time.perf_counter() - t0) * 1000)

            def plain() -> None:
                with conn.transaction(force_rollback=True):
                    conn.execute(f"DROP INDEX {s.schema}.{INDEX}")
                    run("plain")

            for r in range(WARM + args.rounds):
                for step in (plain, lambda: run("composite"))[:: 1 if r % 2 else -1]:
                    step()
            for kind, per_set in times.items():
                cells = "  ".join(f"{statistics.median(v[WARM:]):6.2f}" for v in per_set)
                print(f"{kind:10s} median ms per set: {cells}")
        finally:
            conn.execute(f"DROP INDEX IF EXISTS {s.schema}.{INDEX}")
            if not had_ext:
                conn.execute("DROP EXTENSION IF EXISTS btree_gist")


if __name__ == "__main__":
    main()
