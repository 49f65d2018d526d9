"""What keeping a geo read's plan for the session saves, per RPC: server-side time per call
under each ``plan_cache_mode``, on an existing embedded cluster at its current revision.

opt1 re-points the reads without a date filter to ``plan_cache_mode = auto`` (PostgreSQL's
default for prepared statements); this probe measures that lever, and the same lever where
it was not taken (at ``schema``, or Q5). Each mode: the RPC called on 8 parameter sets of
the bench's seed to warm (and, for ``auto``, to let the plan cache choose), then 5 more
rounds timed by ``pg_stat_user_functions`` (the server's time inside the call: no client,
no network); the modes alternate twice. The function's own setting is put back after.

    STAGE4_HOME=/tmp/scale-1m .venv/bin/python -m benchmarks.probes.plan_cache Q1,Q2,Q6,Q7
"""

from __future__ import annotations

import argparse

MODES = ("force_custom_plan", "auto", "force_generic_plan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("queries", help="comma-separated geo reads, e.g. Q1,Q2,Q6,Q7")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from stage4.config import settings
    from stage4.ddl import functions
    from stage4.measure import workload
    from stage4.plumbing import migrations
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    s = settings()
    url = Cluster.from_settings(s).url()
    print(f"revision {migrations.current(url)}; ms per call inside the function, twice per mode")
    with connect(url, autocommit=True, prepare_threshold=None) as conn:
        conn.execute("SET track_functions = 'all'")
        anchors = workload.sample_anchors(conn, s, 42)
        for qid in args.queries.split(","):
            fn = functions.read(s, qid)
            call = functions.call_sql(fn)
            params = workload.parameters(qid, anchors, 8, 42)
            (was,) = conn.execute(
                "SELECT proconfig FROM pg_proc WHERE oid = %s::regprocedure", (fn.identity,)
            ).fetchone()
            found: dict[str, list[float]] = {}
            try:
                for mode in MODES * 2:
                    conn.execute(f"ALTER FUNCTION {fn.identity} SET plan_cache_mode = {mode}")
                    for p in params:
                        conn.execute(call, p).fetchall()
                    t0, n0 = _stat(conn, fn.identity)
                    for _ in range(args.rounds):
                        for p in params:
                            conn.execute(call, p).fetchall()
                    t1, n1 = _stat(conn, fn.identity)
                    found.setdefault(mode, []).append((t1 - t0) / (n1 - n0))
            finally:
                mode = next((c.split("=", 1)[1] for c in was or [] if c.startswith("plan_cache")),
                            None)  # fmt: skip
                conn.execute(
                    f"ALTER FUNCTION {fn.identity} SET plan_cache_mode = {mode}"
                    if mode
                    else f"ALTER FUNCTION {fn.identity} RESET plan_cache_mode"
                )
            print(qid, "  ".join(f"{m}: " + " / ".join(f"{v:.3f}" for v in vs)
                                 for m, vs in found.items()))  # fmt: skip


def _stat(conn, identity: str) -> tuple[float, int]:
    conn.execute("SELECT pg_stat_force_next_flush()")
    row = conn.execute(
        "SELECT total_time, calls FROM pg_stat_user_functions WHERE funcid = %s::regprocedure",
        (identity,),
    ).fetchone()
    return (row[0], row[1]) if row else (0.0, 0)


if __name__ == "__main__":
    main()
