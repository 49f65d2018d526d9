"""Where Q5's heaviest parameter set spends its time: server vs sort vs client.

Times (median of 15, three rounds) the full query as the bench runs it (execute + fetch
of 5.4k rows), the same query wrapped in ``count(*)`` (server work, one row back), and
the query without its ORDER BY; prints EXPLAIN (ANALYZE, TIMING OFF)'s execution time.
The difference full − count is what the client pays to receive and decode the rows,
the same at every revision. On an embedded cluster with 1M seeded rows:

    STAGE4_HOME=/tmp/scale-1m PYTHONPATH=src .venv/bin/python benchmarks/q5_split.py
"""

from __future__ import annotations

import datetime as dt
import statistics
import time

SQL = (
    "SELECT id, nome, categoria, data_referencia FROM geometrias "
    "WHERE data_referencia >= %(d0)s AND data_referencia < %(d1)s "
    "AND geom && ST_MakeEnvelope(%(a)s, %(b)s, %(c)s, %(d)s, 4326) ORDER BY data_referencia, id"
)
PARAMS = {"a": -46.65861, "b": -23.584378, "c": -46.613594, "d": -23.542654,
          "d0": dt.date(2026, 10, 1), "d1": dt.date(2027, 1, 1)}  # fmt: skip


def main() -> None:
    from stage4.cluster import Cluster
    from stage4.config import settings
    from stage4.db import connect

    forms = {
        "full": SQL,
        "count (server only)": f"SELECT count(*) FROM ({SQL}) s",
        "no sort": SQL.replace(" ORDER BY data_referencia, id", ""),
    }
    with connect(Cluster.from_settings(settings()).url(), autocommit=True) as conn:
        for _ in range(3):
            out = {}
            for name, sql in forms.items():
                conn.execute(sql, PARAMS).fetchall()
                times = []
                for _ in range(15):
                    t0 = time.perf_counter()
                    conn.execute(sql, PARAMS).fetchall()
                    times.append((time.perf_counter() - t0) * 1000)
                out[name] = f"{statistics.median(times):.2f} ms"
            plan = conn.execute("EXPLAIN (ANALYZE, TIMING OFF) " + SQL, PARAMS).fetchall()
            out["server (EXPLAIN)"] = next(r[0] for r in plan if "Execution" in r[0])
            print(out)


if __name__ == "__main__":
    main()
