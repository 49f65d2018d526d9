"""What opt4 and opt5 cost and what opt5 buys, at a given size.

    PYTHONPATH=src python benchmarks/opt45_timings.py --features 100000 [--repeat 30]

Creates a scratch database on the embedded cluster (STAGE4_HOME), seeds it at
``schema``, upgrades to opt3, then times: the opt4 upgrade (first run of the
routine, rows moved out of the default partition), a no-op run of the routine,
Q8/Q9/Q10 at opt4 (median of --repeat calls), the opt5 upgrade, ``refresh_all``,
Q8/Q9/Q10 at opt5, and the opt5 downgrade. Single client, warm cache: a ratio
measured in one run, not a throughput figure.
"""

from __future__ import annotations

import argparse
import math
import time

import psycopg
from _timing import median_ms

from stage4 import migrations, seed
from stage4.config import resolve_url, settings
from stage4.ddl import aggregates as agg
from stage4.refresh import refresh_all

Q9_BASE = """SELECT pt.id AS point_id, pg.id AS polygon_id FROM geometrias pt JOIN geometrias pg
ON ST_Contains(pg.geom, pt.geom) WHERE pt.categoria = %(cat_point)s AND pg.categoria = %(cat_poly)s
AND pg.geom && ST_MakeEnvelope(%(min_lon)s, %(min_lat)s, %(max_lon)s, %(max_lat)s, 4326)
AND GeometryType(pt.geom) = 'POINT' ORDER BY 1, 2"""
Q9_PARAMS = {"cat_poly": "bairro", "cat_point": "escola",
             "min_lon": -46.75, "min_lat": -23.65, "max_lon": -46.55, "max_lat": -23.45}  # fmt: skip


def _tile(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    return (
        z,
        int((lon + 180) / 360 * n),
        int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n),
    )


def _queries(conn: psycopg.Connection, repeat: int, q9: str) -> dict[str, float]:
    return {
        "Q8 contagem_mensal(2024)": median_ms(
            conn, "SELECT * FROM contagem_mensal(2024)", None, repeat
        ),
        "Q9 points in bairros": median_ms(conn, q9, Q9_PARAMS, repeat),
        "Q10 tile z12 (Sé)": median_ms(
            conn, "SELECT tile_mvt(%s, %s, %s)", _tile(-46.6339, -23.5505, 12), repeat
        ),
        "Q10 tile z14 (Sé)": median_ms(
            conn, "SELECT tile_mvt(%s, %s, %s)", _tile(-46.6339, -23.5505, 14), repeat
        ),
    }


def _timed(label: str, fn) -> None:
    t0 = time.perf_counter()
    fn()
    print(f"{label:34} {time.perf_counter() - t0:8.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--keep", action="store_true", help="stay at opt5, keep the database")
    args = ap.parse_args()
    base = resolve_url()
    url = base.rsplit("/", 1)[0] + "/opt45_bench"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS opt45_bench WITH (FORCE)")
        admin.execute("CREATE DATABASE opt45_bench")
    migrations.upgrade(url, "schema")
    with psycopg.connect(url) as conn:
        seed.seed(conn, settings(), features=args.features, seed=42)
    migrations.upgrade(url, "opt3")
    print(f"{args.features} features, median of {args.repeat} calls, 1 client")
    _timed("opt4 upgrade (routine's 1st run)", lambda: migrations.upgrade(url, "opt4"))
    with psycopg.connect(url, autocommit=True) as conn:
        _timed("routine, nothing to do", lambda: conn.execute(
            "SELECT * FROM stage4_ensure_partitions()").fetchall())  # fmt: skip
        conn.execute("VACUUM ANALYZE")
        before = _queries(conn, args.repeat, Q9_BASE)
    _timed("opt5 upgrade (views built)", lambda: migrations.upgrade(url, "opt5"))
    for name, seconds in refresh_all(url):
        print(f"refresh CONCURRENTLY {name:40} {seconds:6.2f} s")
    with psycopg.connect(url, autocommit=True) as conn:
        sizes = conn.execute(
            "SELECT c.relname, pg_size_pretty(pg_total_relation_size(c.oid)) FROM pg_class c "
            "WHERE c.relkind = 'm' ORDER BY 1"
        ).fetchall()
        conn.execute("VACUUM ANALYZE")
        after = _queries(conn, args.repeat, agg.VARIANTS["Q9"]["sql"])
    for name, size in sizes:
        print(f"size {name:40} {size}")
    print(f"{'query':30} {'opt4 ms':>9} {'opt5 ms':>9} {'ratio':>7}")
    for q in before:
        print(f"{q:30} {before[q]:9.2f} {after[q]:9.2f} {before[q] / after[q]:6.2f}x")
    if args.keep:
        print(f"kept at opt5: {url}")
        return
    _timed("opt5 downgrade", lambda: migrations.downgrade(url, "opt4"))
    _timed("opt4 downgrade", lambda: migrations.downgrade(url, "opt3"))
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute("DROP DATABASE opt45_bench WITH (FORCE)")


if __name__ == "__main__":
    main()
