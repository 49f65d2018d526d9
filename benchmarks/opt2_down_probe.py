"""Does opt2's downgrade reference (a copy without indexes) do less work than the step?

Times opt2's downgrade statements (storage restore, then DROP COLUMN of the derived
columns) in a rolled-back transaction on the real table, on ``scale.py``'s copy (same
rows, partitions, generated columns and storage, no indexes) and on that copy once it
has the table's indexes; then once committed on the indexed copy. Median of 7 each.
Needs a cluster at opt2 (and leaves it there):

    STAGE4_HOME=/tmp/scale-1m PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/opt2_down_probe.py
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import psycopg


def main() -> None:
    import scale

    from stage4.cluster import Cluster
    from stage4.config import settings
    from stage4.ddl import gis_columns, partitioning

    s = settings()
    r = replace(s, schema="scale_ref")
    real = [gis_columns.restore_storage_sql(s), gis_columns.drop_columns_sql(s)]
    copy = [gis_columns.restore_storage_sql(r), gis_columns.drop_columns_sql(r)]
    with psycopg.connect(Cluster.from_settings(s).url(), autocommit=True) as conn:

        def rolled_back(stmts: list[str]) -> float:
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                try:
                    with conn.transaction():
                        for stmt in stmts:
                            conn.execute(stmt)
                        raise psycopg.Rollback()
                except psycopg.Rollback:
                    pass
                times.append((time.perf_counter() - t0) * 1000)
            return statistics.median(times)

        conn.execute("DROP SCHEMA IF EXISTS scale_ref CASCADE")
        conn.execute("CREATE SCHEMA scale_ref")
        like = ("INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION "
                "INCLUDING CONSTRAINTS")  # fmt: skip
        parts = partitioning.partitions_sql(r, r.qualified_table)
        for stmt in scale._copy_sql(conn, s, r.qualified_table, like, parts):
            conn.execute(stmt)
        print(f"real table, rolled back: {rolled_back(real):.1f} ms")
        print(f"copy without indexes, rolled back: {rolled_back(copy):.1f} ms")
        g, d = s.geometry_column, s.time_column
        for ddl in (f"ALTER TABLE {r.qualified_table} ADD PRIMARY KEY (id, {d})",
                    f"CREATE INDEX ON {r.qualified_table} USING gist ({g})",
                    f"CREATE INDEX ON {r.qualified_table} ({d})",
                    f"CREATE INDEX ON {r.qualified_table} (categoria)"):  # fmt: skip
            conn.execute(ddl)
        print(f"copy with the table's indexes, rolled back: {rolled_back(copy):.1f} ms")
        print(f"real table again, rolled back: {rolled_back(real):.1f} ms")
        t0 = time.perf_counter()
        with conn.transaction():
            for stmt in copy:
                conn.execute(stmt)
        print(f"copy with indexes, committed: {(time.perf_counter() - t0) * 1000:.1f} ms")
        conn.execute("DROP SCHEMA scale_ref CASCADE")


if __name__ == "__main__":
    main()
