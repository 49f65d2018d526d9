"""At scale, in one run: workload speedups, migration speed, availability, gate cost, CLI.

    .venv/bin/python -m benchmarks.scale --features 1000000

On a private embedded cluster (``STAGE4_HOME=/tmp/perf-pg-<N>``), seeded with
``stage4.seed`` (seed 42) at revision ``schema``:

1. default bench at ``schema`` (the baseline: GiST on geom, btree on date and category,
   the app's queries);
2. for each revision opt1..opt5: the physical reference of the upgrade (the bare work
   it does, in a transaction rolled back), the timed upgrade (``metrics`` dict: opt1
   fills writers_blocked_s / readers_blocked_s), the physical reference of its
   downgrade (rolled back), ANALYZE, a default bench;
3. gate cost at opt5: a default bench + ``stats.compare_runs`` against the baseline;
4. timed downgrades of every step back to ``schema`` (one under 0.1 s: three times,
   with its reference, medians compared);
5. ``stage4 --help`` and ``stage4 status`` start-up (median of 5 subprocess runs).

References (what a hand-written migration would have to do at least) are each
optimisation unit's own (``reference`` in ``stage4.optimisations``): opt1 both ways,
INSERT…SELECT of the rows into a bare copy + the same indexes; opt2..opt5 up, the bare
DDL / view builds they run (no checks, grants or Alembic), timed in a transaction then
rolled back; their downgrades, the same DROPs of same-sized copies, committed (a DROP
costs little until COMMIT: file unlink, eviction from shared_buffers, the commit record).

Writes ``benchmarks/results/scale_<N>.json`` and the "Performance at scale" section of
BENCHMARKS.md (per-query table, targets with measured figures and PASS/FAIL; a
per-query target passes when it holds by the median execution and by the mean).
``--render`` rebuilds that section from the stored JSON without running anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from stage4 import optimisations

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REVISIONS = optimisations.revisions()
SECTION = "## Performance at scale"
T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", flush=True)


def _progress(label: str):
    last = {"t": 0.0}

    def tick(phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last["t"] > 5 or done == total:
            last["t"] = now
            say(f"  {label}: {phase} {done}/{total}")

    return tick


# ------------------------------------------------------------------ references

SCRATCH = "scale_ref"  # the schema a reference builds its copies in


def time_reference(url: str, s, rev: str, direction: str) -> float:
    """Seconds the bare work of ``rev``'s step takes (its unit's ``reference``): timed in a
    transaction then rolled back, or committed on copies built untimed beforehand."""
    from stage4.db import connect

    with connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCRATCH} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCRATCH}")
        ref = optimisations.by_revision(rev).reference(conn, s, direction, SCRATCH)
        for stmt in ref.setup:
            conn.execute(stmt)
        with conn.transaction(force_rollback=not ref.committed):
            t0 = time.perf_counter()
            for stmt in ref.statements:
                cur = conn.execute(stmt)
                if cur.description is not None:
                    cur.fetchall()
            seconds = time.perf_counter() - t0
        if ref.committed:  # the COMMIT is part of the work (file unlink, buffer eviction)
            seconds = time.perf_counter() - t0
        conn.execute(f"DROP SCHEMA {SCRATCH} CASCADE")
    return seconds


def quiesce(url: str, limit_s: float = 300) -> None:
    """Wait (untimed) until no other session is running a statement in the database.

    From opt5 on, pg_cron refreshes a view every 5 minutes (at 1M features the tile
    view's refresh takes tens of seconds); a step timed meanwhile would measure its wait for that lock (or fail on the
    lock timeout, as `stage4` does on purpose), not its own work."""
    from stage4.db import connect

    deadline = time.monotonic() + limit_s
    with connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            busy = conn.execute(
                "SELECT pid, coalesce(nullif(application_name, ''), backend_type) FROM "
                "pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
            if not busy:
                return
            say(f"waiting for {', '.join(f'pid {p} ({who})' for p, who in busy)} to finish")
            time.sleep(2)


# ------------------------------------------------------------------ bench summaries


def summary(run) -> dict:
    return pooled([run])


def pooled(runs: list) -> dict:
    """Per-query median and mean over the executions of one or more runs of one database,
    and the median of each parameter set (a bench replays its ``sets`` in every round, so
    execution k is set k % sets): a query whose sets differ tenfold has a median that
    falls between them, so the per-set figures say which sets gained what."""
    qids = list(runs[0].executions)
    execs = {q: [x for r in runs for x in r.executions[q]] for q in qids}
    means = {q: statistics.fmean(v) for q, v in execs.items()}
    sets = runs[0].sets
    return {
        "median_ms": {q: statistics.median(v) for q, v in execs.items()},
        "mean_ms": means,
        "set_median_ms": {
            q: [
                statistics.median(x for r in runs for x in r.executions[q][j::sets])
                for j in range(sets)
            ]
            for q in qids
        },
        "overall_mean_ms": statistics.fmean(means.values()),
        "qps": statistics.fmean(r.qps for r in runs),
        "cache_hit": runs[0].cache_hit,
        "control_ms": statistics.median(x for r in runs for x in r.control),
        "variants": runs[0].variants,
        "fingerprints": runs[0].fingerprints,
        "fingerprints_stable": all(r.fingerprints == runs[0].fingerprints for r in runs),
        "seconds": statistics.fmean(r.seconds for r in runs),
        "load_average_start": runs[0].environment.get("load_average_start"),
        "runs": len(runs),
    }


# ------------------------------------------------------------------ same-window A/B


def clone_home(cluster, dst: Path) -> None:
    """Copy the (stopped) cluster's home to ``dst``: same data, its own port and socket dir.
    The clone keeps the database at ``schema`` for the same-window comparison."""
    import shutil

    from stage4.cluster import free_port

    cluster.stop()
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", str(cluster.home), str(dst)], check=True)
    conf = dst / "data" / "stage4.conf"
    lines = [f"port = {free_port()}" if ln.startswith("port =") else
             f"unix_socket_directories = '{dst / 'run'}'"
             if ln.startswith("unix_socket_directories") else ln
             for ln in conf.read_text().splitlines()]  # fmt: skip
    conf.write_text("\n".join(lines) + "\n")
    (dst / "data" / "postmaster.pid").unlink(missing_ok=True)
    cluster.start()


def ab_compare(url: str, ab_home: Path, result: dict, pairs: int) -> None:
    """Bench the schema clone (A) and the migrated database (B) in turn, A B A B …, and
    keep what each pair says: the machine's speed drifts by tens of per cent over
    minutes, so ratios of runs taken a quarter of an hour apart are not evidence."""
    from stage4 import bench, stats
    from stage4.cluster import Cluster

    clone = Cluster(home=ab_home)
    clone.start()
    ab_url = clone.url()
    try:
        say("A/B: warming the clone's caches (short bench, not kept)")
        bench.run(ab_url, label="WARM", iterations=2, duration=1, save=False)
        runs_a, runs_b, pair_rows = [], [], []
        for i in range(pairs):
            say(f"A/B pair {i + 1}/{pairs}: schema clone")
            a = bench.run(ab_url, label=f"AB_SCHEMA_{i + 1}", save=False,
                          progress=_progress(f"A{i + 1}"))  # fmt: skip
            say(f"A/B pair {i + 1}/{pairs}: migrated database")
            b = bench.run(url, label=f"AB_OPT5_{i + 1}", save=False,
                          progress=_progress(f"B{i + 1}"))  # fmt: skip
            runs_a.append(a)
            runs_b.append(b)
            cmp = stats.compare_bench(a, b)
            pair_rows.append({"verdicts": {q: c.verdict for q, c in cmp.items()},
                              "ratios": {q: c.ratio for q, c in cmp.items()},
                              "widened": next(iter(cmp.values())).widened,
                              "control_ms": [statistics.median(a.control),
                                             statistics.median(b.control)]})  # fmt: skip
            say(f"pair {i + 1}: mean {statistics.fmean(statistics.fmean(v) for v in a.executions.values()):.1f}"
                f" -> {statistics.fmean(statistics.fmean(v) for v in b.executions.values()):.1f} ms")  # fmt: skip
        result["ab"] = {"schema": pooled(runs_a), "opt5": pooled(runs_b), "pairs": pair_rows,
                        "order": "A B " * pairs}  # fmt: skip
    finally:
        clone.stop()


def round_trip_ms(url: str, n: int = 200) -> float:
    """Median ms of ``SELECT 1`` on one open connection: the floor under every statement a
    step sends. opt4's downgrade sends 8 (pool ping, Alembic's version-table check,
    BEGIN, version read, its two statements, version update, COMMIT; server log with
    log_statement=all), its reference 4; the rest of its gap is Alembic's Python."""
    from benchmarks._timing import median_ms
    from stage4.db import connect

    with connect(url, autocommit=True) as conn:
        return median_ms(conn, "SELECT 1", n=n)


