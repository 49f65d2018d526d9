"""Does the decision rule stay quiet when nothing changed? (BENCHMARKS.md, "Noise check")

Same database, default bench settings: one baseline run (stored as the baseline), then
REPS more runs, each compared with the baseline exactly as the gate does
(stats.compare_bench with the gate's defaults + gate_verdict, fingerprints included). A
repetition passes when every query is "no significant change" and every fingerprint
equals the baseline's. Target: at least 19 of 20 repetitions pass. The pure statistical
rule (no millisecond floor) is recorded beside it.

    .venv/bin/python -m benchmarks.noise_check --features 100000 --reps 20

Writes benchmarks/results/noise_check.json and noise_check.png.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks._cluster import RESULTS, seeded_cluster
from stage4.rollout.gate import GateOptions

GATE_MIN_DELTA_MS = GateOptions().min_delta_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    url = seeded_cluster(args.features)
    from stage4.measure import bench, stats

    t0 = time.perf_counter()
    from stage4.measure import store
    from stage4.plumbing.db import connect

    base = bench.run(url, label="NOISE_BASE")
    with connect(url, autocommit=True) as conn:  # as the gate does: later runs use its control
        store.set_baseline(conn, base.run_id, force=True)
    reps = []
    for i in range(args.reps):
        run = bench.run(url, label=f"NOISE_{i + 1}")
        same = {q: run.fingerprints.get(q) == fp for q, fp in base.fingerprints.items()}
        comps = stats.compare_bench(base, run, min_delta_ms=GATE_MIN_DELTA_MS)
        decision = stats.gate_verdict(comps, same)
        flagged = [q for q, c in comps.items() if c.verdict != stats.NO_CHANGE]
        # the pure statistical rule (no 2 ms floor), recorded beside the gate's
        pure = stats.compare_bench(base, run)
        pure_flagged = [q for q, c in pure.items() if c.verdict != stats.NO_CHANGE]
        reps.append({"rep": i + 1, "run_id": run.run_id, "seconds": run.seconds,
                     "pass": not flagged and all(same.values()), "flagged": flagged,
                     "pass_pure_rule": not pure_flagged and all(same.values()),
                     "flagged_pure_rule": pure_flagged,
                     "widened": next(iter(comps.values())).widened,
                     "go": decision.go, "reasons": decision.reasons,
                     "load_average": run.environment.get("load_average_start"),
                     "control_ms": run.environment.get("control_ms"),
                     "ratios": {q: [c.judged_ratio, c.ci_low, c.ci_high] for q, c in comps.items()}})  # fmt: skip
        print(f"rep {i + 1:2d}: {'pass' if reps[-1]['pass'] else 'FLAGGED ' + ','.join(flagged)}"
              f"  ({run.seconds:.1f} s, load {run.environment.get('load_average_start')})",
              flush=True)  # fmt: skip
    passed = sum(r["pass"] for r in reps)
    passed_pure = sum(r["pass_pure_rule"] for r in reps)
    result = {
        "command": f".venv/bin/python -m benchmarks.noise_check --features {args.features} --reps {args.reps}",
        "features": args.features, "baseline_run_id": base.run_id,
        "baseline_seconds": base.seconds, "passed": passed, "reps": args.reps,
        "passed_pure_rule": passed_pure, "gate_min_delta_ms": GATE_MIN_DELTA_MS,
        "baseline_load_average": base.environment.get("load_average_start"),
        "baseline_control_ms": base.environment.get("control_ms"),
        "target": "at least 19 of 20 repetitions with every query 'no significant change'",
        "wall_seconds": time.perf_counter() - t0, "repetitions": reps,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "noise_check.json").write_text(json.dumps(result, indent=2))
    _figure(reps, RESULTS / "noise_check.png", passed, args)
    print(
        f"{passed}/{args.reps} repetitions: no significant change on every query "
        f"(gate defaults); {passed_pure}/{args.reps} with the pure rule (no ms floor)"
    )


def _figure(reps, path, passed, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qids = list(reps[0]["ratios"])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for j, q in enumerate(qids):
        for k, r in enumerate(reps):
            ratio, lo, hi = r["ratios"][q]
            x = j + (k - len(reps) / 2) * 0.8 / len(reps)
            ax.plot([x, x], [lo, hi], color="tab:red" if q in r["flagged"] else "tab:blue",
                    lw=1, alpha=0.7)  # fmt: skip
            ax.plot(x, ratio, ".", color="black", ms=2)
    ax.axhline(1.10, ls="--", color="grey", lw=0.8)
    ax.axhline(1 / 1.10, ls="--", color="grey", lw=0.8)
    ax.set_xticks(range(len(qids)), qids)
    ax.set_ylabel("median ratio run / baseline (95% CI)")
    ax.set_title(f"Same database, {args.reps} runs vs one baseline ({args.features:,} features): "
                 f"{passed}/{args.reps} all 'no significant change'")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
