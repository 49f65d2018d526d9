"""Does the gate give the same verdict each time, busy machine or not? (BENCHMARKS.md,
"Verdict agreement")

A rollout of two test-only steps, repeated: ``noop`` changes nothing (the right verdict:
GO, every query "no significant change") and ``slower2x`` makes one RPC do its work
twice per call (its own query once more, as an InitPlan), a real 2x slowdown that scales
with the machine's speed as the query does (the right verdict: that query slower, NO-GO;
a fixed ``pg_sleep`` is not 2x once a busy machine has made the query itself slower).
The RPC is the one with the largest median, so its slowdown clears the 2 ms floor. Each
repetition runs the gate exactly as ``stage4 upgrade`` does, with its defaults, from a stored baseline measured once at the start (so every repetition takes
the same path as a user's rollout hours after ``stage4 baseline``), then rolls back to
``schema``. Half the repetitions run with a CPU hog (``python3 -c 'while True: pass'``)
on one of the machine's cores for the whole rollout.

    .venv/bin/python -m benchmarks.verdict_agreement --features 20000 --reps 10

``--reps`` repetitions with the hog and as many without. Prints the agreement per step and
writes benchmarks/results/verdict_agreement_<features>.json (every comparison, with its
margin, load average and the ids of the runs compared).

    .venv/bin/python -m benchmarks.verdict_agreement --features 20000 --replay

replays other decision rules (raw medians with the former squared widening, with none,
with a capped one) on the very runs of that file, read back from the benchmark cluster,
beside the gate's rule: how the rule was chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._cluster import RESULTS, seeded_cluster
from benchmarks._hogs import cpu_hogs

RPCS = {"Q4": "search", "Q8": "monthly_counts", "Q10": "tile"}
REAL_SCRIPTS = Path(__file__).resolve().parents[1] / "alembic"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=10, help="repetitions per condition (hog, none)")
    ap.add_argument("--replay", action="store_true", help="replay rules on the saved runs")
    args = ap.parse_args()
    if args.replay:
        replay(args.features)
        return
    # a kill ends the script through cpu_hogs' `finally`, so the hog never outlives it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    url = seeded_cluster(args.features, home=f"/tmp/stage4-agree-{args.features}")
    from stage4.errors import GateError
    from stage4.measure import bench, store
    from stage4.plumbing import migrations
    from stage4.plumbing.db import connect
    from stage4.rollout import gate

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"stage4-agree-{args.features}-"))
    first = migrations.chain()[0]
    if migrations.current(url) != first:  # an interrupted earlier run
        _install(work, "Q4")
        migrations.downgrade(url, first)
    stored = bench.run(url, label="STORED_BASELINE")
    with connect(url, autocommit=True) as conn:
        store.set_baseline(conn, stored.run_id, force=True)
    medians = {q: sorted(stored.samples[q])[len(stored.samples[q]) // 2] for q in RPCS}
    victim = max(medians, key=medians.get)
    _install(work, victim)
    print(f"{args.features:,} features; injected: {victim} ({RPCS[victim]} RPC, median "
          f"{medians[victim]:.2f} ms) does its work twice; reports in {work}", flush=True)  # fmt: skip

    reps = []
    for i in range(2 * args.reps):
        hog = i % 2 == 0
        with cpu_hogs(1 if hog else 0):
            load = os.getloadavg()
            opts = gate.GateOptions(backup=False, reports_dir=work / "reports")
            try:
                rollout = gate.upgrade(url, "slower2x", opts)
            except GateError:
                rollout = None
        folder = sorted((work / "reports").iterdir())[-1]
        saved = json.loads((folder / "rollout.json").read_text())
        rep = _judge_rep(saved, victim, hog, load)
        rep["outcome"] = saved["outcome"] if rollout is None else rollout.outcome
        reps.append(rep)
        print(f"rep {i + 1:2d} hog={'on ' if rep['hog'] else 'off'} noop: {rep['noop']['verdict']:5s}"
              f" {','.join(rep['noop']['flagged']) or 'none flagged':14s} slower2x: "
              f"{rep['slower2x']['verdict']:5s} {victim} x{rep['slower2x']['ratio']:.2f} "
              f"({rep['slower2x']['margin_text']}) load {load[0]:.1f}", flush=True)  # fmt: skip
        if migrations.current(url) != first:
            migrations.downgrade(url, first)

    summary = _summary(reps)
    for line in summary["lines"]:
        print(line)
    result = {
        "command": ".venv/bin/python -m benchmarks.verdict_agreement "
                   f"--features {args.features} --reps {args.reps}",
        "features": args.features, "victim": victim, "victim_median_ms": medians[victim],
        "stored_baseline_run_id": stored.run_id, "summary": summary,
        "wall_seconds": time.perf_counter() - t0, "repetitions": reps,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"verdict_agreement_{args.features}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


def _install(work: Path, victim: str) -> None:
    """A copy of alembic/ holding `schema`, then `noop` and `slower2x` (test-only)."""
    from stage4.plumbing import migrations

    dst = work / f"alembic-{victim}-{len(list(work.glob('alembic-*')))}"
    shutil.copytree(REAL_SCRIPTS, dst,
                    ignore=shutil.ignore_patterns("__pycache__", "opt*"))  # fmt: skip
    fn = RPCS[victim]
    slow = (f"s = settings(); body = functions.{fn}(s).body; op.execute(functions.{fn}(s, "
            "source=body.replace('WHERE ', f'WHERE (SELECT count(*) FROM ({body}) AS twice) >= 0 "
            "AND ', 1)).create_sql())")  # fmt: skip
    # the downgrade restores every RPC: whichever one an interrupted run had slowed
    as_is = "[op.execute(f.create_sql()) for f in functions.baseline(settings())]"
    first = migrations.chain()[0]  # the copy keeps the real chain's first revision
    for name, down, up, back in (("noop", first, 'op.execute("SELECT 1")', 'op.execute("SELECT 1")'),
                                 ("slower2x", "noop", slow, as_is)):  # fmt: skip
        (dst / "versions" / f"{name}.py").write_text(
            f'"""Test-only: {name}."""\nfrom alembic import op\n\n'
            "from stage4.config import settings\nfrom stage4.ddl import functions\n\n"
            f'revision = "{name}"\ndown_revision = "{down}"\n\n\n'
            f"def upgrade() -> None:\n    {up}\n\n\ndef downgrade() -> None:\n    {back}\n"
        )
    migrations._script_location = lambda: dst
    migrations.chain.cache_clear()


def _judge_rep(saved: dict, victim: str, hog: bool, load) -> dict:
    from stage4.measure import report

    steps = {st["revision"]: st for st in saved["steps"]}
    noop, slow = steps.get("noop", {}), steps.get("slower2x", {})
    flagged = sorted({q for src in ("comparisons", "vs_previous")
                      for q, c in noop.get(src, {}).items() if c["verdict"] != "no significant change"})  # fmt: skip
    v = slow.get("comparisons", {}).get(victim, {})
    slower = [src for src in ("comparisons", "vs_previous")
              if slow.get(src, {}).get(victim, {}).get("verdict") == "slower"]  # fmt: skip
    slow_flagged = sorted(
        q for q, c in slow.get("comparisons", {}).items() if c["verdict"] == "slower"
    )
    return {
        "hog": hog, "load_average": load,
        "runs": {"baseline": saved.get("baseline_run_id"),
                 **{name: st.get("run_id") for name, st in steps.items()}},
        "noop": {"verdict": "GO" if noop.get("verdict") == "GO" else noop.get("verdict", "none"),
                 "flagged": flagged, "margin_text": report.margins(noop),
                 "comparisons": noop.get("comparisons", {})},
        "slower2x": {"verdict": "NO-GO" if slow.get("verdict") == "NO-GO" else slow.get("verdict", "none"),
                     # named slower vs the baseline or vs the step before (the NO-GO
                     # reasons list both), by the step's verdict
                     "victim_slower": bool(slower), "victim_slower_in": slower,
                     "flagged": slow_flagged,  # the ratio judged, whose interval "ci" is
                     "ratio": v.get("adjusted_ratio") or v.get("ratio", float("nan")),
                     "ci": [v.get("ci_low"), v.get("ci_high")], "margin_text": report.margins(slow),
                     "comparisons": slow.get("comparisons", {}),
                     "vs_previous": slow.get("vs_previous", {})},
    }  # fmt: skip


def _summary(reps: list[dict]) -> dict:
    out: dict = {"lines": []}
    for name, sel in (("hog", [r for r in reps if r["hog"]]),
                      ("no hog", [r for r in reps if not r["hog"]])):  # fmt: skip
        n = len(sel)
        noop_go = sum(r["noop"]["verdict"] == "GO" for r in sel)
        noop_quiet = sum(not r["noop"]["flagged"] for r in sel)
        slow_caught = sum(r["slower2x"]["victim_slower"] and r["slower2x"]["verdict"] == "NO-GO"
                          for r in sel)  # fmt: skip
        out[name] = {"runs": n, "noop_go": noop_go, "noop_no_change": noop_quiet,
                     "slower2x_flagged": slow_caught}  # fmt: skip
        out["lines"] += [
            f"{name:6s}: noop GO {noop_go}/{n} (every query 'no significant change' {noop_quiet}/{n}); "
            f"slower2x NO-GO with the injected query slower {slow_caught}/{n}"
        ]  # fmt: skip
    return out


def replay(features: int) -> None:
    """Each rule on the runs of the saved result: no-op GO and 2x caught, hog or not."""
    import math

    from stage4.measure import stats, store
    from stage4.plumbing.db import connect

    saved = json.loads((RESULTS / f"verdict_agreement_{features}.json").read_text())
    url = seeded_cluster(features, home=f"/tmp/stage4-agree-{features}")
    victim = saved["victim"]

    def raw(sensitivity: float, cap: float):
        def rule(a, b):
            d = stats.control_drift(a.control, b.control)
            widened = min(cap, math.exp(sensitivity * abs(math.log(d))))
            return stats.compare_runs(a.samples, b.samples, drift=widened, min_delta_ms=2.0)

        return rule

    rules = {
        "raw medians, margin widened by the drift squared (the former rule)": raw(2.0, 1e9),
        "raw medians, no widening": raw(0.0, 1.0),
        "raw medians, widened by the drift, capped at x1.5": raw(1.0, 1.5),
        "each round adjusted by its control, sqrt(drift), capped (the gate's)": None,
    }
    runs = {}
    with connect(url, autocommit=True) as conn:
        for rep in saved["repetitions"]:
            for run_id in rep["runs"].values():
                if run_id and run_id not in runs:
                    runs[run_id] = store.load_run(conn, run_id)
    cap = stats.MAX_WIDENING
    print("| rule | hog: no-op GO | hog: 2x slower | no hog: no-op GO | no hog: 2x slower |")
    print("|---|---|---|---|---|")
    for name, rule in rules.items():
        stats.MAX_WIDENING = cap if rule is None else 1e9  # raw() applies its own cap
        judge = rule or (lambda a, b: stats.compare_bench(a, b, min_delta_ms=2.0))
        cells = []
        for hog in (True, False):
            ids = [r["runs"] for r in saved["repetitions"] if r["hog"] == hog]
            noop = [i for i in ids if i.get("noop")]
            go = sum(all(c.verdict != stats.SLOWER for c in judge(runs[i["baseline"]], runs[i["noop"]]).values())
                     for i in noop)  # fmt: skip
            pairs = [i for i in ids if i.get("slower2x")]
            caught = sum(stats.SLOWER in (judge(runs[i["baseline"]], runs[i["slower2x"]])[victim].verdict,
                                          judge(runs[i["noop"]], runs[i["slower2x"]])[victim].verdict)
                         for i in pairs)  # fmt: skip
            cells += [f"{go}/{len(noop)}", f"{caught}/{len(pairs)}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    stats.MAX_WIDENING = cap


if __name__ == "__main__":
    main()
