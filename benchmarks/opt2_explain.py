"""Base vs opt2 variant for Q1 and Q3: same results, plans and median timings.

Run on a database upgraded to opt2 (the base queries still work there), e.g.::

    export PYTHONPATH=$PWD/src STAGE4_HOME=/tmp/opt23-pg
    stage4 db start            # then seed 100k rows and `alembic upgrade opt2`
    python benchmarks/opt2_explain.py postgresql://postgres@127.0.0.1:PORT/biblioteca

Prints, per viewport, the rows matched, median ms over N runs (one session,
alternating base/variant so noise hits both alike) and the ratio; ``--plans``
prints EXPLAIN (ANALYZE, BUFFERS) of each query on the first viewport.
"""

from __future__ import annotations

import statistics
import sys
import time

import psycopg

from stage4.config import settings
from stage4.ddl import gis_columns

VIEWPORTS = {
    "centre 0.10deg": (-46.70, -23.60, -46.60, -23.50),
    "centre 0.02deg": (-46.645, -23.56, -46.625, -23.54),
    "whole area": (-47.2, -24.0, -46.2, -23.3),
    "sparse edge": (-47.15, -23.95, -47.05, -23.85),
}


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)
    return a == b


def same(rows_a, rows_b) -> bool:
    a, b = sorted(rows_a, key=repr), sorted(rows_b, key=repr)
    return len(a) == len(b) and all(
        all(_close(x, y) for x, y in zip(ra, rb, strict=True)) for ra, rb in zip(a, b, strict=True)
    )


def main(url: str, runs: int = 15, plans: bool = False) -> None:
    s = settings()
    base, variant = gis_columns.base_queries(s), gis_columns.variants(s)
    with psycopg.connect(url, autocommit=True) as conn:
        for label, (x0, y0, x1, y1) in VIEWPORTS.items():
            p = {"min_lon": x0, "min_lat": y0, "max_lon": x1, "max_lat": y1}
            for q in sorted(variant):
                sqls = {"base": base[q], "variant": variant[q]["sql"]}
                results = {k: conn.execute(v, p, prepare=False).fetchall() for k, v in sqls.items()}
                ok = same(results["base"], results["variant"])
                times: dict[str, list[float]] = {"base": [], "variant": []}
                for _ in range(runs):
                    for k, v in sqls.items():
                        t = time.perf_counter()
                        conn.execute(v, p, prepare=False).fetchall()
                        times[k].append((time.perf_counter() - t) * 1000)
                mb, mv = statistics.median(times["base"]), statistics.median(times["variant"])
                print(
                    f"{q} {label:15s} identical={ok} base={mb:8.2f} ms "
                    f"variant={mv:8.2f} ms  x{mb / mv:5.1f}"
                )
                if plans and label == next(iter(VIEWPORTS)):
                    for k, v in sqls.items():
                        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + v, p).fetchall()
                        print(f"--- {q} {k}\n" + "\n".join(r[0] for r in plan))


if __name__ == "__main__":
    main(sys.argv[1], plans="--plans" in sys.argv)
