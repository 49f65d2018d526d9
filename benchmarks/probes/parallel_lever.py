"""Which lever keeps short reads on the partitions serial, and what does each cost? (A/B/C…)

Two databases of one embedded cluster hold the same seeded rows: one at ``schema`` (plain
table), one at opt1 (partitioned). Each round times every query (the bench's four
parameter sets, seed 42, after one warm-up; the mean of the four) under five variants, in
an order reversed every other round (ABCDE, EDCBA, …):

* ``schema``: the plain table, the server's default parallel setting;
* ``schema serial``: the plain table, ``max_parallel_workers_per_gather = 0``;
* ``opt1 database``: the partitions, ``max_parallel_workers_per_gather = 0`` (what a new
  session gets from ``ALTER DATABASE … SET``);
* ``opt1 none``: the partitions, no setting and no storage parameter;
* ``opt1 partitions``: the partitions, ``parallel_workers = 0`` on each partition (the
  parent takes no storage parameter on PostgreSQL 15);
* ``schema costs`` / ``opt1 costs``: no worker limit, ``parallel_setup_cost`` raised to
  ``--setup-cost`` (a plan goes parallel only when it saves more than that; by default
  the value opt1 sets for the database).

The settings are session ``SET``s (the database's own settings are not touched); the
partitions' storage parameters are switched between variants and put back as found at
the end, also when interrupted. Besides Q1–Q10, two large scans show what stays
parallel: ``scan_radius`` (Q7's radius by geography, no index usable) and ``scan_all``
(area by category over every row), on one parameter set. Prints per query and variant the median over rounds
and the workers the plan of set 1 asks for (``fn``: inside a function, not shown), the
ratios to ``opt1 database``, and the load average before and after.

    STAGE4_HOME=/tmp/h9 .venv/bin/python -m benchmarks.probes.parallel_lever \\
        --schema-db biblioteca --opt1-db opt1db [--rounds 5] [Q1,Q3,scan_radius]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from stage4 import optimisations

VARIANTS = (
    "schema",
    "schema serial",
    "schema costs",
    "opt1 database",
    "opt1 none",
    "opt1 partitions",
    "opt1 costs",
)


def _large(s) -> dict[str, str]:
    """Two reads that scan every row: what must stay parallel where parallel pays."""
    t, g = s.qualified_table, s.geometry_column
    pt = "ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography"
    return {
        "scan_radius": f"SELECT count(*) FROM {t} WHERE ST_DWithin({g}::geography, {pt}, "
        "%(radius_m)s)",
        "scan_all": f"SELECT categoria, count(*), sum(ST_Area({g}::geography)) FROM {t} "
        "GROUP BY categoria",
    }


def _workers(conn, sql: str, params: dict) -> str:
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0]
    plan = plan if isinstance(plan, list) else json.loads(plan)

    def walk(node: dict) -> int:
        own = node.get("Workers Planned", 0)
        return max([own, *(walk(c) for c in node.get("Plans", []))])

    top = plan[0]["Plan"]
    if top.get("Node Type") == "Result" and "Plans" not in top:
        return "fn"
    return str(walk(top))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("queries", nargs="?", default="Q1,Q2,Q3,Q4,Q5,Q6,Q7,Q8,Q9,Q10,"
                    "scan_radius,scan_all")  # fmt: skip
    ap.add_argument("--schema-db", default="biblioteca")
    ap.add_argument("--opt1-db", default="opt1db")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--setup-cost",
        type=float,
        default=float(
            optimisations.by_revision(optimisations.rebuilder(optimisations.revisions())).VALUE
        ),
    )
    args = ap.parse_args()
    from urllib.parse import urlsplit, urlunsplit

    from stage4.config import settings
    from stage4.measure import workload
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    s = settings()
    url = Cluster.from_settings(s).url()

    def conn_to(db: str, serial: bool, costly: bool = False):
        c = connect(urlunsplit(urlsplit(url)._replace(path=f"/{db}")), autocommit=True,
                    prepare_threshold=None)  # fmt: skip
        default = c.execute(
            "SELECT boot_val FROM pg_settings WHERE name = 'max_parallel_workers_per_gather'"
        ).fetchone()[0]
        c.execute(f"SET max_parallel_workers_per_gather = {0 if serial else default}")
        if costly:
            c.execute(f"SET parallel_setup_cost = {args.setup_cost}")
        return c

    conns = {
        "schema": conn_to(args.schema_db, False),
        "schema serial": conn_to(args.schema_db, True),
        "schema costs": conn_to(args.schema_db, False, costly=True),
        "opt1 database": conn_to(args.opt1_db, True),
        "opt1 none": conn_to(args.opt1_db, False),
        "opt1 partitions": conn_to(args.opt1_db, False),
        "opt1 costs": conn_to(args.opt1_db, False, costly=True),
    }
    admin = conns["opt1 none"]
    found = admin.execute(
        "SELECT inhrelid::regclass::text, "
        "(SELECT option_value FROM pg_options_to_table(reloptions) "
        " WHERE option_name = 'parallel_workers') "
        "FROM pg_inherits JOIN pg_class ON oid = inhrelid "
        "WHERE inhparent = %(t)s::regclass ORDER BY 1",
        {"t": s.qualified_table},
    ).fetchall()
    if not found:
        raise SystemExit(f"{args.opt1_db}: {s.qualified_table} has no partitions (not at opt1)")

    state: list[bool | None] = [None]

    def lever(on: bool | None) -> None:
        """On, off, or (None) as found."""
        if on is not None and state[0] is on:
            return
        state[0] = on
        for part, value in found:
            v = {True: "0", False: None, None: value}[on]
            if v is None:
                admin.execute(f"ALTER TABLE {part} RESET (parallel_workers)")
            else:
                admin.execute(f"ALTER TABLE {part} SET (parallel_workers = {v})")

    catalogue = {q: v.sql for q, v in workload.queries(s).items()} | _large(s)
    anchors = workload.sample_anchors(conns["schema"], s, 42)
    print(f"setup cost of the costs variants: {args.setup_cost:g}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"partitions: {len(found)}; parallel_workers as found: "
          f"{sorted({v or '(none)' for _, v in found})}")  # fmt: skip
    results: dict[str, dict[str, list[float]]] = {}
    workers: dict[str, dict[str, str]] = {}
    try:
        for qid in args.queries.split(","):
            gen_id = "Q7" if qid == "scan_radius" else ("Q1" if qid == "scan_all" else qid)
            params = workload.parameters(gen_id, anchors, 1 if gen_id != qid else 4, 42)
            sql = catalogue[qid]
            results[qid] = {v: [] for v in VARIANTS}
            workers[qid] = {}
            for i in range(args.rounds + 1):  # round 0: warm-up and plans
                for v in VARIANTS if i % 2 == 0 else reversed(VARIANTS):
                    if v.startswith("opt1 "):
                        lever(v == "opt1 partitions")
                    c = conns[v]
                    if i == 0:
                        workers[qid][v] = _workers(c, sql, params[0])
                    t0 = time.perf_counter()
                    for p in params:
                        c.execute(sql, p).fetchall()
                    if i:
                        results[qid][v].append((time.perf_counter() - t0) * 1000 / len(params))
            med = {v: statistics.median(results[qid][v]) for v in VARIANTS}
            ref = med["opt1 database"]
            cells = " | ".join(f"{med[v]:.1f} ({workers[qid][v]})" for v in VARIANTS)
            ratios = ", ".join(f"{v} x{med[v] / ref:.2f}" for v in VARIANTS if v != "opt1 database")
            print(f"{qid} | {cells} | vs opt1 database: {ratios}", flush=True)
    finally:
        lever(None)
        for c in conns.values():
            c.close()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("columns: " + " | ".join(f"{v} ms (workers planned)" for v in VARIANTS))


if __name__ == "__main__":
    main()
