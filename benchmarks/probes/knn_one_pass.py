"""Q6 (k nearest, ties by id) in one pass instead of two, on the current revision: a lever
tried against what partitioning costs a read without a date, and not kept.

The app's Q6 reads the k nearest once to learn the k-th distance, then every feature at
most that far, to order them by (distance, id). The one-pass form reads k + 1 nearest with
their columns and runs the second pass only when the (k+1)-th ties the k-th (a one-time
filter on a gating Result). Same rows (checked here on 46 parameter sets); the server's
planning and execution times (EXPLAIN ANALYZE, 3 runs of each of 12 sets, alternating)
say whether it pays: on the partitioned table both forms spend their time in the first
pass, one KNN descent per partition.

    STAGE4_HOME=/tmp/lab200 .venv/bin/python -m benchmarks.probes.knn_one_pass
"""

from __future__ import annotations

import statistics


def one_pass(s) -> str:
    """Q6 in one pass (the ``%(lon)s``/``%(lat)s``/``%(k)s`` placeholders of the app's)."""
    from stage4.queries import point

    t, g, pt = s.qualified_table, s.geometry_column, point(s)
    geog = f"{g}::geography" if s.srid == 4326 else f"ST_Transform({g}, 4326)::geography"
    return (
        f"WITH knn AS MATERIALIZED (SELECT id, nome, categoria, {g} <-> {pt} AS d, "
        f"ST_Distance({geog}, {pt}::geography) AS metros FROM {t} "
        f"ORDER BY {g} <-> {pt} LIMIT %(k)s + 1), "
        "cut AS MATERIALIZED (SELECT max(d) FILTER (WHERE n <= %(k)s) AS dk, "
        "max(d) FILTER (WHERE n > %(k)s) AS dnext "
        "FROM (SELECT d, row_number() OVER (ORDER BY d) AS n FROM knn) r) "
        "SELECT id, nome, categoria, metros FROM ("
        "SELECT id, nome, categoria, metros, d FROM knn "
        "WHERE (SELECT dnext IS NULL OR dnext > dk FROM cut) AND d <= (SELECT dk FROM cut) "
        f"UNION ALL SELECT id, nome, categoria, ST_Distance({geog}, {pt}::geography), "
        f"{g} <-> {pt} FROM {t} WHERE (SELECT dnext = dk FROM cut) "
        f"AND {g} && ST_Expand({pt}, (SELECT dk FROM cut)) "
        f"AND {g} <-> {pt} <= (SELECT dk FROM cut)) u ORDER BY d, id LIMIT %(k)s"
    )


def main() -> None:
    from stage4.config import settings
    from stage4.measure import workload
    from stage4.plumbing import migrations
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect
    from stage4.queries import base_sql

    s = settings()
    url = Cluster.from_settings(s).url()
    forms = {"two passes (the app's)": base_sql(s)["Q6"], "one pass": one_pass(s)}
    with connect(url, autocommit=True, prepare_threshold=None) as conn:
        anchors = workload.sample_anchors(conn, s, 42)
        params = workload.parameters("Q6", anchors, 40, 42)
        params += workload.parameters("Q6", anchors, 6, 42, "fp")
        rows = {
            name: [workload.normalise_rows(conn.execute(sql, p).fetchall()) for p in params]
            for name, sql in forms.items()
        }
        same = len({repr(r) for r in rows.values()}) == 1
        print(f"revision {migrations.current(url)}; same rows on {len(params)} sets: {same}")
        times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in forms}
        for p in params[:12]:
            for _ in range(3):
                for name, sql in forms.items():
                    doc = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, p).fetchone()[0]
                    times[name][0].append(doc[0]["Planning Time"])
                    times[name][1].append(doc[0]["Execution Time"])
        for name, (plan, run) in times.items():
            print(f"{name}: planning {statistics.median(plan):.3f} ms, "
                  f"execution {statistics.median(run):.3f} ms (medians)")  # fmt: skip


if __name__ == "__main__":
    main()