def cli_startup(env: dict) -> dict[str, float]:
    exe = str(Path(sys.executable).with_name("stage4"))
    out = {}
    for name, args in (("--help", ["--help"]), ("status", ["status"])):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([exe, *args], env=env, capture_output=True, timeout=60)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


# ------------------------------------------------------------------ targets


def targets(result: dict) -> list[tuple[str, str, bool | None]]:
    """PASS/FAIL per target; the workload ones from the same-window A/B when run."""
    ab = result.get("ab")
    base = ab["schema"] if ab else result["bench"]["schema"]
    last = ab["opt5"] if ab else result["bench"].get("opt5")
    rows: list[tuple[str, str, bool | None]] = []
    if last:
        # a per-query target passes only when it holds by both statistics
        sp, spm = speedups(base, last, "median_ms"), speedups(base, last, "mean_ms")
        mean_ratio = base["overall_mean_ms"] / last["overall_mean_ms"]
        geo_med, geo_mean = geomean(sp), geomean(spm)
        worst, worstm = min(sp, key=sp.get), min(spm, key=spm.get)
        per_set = set_ratios(base, last, "Q5")
        qps = last["qps"] / base["qps"]
        rows += [
            ("mean latency Q1–Q10 ≥ 3× lower", f"×{mean_ratio:.2f} "
             f"({base['overall_mean_ms']:.2f} → {last['overall_mean_ms']:.2f} ms)", mean_ratio >= 3),
            ("geometric mean of per-query speedups ≥ 2×", f"×{geo_med:.2f} by median, "
             f"×{geo_mean:.2f} by mean", min(geo_med, geo_mean) >= 2),
            ("no query slower than baseline", f"worst {worst} ×{sp[worst]:.2f} by median, "
             f"{worstm} ×{spm[worstm]:.2f} by mean", min(sp[worst], spm[worstm]) >= 1),
            ("Q5 ≥ 3× faster", f"×{sp['Q5']:.2f} by median, ×{spm['Q5']:.2f} by mean"
             + (f"; per set {per_set}" if per_set else ""), min(sp["Q5"], spm["Q5"]) >= 3),
            ("QPS at 4 clients ≥ 2×", f"×{qps:.2f} ({base['qps']:.0f} → {last['qps']:.0f})",
             qps >= 2),
            ("fingerprints equal to baseline", ", ".join(
                q for q in base["fingerprints"] if base["fingerprints"][q] != last["fingerprints"][q]
            ) or "all equal", base["fingerprints"] == last["fingerprints"]),
        ]  # fmt: skip
    for step, m in result["migrations"].items():
        ref = m.get("reference_s")
        if ref is not None and m.get("seconds") is not None:
            ratio = m["seconds"] / ref if ref > 0 else math.inf
            rows.append((f"{step} ≤ 2× reference", f"{_s(m['seconds'])} s vs {_s(ref)} s "
                         f"(×{ratio:.2f})", ratio <= 2))  # fmt: skip
        if step.endswith("down") and m.get("seconds") is not None:
            rows.append((f"{step} under 60 s", f"{_s(m['seconds'])} s", m["seconds"] < 60))
    opt1 = result["migrations"].get("opt1 up", {}).get("metrics", {})
    if opt1:
        r, w = opt1.get("readers_blocked_s"), opt1.get("writers_blocked_s")
        rows.append(("opt1: readers blocked ≤ 1 s", f"{r:.3f} s", r <= 1))
        rows.append(("opt1: longest write block < 5 s", f"{w:.3f} s", w < 5))
    opt2 = result["migrations"].get("opt2 up")
    if opt2:
        rows.append(("opt2: readers/writers blocked (ACCESS EXCLUSIVE, whole step)",
                     f"≤ {opt2['seconds']:.2f} s", None))  # fmt: skip
    gate = result.get("gate")
    if gate:
        rows.append(("one full gate (bench + compare) < 90 s", f"{gate['seconds']:.1f} s "
                     f"(bench {gate['bench_s']:.1f} + compare {gate['compare_s']:.2f})",
                     gate["seconds"] < 90))  # fmt: skip
    for name, sec in result.get("cli", {}).items():
        rows.append((f"`stage4 {name}` < 1 s", f"{sec:.2f} s", sec < 1))
    return rows


