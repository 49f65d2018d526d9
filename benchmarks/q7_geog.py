"""Q7 (radius in metres) on copies with a stored geography: does skipping the cast pay?

Builds nothing itself: on a cluster at ``schema`` create, in the same order as opt5's tile
view (by geometry), ``q7_a`` (id, data_referencia, nome, categoria, geom; GiST on geom),
``q7_b`` (id, nome, categoria, geom::geography AS geog; GiST on geog) and ``q7_c`` (both
columns; GiST on geom), VACUUM ANALYZE them, then run this: per parameter set (the bench's
seed 42), the median of 7 executions of the app's Q7 on the table (``table``), the same
SQL on q7_a (``copy``), on q7_c with ``ST_DWithin(geog, …)`` (``both``), and a bare
``ST_DWithin`` on q7_b's geography index (``geog``); rows are checked equal first.

    STAGE4_HOME=/tmp/g1m PYTHONPATH=src .venv/bin/python benchmarks/q7_geog.py 12

At 1M (seventh session, two runs): sums over 12 sets table 336 / 270 ms, copy 298 / 265,
both — / 258, geog 282 / 255; per set the order changes from run to run. Not adopted.
"""

from __future__ import annotations

import statistics
import sys
import time


def main() -> None:
    from stage4 import workload
    from stage4.cluster import Cluster
    from stage4.config import settings
    from stage4.db import connect

    s = settings()
    base = workload.queries(s)["Q7"].sql
    pt = "ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)"
    sqls = {
        "table": base,
        "copy": base.replace(s.qualified_table, "q7_a"),
        "both": base.replace(s.qualified_table, "q7_c").replace(
            "ST_DWithin(geom::geography", "ST_DWithin(geog"
        ),
        "geog": f"SELECT id, nome, categoria FROM q7_b "
        f"WHERE ST_DWithin(geog, {pt}::geography, %(radius_m)s) ORDER BY id",
    }
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    with connect(Cluster.from_settings(s).url(), autocommit=True, prepare_threshold=None) as conn:
        sets = list(workload.parameters("Q7", workload.sample_anchors(conn, s, 42), n, 42))
        rows = {k: [conn.execute(q, p).fetchall() for p in sets] for k, q in sqls.items()}
        assert all(r == rows["table"] for r in rows.values()), "a copy returned other rows"
        total = dict.fromkeys(sqls, 0.0)
        for i, p in enumerate(sets, 1):
            line = []
            for name, sql in sqls.items():
                times = []
                for _ in range(7):
                    t0 = time.perf_counter()
                    conn.execute(sql, p).fetchall()
                    times.append((time.perf_counter() - t0) * 1000)
                total[name] += statistics.median(times)
                line.append(f"{name} {statistics.median(times):7.2f}")
            print(f"set {i} r={p['radius_m']} rows={len(rows['table'][i - 1])}: " + "  ".join(line))
        print("sums: " + ", ".join(f"{k} {v:.1f} ms" for k, v in total.items()))


if __name__ == "__main__":
    main()
