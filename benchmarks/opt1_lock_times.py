"""How long opt1 blocks writers and readers, at a given size, with or without a live writer.

    PYTHONPATH=src python benchmarks/opt1_lock_times.py --features 200000 [--writer]

Creates a scratch database on the embedded cluster (STAGE4_HOME), seeds it at revision
``schema``, upgrades to opt1 and downgrades back, printing wall time, writers-blocked
and readers-blocked seconds (until the end of the revision, before COMMIT).
"""

from __future__ import annotations

import argparse
import threading
import time

import psycopg

from stage4 import migrations, seed
from stage4.config import resolve_url, settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=200_000)
    ap.add_argument("--writer", action="store_true", help="run a writer during the migration")
    args = ap.parse_args()
    base = resolve_url()
    url = base.rsplit("/", 1)[0] + "/opt1_bench"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS opt1_bench WITH (FORCE)")
        admin.execute("CREATE DATABASE opt1_bench")
    migrations.upgrade(url, "schema")
    with psycopg.connect(url) as conn:
        seed.seed(conn, settings(), features=args.features, seed=42)
    stop, writes = threading.Event(), [0]

    def writer() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(
                    "INSERT INTO geometrias (nome, categoria, data_referencia, geom) VALUES "
                    "('w', 'escola', '2025-03-01', 'SRID=4326;POINT(-46.6 -23.5)')"
                )
                conn.execute("UPDATE geometrias SET descricao = 'u' WHERE id = %s",
                             (writes[0] % args.features + 1,))  # fmt: skip
                writes[0] += 1

    for verb, target in (("upgrade", "opt1"), ("downgrade", "schema")):
        metrics: dict = {}
        t = threading.Thread(target=writer) if args.writer else None
        stop.clear()
        if t:
            t.start()
        started = time.perf_counter()
        getattr(migrations, verb)(url, target, metrics=metrics)
        wall = time.perf_counter() - started
        stop.set()
        if t:
            t.join()
        print(f"{verb:9} {args.features} rows: wall {wall:.2f} s, writers blocked "
              f"{metrics['writers_blocked_s']:.3f} s, readers blocked "
              f"{metrics['readers_blocked_s']:.3f} s, concurrent writes {writes[0]}")  # fmt: skip
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute("DROP DATABASE opt1_bench WITH (FORCE)")


if __name__ == "__main__":
    main()