def speedups(a: dict, b: dict, stat: str) -> dict[str, float]:
    """Per-query A / B by ``stat`` (``median_ms``: the median execution; ``mean_ms``: the
    mean, the latency the headline target averages)."""
    return {q: a[stat][q] / b[stat][q] for q in a[stat]}


def geomean(ratios: dict[str, float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in ratios.values()))


def set_ratios(a: dict, b: dict, q: str) -> str:
    """``×… ×…``: each parameter set's median A / median B ("" for runs that lack them)."""
    if "set_median_ms" not in a or "set_median_ms" not in b:
        return ""
    pairs = zip(a["set_median_ms"][q], b["set_median_ms"][q], strict=True)
    return " ".join(f"×{x / y:.2f}" for x, y in pairs)


def _s(seconds: float) -> str:
    """Seconds, with the milliseconds a light step is made of."""
    return f"{seconds:.2f}" if seconds >= 1 else f"{seconds:.3f}"


def markdown(result: dict, command: str) -> str:
    n = result["features"]
    benches = result["bench"]
    steps = ["schema", *[r for r in REVISIONS if r in benches]]
    last = benches.get("opt5")
    # Results measured when the bench answered a query through a rewrite name it per query;
    # the bench now measures the app's SQL only, and the column would read "base" throughout.
    shown = bool(last) and any(v != "base" for v in last.get("variants", {}).values())

    def variant(run: dict | None, q: str) -> str:
        return f" {run['variants'][q] if run else ''} |" if shown else ""

    extra = " |" if shown else ""
    lines = [
        SECTION,
        "",
        f"{n:,} features, one run of `benchmarks.scale` ({result['finished_at']}, "
        f"load average at start {result['load_average_start'][0]:.1f}):",
        "",
        "```bash",
        command,
        "```",
        "",
        "Median ms per execution (default bench: 20 rounds × 4 parameter sets), "
        "speedup = schema / opt5:",
        "",
        "| query | " + " | ".join(steps) + " | speedup |" + (" opt5 variant |" if shown else ""),
        "|---|" + "---|" * (len(steps) + 1 + shown),
    ]
    for q in benches["schema"]["median_ms"]:
        cells = [f"{benches[s]['median_ms'][q]:.2f}" for s in steps]
        sp = f"×{benches['schema']['median_ms'][q] / last['median_ms'][q]:.2f}" if last else ""
        lines.append(f"| {q} | " + " | ".join(cells) + f" | {sp} |" + variant(last, q))
    lines.append("| mean | " + " | ".join(
        f"{benches[s]['overall_mean_ms']:.2f}" for s in steps) + " | |" + extra)  # fmt: skip
    lines.append("| QPS (4 clients) | " + " | ".join(
        f"{benches[s]['qps']:.0f}" for s in steps) + " | |" + extra)  # fmt: skip
    lines.append("| control query (ms) | " + " | ".join(
        f"{benches[s].get('control_ms', float('nan')):.2f}" for s in steps) + " | |" + extra)  # fmt: skip
    lines += ["", "Each column above is a bench taken in turn over ~15 minutes; the control "
              "row shows how much the machine's own speed moved meanwhile."]  # fmt: skip
    ab = result.get("ab")
    if ab:
        a, b = ab["schema"], ab["opt5"]
        lines += ["", f"**Same-window A/B** (the targets below): a copy of the cluster kept at "
                  f"`schema` (A) and the migrated database (B), benched in turn "
                  f"{ab['order'].strip()}; ms per execution over the {a['runs']} runs of "
                  "each, by median and by mean, and the speedup of each parameter set's "
                  "median:", "",
                  "| query | median A | median B | speedup | mean A | mean B | speedup "
                  "| per set | verdict per pair |" + (" opt5 variant |" if shown else ""),
                  "|---|---|---|---|---|---|---|---|---|" + ("---|" if shown else "")]  # fmt: skip
        for q in a["median_ms"]:
            verdicts = " / ".join(p["verdicts"][q] for p in ab["pairs"])
            lines.append(f"| {q} | {a['median_ms'][q]:.2f} | {b['median_ms'][q]:.2f} | "
                         f"×{a['median_ms'][q] / b['median_ms'][q]:.2f} | "
                         f"{a['mean_ms'][q]:.2f} | {b['mean_ms'][q]:.2f} | "
                         f"×{a['mean_ms'][q] / b['mean_ms'][q]:.2f} | "
                         f"{set_ratios(a, b, q)} | {verdicts} |" + variant(b, q))  # fmt: skip
        lines.append(f"| mean | | | | {a['overall_mean_ms']:.2f} | {b['overall_mean_ms']:.2f} "
                     f"| ×{a['overall_mean_ms'] / b['overall_mean_ms']:.2f} | | |" + extra)  # fmt: skip
        lines.append(f"| QPS (4 clients) | {a['qps']:.0f} | {b['qps']:.0f} | "
                     f"×{b['qps'] / a['qps']:.2f} | | | | | |" + extra)  # fmt: skip
        lines.append(f"| control query (ms) | {a['control_ms']:.2f} | {b['control_ms']:.2f} "
                     "| | | | | | |" + extra)  # fmt: skip
    lines += ["", "| migration step | seconds | physical reference (s) |", "|---|---|---|"]
    for step, m in result["migrations"].items():
        ref = m.get("reference_s")
        lines.append(f"| {step} | {_s(m.get('seconds', float('nan')))} | "
                     f"{'' if ref is None else _s(ref)} |")  # fmt: skip
    repeated = {k: m for k, m in result["migrations"].items() if "samples_s" in m}
    if repeated:
        lines += ["", f"Steps under {SHORT_S} s are timed {REPEATS} times with their reference "
                  "(medians above): " + "; ".join(
                      f"{k} " + " ".join(_s(x) for x in m["samples_s"]) + " s, reference "
                      + " ".join(_s(x) for x in m["reference_samples_s"]) + " s"
                      for k, m in repeated.items()) + "."]  # fmt: skip
    if "round_trip_ms" in result:
        lines += ["", f"One round trip to the server (median `SELECT 1`): "
                  f"{result['round_trip_ms']:.3f} ms; opt4's downgrade sends 8, its reference 4."]  # fmt: skip
    lines += ["", "| target | measured | result |", "|---|---|---|"]
    for name, figure, ok in targets(result):
        lines.append(f"| {name} | {figure} | {'—' if ok is None else 'PASS' if ok else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def write_markdown(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    if SECTION in doc:
        head, rest = doc.split(SECTION, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        doc = head + text + ("\n" + tail if tail else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=1_000_000)
    ap.add_argument("--home", default=None, help="STAGE4_HOME (default /tmp/perf-pg-<N>)")
    ap.add_argument("--no-markdown", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--until", choices=REVISIONS, help="stop after benchmarking this revision")
    ap.add_argument("--ab-pairs", type=int, default=2,
                    help="A/B pairs (schema clone, opt5) benched in turn at the end (0: none)")  # fmt: skip
    ap.add_argument("--resume", action="store_true",
                    help="continue a run stopped by --until (reads scale_<N>.json)")  # fmt: skip
    ap.add_argument("--render", action="store_true",
                    help="rewrite BENCHMARKS.md's section from scale_<N>.json; run nothing")  # fmt: skip
    args = ap.parse_args()
    n = args.features
    if args.render:
        result = json.loads((RESULTS / f"scale_{n}.json").read_text())
        write_markdown(markdown(result, command(n, result["home"])))
        return
    os.environ["STAGE4_HOME"] = args.home or f"/tmp/perf-pg-{n}"
    from stage4 import bench, migrations
    from stage4.cluster import Cluster
    from stage4.config import settings
    from stage4.db import connect

    s = settings()
    cluster = Cluster.from_settings(s)
    cluster.ensure_started()
    url = cluster.url()
    result: dict = {"features": n, "home": os.environ["STAGE4_HOME"],
                    "load_average_start": os.getloadavg(), "bench": {}, "migrations": {}}  # fmt: skip
    say(f"cluster {os.environ['STAGE4_HOME']}, {n:,} features")
    rev = migrations.current(url)
    if args.resume:
        result = json.loads((RESULTS / f"scale_{n}.json").read_text())
        say(f"resuming at {rev}: benches done {list(result['bench'])}")
        _forward(url, s, result, REVISIONS[REVISIONS.index(rev) + 1 :], args)
        _finish(url, s, result, n, args)
        return
    if rev not in (None, "schema"):
        say(f"database at {rev}: downgrading to schema")
        migrations.downgrade(url, "schema")
    if rev is None:
        migrations.upgrade(url, "schema")
    from benchmarks._cluster import reseed

    say("seeding (when the table does not hold exactly that many rows)")
    seeded = reseed(url, s, n)
    if seeded is not None:
        result["seed_s"] = seeded
        say(f"seeded in {seeded:.1f} s")
    with connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    if args.ab_pairs:
        ab_home = Path(os.environ["STAGE4_HOME"] + "-ab")
        say(f"cloning the cluster at schema to {ab_home} (for the same-window A/B)")
        clone_home(cluster, ab_home)
        url = cluster.url()  # the restart may have moved it to another free port
        result["ab_home"] = str(ab_home)

    result["round_trip_ms"] = round_trip_ms(url)
    say(f"round trip (SELECT 1): {result['round_trip_ms']:.3f} ms")
    say("bench at schema")
    base = bench.run(url, label="SCHEMA", progress=_progress("bench schema"), save=False)
    result["bench"]["schema"] = summary(base)
    # Integer microseconds: exact enough, and no float noise in the JSON.
    result["baseline_samples_us"] = {q: _us(v) for q, v in base.samples.items()}
    result["baseline_control_us"] = _us(base.control)
    say(f"schema: mean {result['bench']['schema']['overall_mean_ms']:.2f} ms, {base.qps:.0f} QPS")
    _save(result, n)
    _forward(url, s, result, REVISIONS, args)
    _finish(url, s, result, n, args)


def _forward(url, s, result: dict, revisions: list[str], args) -> None:
    from types import SimpleNamespace

    from stage4 import bench, migrations, stats
    from stage4.db import connect
    from stage4.gate import GateOptions

    n = result["features"]
    with migrations.session(url):  # as `stage4 upgrade`: one connection for the steps
        for rev in revisions:
            say(f"{rev}: physical reference of the upgrade")
            ref_up = time_reference(url, s, rev, "up")
            metrics: dict = {}
            say(f"{rev}: upgrade (reference {ref_up:.2f} s)")
            quiesce(url)
            up, settled = migrations.timed(migrations.upgrade, url, rev, metrics=metrics,
                                           progress=_progress(f"upgrade {rev}"))  # fmt: skip
            say(f"{rev}: upgraded in {up:.2f} s {metrics or ''}, then VACUUM (ANALYZE) {settled}")
            ref_down = time_reference(url, s, rev, "down")
            result["migrations"][f"{rev} up"] = {"seconds": up, "reference_s": ref_up,
                                                 "metrics": metrics, "settled_s": settled}  # fmt: skip
            result["migrations"][f"{rev} down"] = {"reference_s": ref_down}
            with connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE")
            say(f"bench at {rev}")
            t0 = time.perf_counter()
            run = bench.run(url, label=rev, progress=_progress(f"bench {rev}"), save=False)
            bench_s = time.perf_counter() - t0
            result["bench"][rev] = summary(run)
            say(f"{rev}: mean {result['bench'][rev]['overall_mean_ms']:.2f} ms, {run.qps:.0f} QPS, "
                f"rewrites available {sorted(run.environment['available_rewrites'])}")  # fmt: skip
            if rev == REVISIONS[-1]:
                t0 = time.perf_counter()
                stored = SimpleNamespace(
                    samples={q: _ms(v) for q, v in result["baseline_samples_us"].items()},
                    control=_ms(result["baseline_control_us"]),
                )
                cmp = stats.compare_bench(stored, run, min_delta_ms=GateOptions().min_delta_ms)
                compare_s = time.perf_counter() - t0
                result["gate"] = {"seconds": bench_s + compare_s, "bench_s": bench_s,
                                  "compare_s": compare_s,
                                  "verdicts": {q: c.verdict for q, c in cmp.items()}}  # fmt: skip
                if args.ab_pairs and result.get("ab_home"):
                    ab_compare(url, Path(result["ab_home"]), result, args.ab_pairs)
            _save(result, n)
            if rev == args.until:
                say(f"stopped after {rev} (--until); continue with --resume")
                raise SystemExit(0)


def command(n: int, home: str | None) -> str:
    """The command line that reproduces a run (a fresh home seeds a fresh table)."""
    cmd = f".venv/bin/python -m benchmarks.scale --features {n}"
    if home and home != f"/tmp/perf-pg-{n}":
        cmd += f" --home {home}"
    return cmd


def _finish(url, s, result: dict, n: int, args) -> None:
    from stage4 import migrations

    with migrations.session(url):  # as `stage4 downgrade --to schema`: one connection
        for rev in reversed(REVISIONS):
            say(f"{rev}: downgrade")
            quiesce(url)
            down, settled = migrations.timed(migrations.downgrade, url, migrations.previous(rev),
                                             progress=_progress(f"down {rev}"))  # fmt: skip
            m = result["migrations"][f"{rev} down"]
            m.update(seconds=down, settled_s=settled)
            if down < SHORT_S:
                _time_again(url, s, rev, m)
            say(f"{rev}: downgraded in {m['seconds']:.3f} s (reference {m['reference_s']:.3f} s)")
            _save(result, n)

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    result["cli"] = cli_startup(env)
    say(f"CLI start-up {result['cli']}")
    result["finished_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    _save(result, n)
    text = markdown(result, command(n, args.home))
    print(text)
    if not args.no_markdown:
        write_markdown(text)
    say("done")


# A step this short is timed three times (its reference too) and the medians compared:
# one stall of a virtual machine lasting a few tens of ms would double it.
SHORT_S = 0.1
REPEATS = 3


def _time_again(url, s, rev: str, m: dict) -> None:
    """Upgrade ``rev`` again (untimed) and time its downgrade and reference until there are
    REPEATS of each; ``seconds`` and ``reference_s`` become the medians, samples kept."""
    from stage4 import migrations

    steps, refs = [m["seconds"]], [m["reference_s"]]
    while len(steps) < REPEATS:
        migrations.upgrade(url, rev)
        refs.append(time_reference(url, s, rev, "down"))
        quiesce(url)
        steps.append(migrations.timed(migrations.downgrade, url, migrations.previous(rev))[0])
    m.update(seconds=statistics.median(steps), reference_s=statistics.median(refs),
             samples_s=steps, reference_samples_s=refs)  # fmt: skip


def _us(ms: list[float]) -> list[int]:
    return [round(x * 1000) for x in ms]


def _ms(us: list[int]) -> list[float]:
    return [x / 1000 for x in us]


def _save(result: dict, n: int) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scale_{n}.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
