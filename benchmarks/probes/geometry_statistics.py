"""What does the partitions' geometry statistics target cost a read without a date, in
planning and in plans? (opt1 sets ``partitioning.GEOMETRY_STATISTICS``)

On the embedded cluster named by ``STAGE4_HOME`` (at opt1 or later), for each target
given: every partition's geometry column set to it and the table re-analyzed, then a bbox
read ordered by id and a radius read (the shapes of ``benchmarks/workload``'s
``app_bbox`` and ``app_radius``) explained 60 times on 30 random points: the median
planning and execution ms. Then the access path of each of Q1–Q10's plans
(``stage4.measure.plans.headline``), and which of them changed against the first target. The
partitions are left at ``GEOMETRY_STATISTICS`` and re-analyzed.

    STAGE4_HOME=/tmp/scale-1m-c .venv/bin/python -m benchmarks.probes.geometry_statistics \\
        --targets 100,75,50,20
"""

from __future__ import annotations

import argparse
import random
import statistics

BBOX = (
    "SELECT id, nome, categoria FROM {t} WHERE geom && ST_MakeEnvelope(%(x)s, %(y)s, "
    "%(x)s + 0.005, %(y)s + 0.005, 4326) ORDER BY id LIMIT 100"
)
RADIUS = (
    "SELECT id, nome FROM {t} WHERE ST_DWithin(geom, ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), "
    "4326), 0.003) ORDER BY id"
)


def _set(conn, s, target: int) -> None:
    parts = [r[0] for r in conn.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass",
        (s.qualified_table,))]  # fmt: skip
    for part in parts:
        conn.execute(f"ALTER TABLE {part} ALTER COLUMN {s.geometry_column} SET STATISTICS {target}")
    conn.execute(f"ANALYZE {s.qualified_table}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="100,50", help="comma-separated statistics targets")
    args = ap.parse_args()
    from stage4.config import settings
    from stage4.ddl.partitioning import GEOMETRY_STATISTICS
    from stage4.measure import plans
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    s = settings()
    url = Cluster.from_settings(s).url()
    rng = random.Random(1)
    points = [{"x": rng.randint(-46700, -46550) / 1000, "y": rng.randint(-23620, -23500) / 1000}
              for _ in range(30)]  # fmt: skip
    first: dict[str, str] | None = None
    with connect(url, autocommit=True) as conn:
        try:
            for target in (int(t) for t in args.targets.split(",")):
                _set(conn, s, target)
                line = [f"target {target}:"]
                for name, sql in (("bbox", BBOX), ("radius", RADIUS)):
                    planning, execution = [], []
                    for p in points * 2:
                        plan = conn.execute(
                            "EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) "
                            + sql.format(t=s.qualified_table),
                            p,
                        ).fetchone()[0][0]
                        planning.append(plan["Planning Time"])
                        execution.append(plan["Execution Time"])
                    line.append(f"{name} planning {statistics.median(planning):.2f} ms, "
                                f"execution {statistics.median(execution):.2f} ms;")  # fmt: skip
                heads = {q: plans.headline(p) for q, p in plans.of_workload(url).items()}
                first = first or heads
                changed = [f"{q}: {first[q]} -> {h}" for q, h in heads.items() if first[q] != h]
                print(" ".join(line), "plans changed:", "; ".join(changed) or "none")
        finally:
            _set(conn, s, GEOMETRY_STATISTICS)


if __name__ == "__main__":
    main()
