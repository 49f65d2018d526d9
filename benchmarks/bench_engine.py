"""The benchmark engine on a real-size database: baseline, a bench, and a lost GiST index.

Seeds N features (default 100,000; 1,000,000 works too) into a private embedded
cluster under /tmp, then:

1. baseline: a default ``bench.run`` stored as the baseline (forced), timed;
2. bench: a second default run, compared with the baseline (the gate's rule);
3. GiST drop, REPS times: drop the geometry's GiST index, run, compare, recreate it.
   Every query that reads by location must be flagged "slower" every time.

    .venv/bin/python -m benchmarks.bench_engine --features 100000 --gist-reps 3

Writes benchmarks/results/bench_engine.json, bench_latency.png, gist_drop.png.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks._cluster import RESULTS, seeded_cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=100_000)
    ap.add_argument("--gist-reps", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    url = seeded_cluster(args.features)
    seeded = time.perf_counter() - t0
    from stage4.config import settings
    from stage4.measure import bench, stats, store
    from stage4.plumbing.db import connect

    s = settings()
    base = bench.run(url, label="BASELINE")
    with connect(url, autocommit=True) as conn:
        store.set_baseline(conn, base.run_id, force=True)
    run = bench.run(url, label="BENCH")
    same = {q: run.fingerprints[q] == fp for q, fp in base.fingerprints.items()}
    comps = stats.compare_bench(base, run)
    print(f"baseline run {base.run_id}: {base.seconds:.1f} s; bench run {run.run_id}: "
          f"{run.seconds:.1f} s; verdicts: {_verdicts(comps)}", flush=True)  # fmt: skip

    index = f"{s.table}_{s.geometry_column}_gist"
    drops = []
    for i in range(args.gist_reps):
        with connect(url, autocommit=True) as conn:
            definition = conn.execute(
                "SELECT pg_get_indexdef(to_regclass(%s))", (f"{s.schema}.{index}",)
            ).fetchone()[0]
            conn.execute(f"DROP INDEX {s.schema}.{index}")
        try:
            cand = bench.run(url, label=f"NOGIST_{i + 1}")
        finally:
            with connect(url, autocommit=True) as conn:
                conn.execute(definition)
        c = stats.compare_bench(base, cand)
        ok = {q: cand.fingerprints[q] == fp for q, fp in base.fingerprints.items()}
        decision = stats.gate_verdict(c, ok)
        drops.append({"rep": i + 1, "run_id": cand.run_id, "seconds": cand.seconds,
                      "slower": [q for q, x in c.items() if x.verdict == stats.SLOWER],
                      "fingerprints_equal": all(ok.values()), "go": decision.go,
                      "comparisons": {q: x.to_dict() for q, x in c.items()}})  # fmt: skip
        print(f"GiST dropped, rep {i + 1}: slower {drops[-1]['slower']}; "
              f"gate {'GO' if decision.go else 'NO-GO'}", flush=True)  # fmt: skip

    result = {
        "command": f".venv/bin/python -m benchmarks.bench_engine --features {args.features} "
        f"--gist-reps {args.gist_reps}",
        "features": args.features,
        "seed_seconds": seeded,
        "defaults": {
            "iterations": bench.ITERATIONS,
            "sets": bench.SETS,
            "concurrency": bench.CONCURRENCY,
            "duration": bench.DURATION,
        },
        "baseline": base.to_dict() | {"queries": _compact(base)},
        "bench": run.to_dict() | {"queries": _compact(run)},
        "bench_vs_baseline": {q: x.to_dict() for q, x in comps.items()},
        "bench_fingerprints_equal": all(same.values()),
        "gist_drop": drops,
        "wall_seconds": time.perf_counter() - t0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_engine.json").write_text(json.dumps(result, indent=2, default=str))
    _figures(base, run, drops, args)


def _verdicts(comps) -> str:
    return (
        ", ".join(
            f"{q} {c.verdict}" for q, c in comps.items() if c.verdict != "no significant change"
        )
        or "all no significant change"
    )


def _compact(run) -> dict:
    return {q: {k: v for k, v in d.items() if k not in ("samples", "executions")}
            for q, d in run.to_dict()["queries"].items()}  # fmt: skip


def _figures(base, run, drops, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qids = list(base.samples)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for k, (r, label) in enumerate(((base, "baseline"), (run, "second run"))):
        summ = r.summary
        ax.bar([x + k * 0.4 for x in range(len(qids))], [summ[q]["p50"] for q in qids], 0.4,
               label=label, yerr=[[0] * len(qids), [summ[q]["p95"] - summ[q]["p50"] for q in qids]],
               capsize=2)  # fmt: skip
    ax.set_xticks([x + 0.2 for x in range(len(qids))], qids)
    ax.set_yscale("log")
    ax.set_ylabel("latency per execution, p50 (bar) to p95 (ms)")
    ax.set_title(f"Q1–Q10 at {args.features:,} features, default bench "
                 f"({base.seconds:.0f} s and {run.seconds:.0f} s per run)")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_latency.png", dpi=100)
    plt.close(fig)
    if not drops:
        return
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for k, d in enumerate(drops):
        c = d["comparisons"]
        xs = [j + (k - len(drops) / 2) * 0.8 / len(drops) for j in range(len(qids))]
        judged = [c[q].get("adjusted_ratio") or c[q]["ratio"] for q in qids]  # its interval's
        ax.errorbar(xs, judged,
                    yerr=[[r - c[q]["ci_low"] for r, q in zip(judged, qids, strict=True)],
                          [c[q]["ci_high"] - r for r, q in zip(judged, qids, strict=True)]],
                    fmt="o", ms=3, capsize=2, label=f"rep {d['rep']}")  # fmt: skip
    ax.axhline(1.10, ls="--", color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(qids)), qids)
    ax.set_ylabel("median ratio without GiST / baseline (95% CI)")
    ax.set_title(f"GiST index on the geometry dropped ({args.features:,} features)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "gist_drop.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
