"""What one write of the app costs at the current revision: insert, text update, geometry
update, delete, each a single-row transaction rolled back (nothing is left behind).

Run it at two revisions to see what a step adds to every write (e.g. opt2 then opt3: the
search GIN computes ``to_tsvector`` and adds its lexemes on every insert and every update
that is not HOT). A GIN with ``fastupdate`` (the default) defers most of its work to a
pending list that the writer that fills it (or VACUUM) merges: the mean and p99 carry that
share, the median does not. WAL bytes per write (the cluster's, so run it on a cluster
nothing else writes to) do not move with the machine's load as times do. ``--n`` writes
per kind, after 50 untimed ones.

    STAGE4_HOME=/tmp/scale-1m .venv/bin/python -m benchmarks.probes.write_cost [--n 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

WRITES = {
    "insert": "INSERT INTO {t} (nome, categoria, {d}, {g}, descricao) VALUES "
    "(%(nome)s, 'escola', DATE '2024-06-15', ST_Point(%(lon)s, %(lat)s, 4326), %(nome)s)",
    "update nome": "UPDATE {t} SET nome = %(nome)s WHERE id = %(id)s",
    "update geom": "UPDATE {t} SET {g} = ST_Point(%(lon)s, %(lat)s, 4326) WHERE id = %(id)s",
    "delete": "DELETE FROM {t} WHERE id = %(id)s",
}
WORDS = ("biblioteca", "escola", "acervo", "parque", "museu", "teatro", "praça", "arquivo")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="timed writes per kind")
    args = ap.parse_args()
    from stage4.config import settings
    from stage4.plumbing import migrations
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    s = settings()
    url = Cluster.from_settings(s).url()
    rng = random.Random(42)
    with connect(url, prepare_threshold=0) as conn:
        ids = [r[0] for r in conn.execute(f"SELECT id FROM {s.qualified_table} TABLESAMPLE "
                                          "SYSTEM (5) LIMIT 5000").fetchall()]  # fmt: skip
        conn.rollback()
        print(f"revision {migrations.current(url)}, {args.n} writes per kind, rolled back")
        for kind, template in WRITES.items():
            sql = template.format(t=s.qualified_table, d=s.time_column, g=s.geometry_column)
            times = []
            wal0 = 0
            for i in range(args.n + 50):
                if i == 50:
                    wal0 = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'").fetchone()[0]
                    conn.rollback()
                p = {"id": rng.choice(ids), "lon": -46.6 + rng.uniform(-0.3, 0.3),
                     "lat": -23.5 + rng.uniform(-0.3, 0.3),
                     "nome": " ".join(rng.choice(WORDS) for _ in range(4))}  # fmt: skip
                t0 = time.perf_counter()
                conn.execute(sql, p)
                conn.rollback()
                if i >= 50:
                    times.append((time.perf_counter() - t0) * 1000)
            wal = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'").fetchone()[0] - wal0
            conn.rollback()
            times.sort()
            print(f"{kind:12s} median {statistics.median(times):.3f} ms  mean "
                  f"{statistics.fmean(times):.3f} ms  p99 {times[int(len(times) * 0.99)]:.3f} "
                  f"ms  max {times[-1]:.3f} ms  WAL {wal / args.n:.0f} B")  # fmt: skip


if __name__ == "__main__":
    main()
