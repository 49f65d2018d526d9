"""Q4 (search RPC) before and after opt3: identical rows, median timings, plans.

Needs a database at opt3 (it downgrades to opt2 and upgrades back)::

    export PYTHONPATH=$PWD/src STAGE4_HOME=/tmp/opt23-pg
    python benchmarks/opt3_search.py postgresql://postgres@127.0.0.1:PORT/biblioteca [--plans]
"""

from __future__ import annotations

import statistics
import sys
import time

import psycopg

from stage4 import migrations

CALLS = {
    "biblioteca centre": ("biblioteca", -46.70, -23.60, -46.60, -23.50),
    "parque whole": ("parque", -47.2, -24.0, -46.2, -23.3),
    "mário andrade centre": ("Mário de Andrade", -46.70, -23.60, -46.60, -23.50),
    "acervo histórico small": ("acervo histórico", -46.645, -23.56, -46.625, -23.54),
    "ciclovia sparse": ("ciclovia", -47.15, -23.95, -47.05, -23.85),
}
SQL = "SELECT * FROM buscar_geometrias(%s, %s, %s, %s, %s)"


def measure(url: str, runs: int, plans: bool) -> dict[str, tuple[list, float]]:
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for label, args in CALLS.items():
            rows = conn.execute(SQL, args, prepare=False).fetchall()
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                conn.execute(SQL, args, prepare=False).fetchall()
                times.append((time.perf_counter() - t) * 1000)
            out[label] = (rows, statistics.median(times))
            if plans and label == next(iter(CALLS)):
                conn.execute("LOAD 'auto_explain'")
                conn.execute("SET auto_explain.log_min_duration = 0")
                conn.execute("SET auto_explain.log_nested_statements = on")
                conn.execute("SET auto_explain.log_analyze = on")
                conn.execute("SET auto_explain.log_buffers = on")
                conn.execute("SET client_min_messages = log")
                conn.add_notice_handler(lambda d: print(d.message_primary))
                conn.execute(SQL, args, prepare=False).fetchall()
                conn.execute("SET client_min_messages = notice")
    return out


def main(url: str, runs: int = 15, plans: bool = False) -> None:
    after = measure(url, runs, plans)
    migrations.downgrade(url, "opt2")
    before = measure(url, runs, plans)
    migrations.upgrade(url, "opt3")
    for label in CALLS:
        (rb, tb), (ra, ta) = before[label], after[label]
        print(
            f"Q4 {label:24s} rows={len(ra):3d} identical={rb == ra} "
            f"before={tb:8.2f} ms after={ta:8.2f} ms  x{tb / ta:6.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1], plans="--plans" in sys.argv)
