"""How fast does `stage4 seed` fill the table? (target: 1,000,000 features in < 90 s)

    .venv/bin/python -m benchmarks.seed_speed                  # private cluster, 1M rows
    .venv/bin/python -m benchmarks.seed_speed --url postgresql://... --features 100000

Without --url it starts a private cluster under /tmp/stage4-bench (stopped at the end)
and drops and recreates the table there, so each run starts empty. With --url the table
is created if absent and seeding refuses one that holds rows. The timing covers the
whole seed call: generation, index build and ANALYZE. The content hash (computed after,
not timed) lets two runs prove they wrote the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from stage4.config import settings
from stage4.errors import Stage4Error
from stage4.plumbing import seed as seeding
from stage4.plumbing.db import connect, engine

RESULT = Path(__file__).resolve().parent / "results" / "seed_speed.json"
BENCH_HOME = Path("/tmp/stage4-bench")


def create_table(url: str, reset: bool) -> None:
    """The reference table and its baseline indexes, from the one shared declaration."""
    from sqlalchemy import MetaData, text

    from stage4.ddl.table import baseline_indexes, geometrias_table

    s = settings()
    md = MetaData(schema=s.schema)
    table = geometrias_table(s, md)
    baseline_indexes(s, table)
    eng = engine(url)
    try:
        with eng.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
            if reset:
                table.drop(conn, checkfirst=True)
            md.create_all(conn, checkfirst=True)
    finally:
        eng.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--url", help="database to use (default: a private cluster)")
    args = ap.parse_args(argv)

    load = os.getloadavg()[0]  # other work on the machine skews the figure: record it
    cluster = None
    url = args.url
    if url is None:
        from stage4.plumbing.cluster import Cluster

        cluster = Cluster(BENCH_HOME, database="seedbench")
        cluster.ensure_started()
        url = cluster.url()
    try:
        create_table(url, reset=cluster is not None)
        s = settings()
        with connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            postgis = conn.execute("SELECT postgis_lib_version()").fetchone()[0]

            def progress(done: int, total: int) -> None:
                print(f"\r  {done:>10,} / {total:,}", end="", file=sys.stderr, flush=True)

            result = seeding.seed(
                conn, s, features=args.features, seed=args.seed, batch=args.batch, progress=progress
            )
            print(file=sys.stderr)
            started = time.perf_counter()
            digest = seeding.content_hash(conn, s)
            hash_seconds = time.perf_counter() - started
    except Stage4Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.stop()

    rate = result.inserted / result.seconds if result.seconds else 0.0
    print(f"seeded {result.inserted:,} features in {result.seconds:.1f} s ({rate:,.0f} rows/s)")
    if load > 1:
        print(f"note: load average was {load:.1f} before the run; other work skews this figure")
    print(f"content_hash {digest} ({hash_seconds:.1f} s)")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "features": result.inserted,
        "seed": args.seed,
        "batch": args.batch,
        "seconds": round(result.seconds, 2),
        "rows_per_second": round(rate),
        "content_hash": digest,
        "content_hash_seconds": round(hash_seconds, 2),
        "postgres_version": version,
        "postgis_version": postgis,
        "load_average_1min_before": round(load, 2),
        "cpu_count": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULT.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
