"""At scale, in one run: workload speedups, migration speed, availability, gate cost, CLI.

    .venv/bin/python -m benchmarks.scale --features 1000000

On a private embedded cluster (``STAGE4_HOME=/tmp/perf-pg-<N>``), seeded with
``stage4.plumbing.seed`` (seed 42) at revision ``schema``:

1. default bench at ``schema`` (the baseline: GiST on geom, btree on date and category,
   the app's queries);
2. for each revision opt1..opt5: the physical reference of the upgrade (the bare work
   it does, in a transaction rolled back), the timed upgrade (``metrics`` dict: opt1
   fills writers_blocked_s / readers_blocked_s), the physical reference of its
   downgrade (rolled back), ANALYZE, a default bench, the canary freshness check;
3. gate cost at opt5: a default bench + ``stats.compare_runs`` against the baseline,
   then the same-window A/B (``ab_compare``) that the workload targets are judged on;
4. timed downgrades of every step back to ``schema`` (one under 0.1 s: three times,
   with its reference, medians compared);
5. ``stage4 --help`` and ``stage4 status`` start-up (median of 5 subprocess runs).

Every bench measures the app as it runs: Q1–Q10 and the workload files of ``--workload``
(default ``benchmarks/workload``: common reads of an app) with the same text at every
revision, RPCs re-pointed by the revisions, views read without a refresh first. The mean
and geometric mean targets are Q1–Q10's (all RPCs); an app read may not be slower than
×1.2 by more than 0.5 ms, a write ×1.5 by more than 1 ms, the user's own SQL (the files,
sent unchanged) ×2; a read
the canary check finds stale is labelled with its declared budget wherever its speedup
is shown; rewrites an app would have to adopt are listed as available, counted nowhere.

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
from stage4.measure.workload import TITLES
from stage4.plumbing import migrations
from stage4.queries import REST, is_write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REVISIONS = optimisations.revisions()
FIRST, LAST = migrations.chain()[0], REVISIONS[-1]  # the reference schema; the last step
REBUILDER = optimisations.rebuilder(REVISIONS)  # the step that rebuilds the table
SECTION = "## Performance at scale"
# Hand-written diagnosis kept across re-renders (the rest of the section is generated).
NOTES = "### Where a target is missed, and why"
# The user's own SQL, as workload files (`--workload`): sent unchanged at every revision,
# judged by their own target (none slower than ×2), outside the Q1–Q10 mean and geomean.
WORKLOAD = ROOT / "benchmarks" / "workload"
T0 = time.perf_counter()
_RESUMED_AT = 0.0  # wall time of the stored run that --resume continues


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
    from stage4.plumbing.db import connect

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
    from stage4.plumbing.db import connect

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


def fresh(url: str, s, applied: list[str]) -> dict:
    """The canary check of ``stage4.measure.freshness`` on the database as the app finds it (no
    refresh first): per query fresh or not, and the staleness budgets ``applied``
    revisions declare."""
    from stage4.measure import freshness, workload
    from stage4.plumbing.db import connect

    with connect(url, autocommit=True) as conn:
        checked = freshness.check(conn, s, workload.sample_anchors(conn, s))
    budgets = freshness.declared(applied) if applied else {}
    return {
        q: {"fresh": r.fresh, "declared": budgets.get(q)}
        | ({} if r.fresh else {"detail": r.detail})
        for q, r in checked.items()
    }


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
        "load_average_end": runs[-1].environment.get("load_average_end"),
        "runs": len(runs),
        "contract": runs[0].environment.get("contract", {}),
        "workload_files": runs[0].environment.get("workload_files", {}),
        "errors": runs[-1].environment.get("errors", {}),
        # "available if your app adopts it": measured beside the app's SQL, never counted
        "available_rewrites": runs[-1].environment.get("available_rewrites", {}),
    }


# ------------------------------------------------------------------ same-window A/B


def clone_home(cluster, dst: Path) -> None:
    """Copy the (stopped) cluster's home to ``dst``: same data, its own port and socket dir.
    The clone keeps the database at ``schema`` for the same-window comparison."""
    import shutil

    from stage4.plumbing.cluster import free_port

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


def ab_compare(
    url: str, ab_home: Path, result: dict, pairs: int, folder=None, qps_seconds: float = 20.0
) -> None:
    """Bench the schema clone (A) and the migrated database (B) in turn, A B A B …, and
    keep what each pair says: the machine's speed drifts by tens of per cent over
    minutes, so ratios of runs taken a quarter of an hour apart are not evidence.

    The throughput phase runs ``qps_seconds`` (the bench's default is 5 s): at 1M features
    one heavy Q9 call takes 2 s at schema, so in 5 s a few random picks of it decide QPS."""
    from stage4.measure import bench, stats
    from stage4.plumbing.cluster import Cluster

    clone = Cluster(home=ab_home)
    clone.start()
    ab_url = clone.url()
    try:
        say("A/B: warming the clone's caches (short bench, not kept)")
        bench.run(ab_url, label="WARM", iterations=2, duration=1, save=False, workload_dir=folder)
        runs_a, runs_b, pair_rows = [], [], []
        for i in range(pairs):
            say(f"A/B pair {i + 1}/{pairs}: schema clone")
            a = bench.run(ab_url, label=f"AB_SCHEMA_{i + 1}", save=False, duration=qps_seconds,
                          progress=_progress(f"A{i + 1}"), workload_dir=folder)  # fmt: skip
            say(f"A/B pair {i + 1}/{pairs}: migrated database")
            b = bench.run(url, label=f"AB_OPT5_{i + 1}", save=False, duration=qps_seconds,
                          progress=_progress(f"B{i + 1}"), workload_dir=folder)  # fmt: skip
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
        result["ab"] = {FIRST: pooled(runs_a), LAST: pooled(runs_b), "pairs": pair_rows,
                        "order": "A B " * pairs, "qps_seconds": qps_seconds}  # fmt: skip
    finally:
        clone.stop()


def round_trip_ms(url: str, n: int = 200) -> float:
    """Median ms of ``SELECT 1`` on one open connection: the floor under every statement a
    step sends. opt4's downgrade sends 8 (pool ping, Alembic's version-table check,
    BEGIN, version read, its two statements, version update, COMMIT; server log with
    log_statement=all), its reference 4; the rest of its gap is Alembic's Python."""
    from benchmarks._timing import median_ms
    from stage4.plumbing.db import connect

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
    """PASS/FAIL per target; the workload ones from the same-window A/B when run. The
    mean and the geometric mean are over Q1–Q10; "no query slower" covers the workload
    files too. Rewrites the app would have to adopt count in none of them."""
    ab = result.get("ab")
    base = ab[FIRST] if ab else result["bench"][FIRST]
    last = ab[LAST] if ab else result["bench"].get(LAST)
    rows: list[tuple[str, str, bool | None]] = []
    if last:
        # a per-query target passes only when it holds by both statistics
        sp, spm = speedups(base, last, "median_ms"), speedups(base, last, "mean_ms")
        core = [q for q in sp if q in TITLES]
        mean_a, mean_b = q_mean(base), q_mean(last)
        mean_ratio = mean_a / mean_b
        geo_med = geomean({q: sp[q] for q in core})
        geo_mean = geomean({q: spm[q] for q in core})
        # the rules: an app read ×1.2 and 0.5 ms, a write ×1.5 and 1 ms (by median);
        # the user's own SQL (the workload files) may cost up to ×2
        med_a, med_b = base["median_ms"], last["median_ms"]

        def _over(q: str, factor: float, floor: float) -> bool:
            return med_b[q] > med_a[q] * factor and med_b[q] - med_a[q] > floor

        app_reads = [q for q in sp if q in TITLES or q in REST]
        reads_slower = [q for q in app_reads if _over(q, 1.2, 0.5)]
        writes_slower = [q for q in sp if is_write(q) and _over(q, 1.5, 1.0)]
        files = sorted(q for q in sp if q not in app_reads and not is_write(q))
        files_slower = [q for q in files if sp[q] < 0.5]
        per_set = set_ratios(base, last, "Q5")
        qps = last["qps"] / base["qps"]
        # the same two figures without the reads served stale from a view (labelled apart:
        # a lag accepted for speed is not the speedup of a fresh read)
        stale_q = [q for q, f in result.get("freshness", {}).get(LAST, {}).items()
                   if f["fresh"] is False]  # fmt: skip
        fresh_q = [q for q in core if q not in stale_q]
        fresh_note = ""
        if stale_q and fresh_q:
            fa, fb = (statistics.fmean(x["mean_ms"][q] for q in fresh_q) for x in (base, last))
            fresh_note = (f"; the fresh reads alone ({', '.join(fresh_q)}): mean ×{fa / fb:.2f}, "
                          f"geomean ×{geomean({q: sp[q] for q in fresh_q}):.2f} by median")  # fmt: skip
        rows += [
            ("mean latency Q1–Q10 ≥ 3× lower", f"×{mean_ratio:.2f} "
             f"({mean_a:.2f} → {mean_b:.2f} ms)" + fresh_note, mean_ratio >= 3),
            ("geometric mean of Q1–Q10's speedups ≥ 2×", f"×{geo_med:.2f} by median, "
             f"×{geo_mean:.2f} by mean" + fresh_note, min(geo_med, geo_mean) >= 2),
            ("no app read (Q1–Q10, R1–R3) slower than ×1.2 unless by less than 0.5 ms (median)",
             _slower(reads_slower, sp, med_a, med_b, app_reads),
             not reads_slower),
            ("no write slower than ×1.5 unless by less than 1 ms (median)",
             _slower(writes_slower, sp, med_a, med_b, [q for q in sp if is_write(q)]),
             not writes_slower),
            (f"the user's own SQL ({', '.join(files) or 'none'}) none slower than ×2",
             _slower(files_slower, sp, med_a, med_b, files), not files_slower),
            ("Q5 ≥ 3× faster", f"×{sp['Q5']:.2f} by median, ×{spm['Q5']:.2f} by mean"
             + (f"; per set {per_set}" if per_set else ""), min(sp["Q5"], spm["Q5"]) >= 3),
            ("QPS at 4 clients ≥ 2×", f"×{qps:.2f} ({base['qps']:.1f} → {last['qps']:.1f})",
             qps >= 2),
            ("results equal to baseline (fingerprints)", ", ".join(
                q for q in base["fingerprints"] if base["fingerprints"][q] != last["fingerprints"][q]
            ) or "all equal", base["fingerprints"] == last["fingerprints"]),
        ]  # fmt: skip
        errors = last.get("errors") or {}
        if files or errors:
            rows.append((f"every workload file runs at {LAST}", "; ".join(
                f"{e['file']}: {e['error']}" for e in errors.values()) or "all ran", not errors))  # fmt: skip
    stale = {q: f for q, f in result.get("freshness", {}).get(LAST, {}).items()
             if f["fresh"] is False}  # fmt: skip
    if result.get("freshness", {}).get(LAST):
        rows.append(("results fresh, or stale within a declared budget", "stale: " + "; ".join(
            f"{q} (declared by {f['declared'][0]}: {f['declared'][1]})" if f["declared"]
            else f"{q} (undeclared)" for q, f in stale.items()) if stale else "all fresh",
            all(f["declared"] for f in stale.values())))  # fmt: skip
    for step, m in result["migrations"].items():
        ref = m.get("reference_s")
        if ref is not None and m.get("seconds") is not None:
            ratio = m["seconds"] / ref if ref > 0 else math.inf
            rows.append((f"{step} ≤ 2× reference", f"{_s(m['seconds'])} s vs {_s(ref)} s "
                         f"(×{ratio:.2f})", ratio <= 2))  # fmt: skip
        if step.endswith("down") and m.get("seconds") is not None:
            rows.append((f"{step} under 60 s", f"{_s(m['seconds'])} s", m["seconds"] < 60))
    opt1 = result["migrations"].get(f"{REBUILDER} up", {}).get("metrics", {})
    if opt1:
        r, w = opt1.get("readers_blocked_s"), opt1.get("writers_blocked_s")
        rows.append((f"{REBUILDER}: readers blocked ≤ 1 s", f"{r:.3f} s", r <= 1))
        rows.append((f"{REBUILDER}: longest write block < 5 s", f"{w:.3f} s", w < 5))
    # every other step's waits for readers and writers: benchmarks.live_waits
    gate = result.get("gate")
    if gate:
        rows.append(("one full gate (bench + compare) < 90 s", f"{gate['seconds']:.1f} s "
                     f"(bench {gate['bench_s']:.1f} + compare {gate['compare_s']:.2f})",
                     gate["seconds"] < 90))  # fmt: skip
    for name, sec in result.get("cli", {}).items():
        rows.append((f"`stage4 {name}` < 1 s", f"{sec:.2f} s", sec < 1))
    return rows


def _slower(slower, sp, med_a, med_b, among) -> str:
    """The queries over their rule with their medians, else the worst of ``among``."""
    if slower:
        return "slower: " + ", ".join(
            f"{q} ×{sp[q]:.2f} ({med_a[q]:.2f} → {med_b[q]:.2f} ms)" for q in slower
        )
    if not among:
        return "none measured"
    w = min(among, key=sp.get)
    return f"none; worst {w} ×{sp[w]:.2f} ({med_a[w]:.2f} → {med_b[w]:.2f} ms)"


def q_mean(summary: dict) -> float:
    """Mean latency over Q1–Q10 (the mean of their per-query means): the workload files
    are judged one by one, outside the headline's mean."""
    return statistics.fmean(v for q, v in summary["mean_ms"].items() if q in TITLES)


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


def how_sent(summary: dict, q: str) -> str:
    """How the app reaches ``q``: an RPC a revision may re-point, SQL measured unchanged,
    or one of its workload files (SQL, unchanged)."""
    if q in summary.get("workload_files", {}):
        return f"SQL, `{Path(summary['workload_files'][q]).name}`"
    return summary.get("contract", {}).get(q, "SQL")


def staleness(result: dict, rev: str, q: str) -> str:
    """What the canary check found for a stale read; empty for a fresh (or unchecked) one."""
    f = result.get("freshness", {}).get(rev, {}).get(q)
    if not f or f["fresh"] is not False:
        return ""
    return f"stale, declared by {f['declared'][0]}" if f["declared"] else "STALE, undeclared"


def _cell(value: str, stale: str) -> str:
    return f"{value} ({stale})" if stale else value


def markdown(result: dict, command: str) -> str:
    n = result["features"]
    benches = result["bench"]
    steps = [FIRST, *[r for r in REVISIONS if r in benches]]
    last = benches.get(LAST)
    first = benches[FIRST]
    load = result["load_average_start"]
    lines = [
        SECTION,
        "",
        f"{n:,} features, one run of `benchmarks.scale` (finished {result['finished_at']}; "
        f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} over 1 / 5 / "
        "15 min"
        + (f", wall time {result['wall_s'] / 60:.0f} min" if "wall_s" in result else "")
        + "):",
        "",
        "```bash",
        command,
        "```",
        "",
        "What is measured is the app as it runs: Q1–Q10 and the workload files "
        f"(`{result.get('workload') or 'none'}`) are sent with the same text at every "
        "revision (SQL), or called with the same signature (RPC: a revision may re-point its "
        "body). Materialized views are read as the app finds them, never refreshed first, "
        "and every query's freshness is checked with canary rows (`stage4.measure.freshness`): a "
        "read served from a view that misses a row inserted now is marked *stale*, with "
        "the revision that declares its staleness budget (the gate accepts it only with "
        "`--accept-stale`). Rewrites that would need the app to change its SQL are listed "
        "apart and count in no figure.",
        "",
        "Median ms per execution (default bench: 20 rounds × 4 parameter sets), "
        f"speedup = {FIRST} / {LAST}:",
        "",
        "| query | the app sends | " + " | ".join(steps) + " | speedup |",
        "|---|---|" + "---|" * (len(steps) + 1),
    ]
    for q in first["median_ms"]:
        cells = [_cell(f"{benches[s]['median_ms'][q]:.2f}", staleness(result, s, q)
                       and "stale") for s in steps]  # fmt: skip
        sp = f"×{first['median_ms'][q] / last['median_ms'][q]:.2f}" if last else ""
        lines.append(f"| {q} | {how_sent(first, q)} | " + " | ".join(cells)
                     + f" | {_cell(sp, staleness(result, LAST, q))} |")  # fmt: skip
    lines.append("| mean Q1–Q10 | | " + " | ".join(
        f"{q_mean(benches[s]):.2f}" for s in steps) + " | |")  # fmt: skip
    lines.append("| QPS (4 clients) | | " + " | ".join(
        f"{benches[s]['qps']:.1f}" for s in steps) + " | |")  # fmt: skip
    lines.append("| control query (ms) | | " + " | ".join(
        f"{benches[s].get('control_ms', float('nan')):.2f}" for s in steps) + " | |")  # fmt: skip
    lines += ["", "Each column above is a bench taken in turn; the control row shows how "
              "much the machine's own speed moved meanwhile. QPS: pgbench, 4 clients, 5 s, "
              "every query above (Q1–Q10 and the workload files) picked at random."]  # fmt: skip
    ab = result.get("ab")
    if ab:
        a, b = ab[FIRST], ab[LAST]
        lines += ["", f"**Same-window A/B** (the targets below): a copy of the cluster kept at "
                  f"`{FIRST}` (A) and the migrated database at {LAST} (B), benched in turn "
                  f"{ab['order'].strip()}; ms per execution over the {a['runs']} runs of "
                  "each, by median and by mean, the speedup of each parameter set's "
                  "median, and the gate's verdict on each pair:", "",
                  "| query | median A | median B | speedup | mean A | mean B | speedup "
                  "| per set | verdict per pair | results at B |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for q in a["median_ms"]:
            verdicts = " / ".join(p["verdicts"][q] for p in ab["pairs"])
            lines.append(f"| {q} | {a['median_ms'][q]:.2f} | {b['median_ms'][q]:.2f} | "
                         f"×{a['median_ms'][q] / b['median_ms'][q]:.2f} | "
                         f"{a['mean_ms'][q]:.2f} | {b['mean_ms'][q]:.2f} | "
                         f"×{a['mean_ms'][q] / b['mean_ms'][q]:.2f} | "
                         f"{set_ratios(a, b, q)} | {verdicts} | "
                         f"{staleness(result, LAST, q) or 'fresh'} |")  # fmt: skip
        lines.append(f"| mean Q1–Q10 | | | | {q_mean(a):.2f} | {q_mean(b):.2f} "
                     f"| ×{q_mean(a) / q_mean(b):.2f} | | | |")  # fmt: skip
        lines.append(f"| QPS (4 clients, {ab.get('qps_seconds', 5):g} s a run) | "
                     f"{a['qps']:.1f} | {b['qps']:.1f} | "
                     f"×{b['qps'] / a['qps']:.2f} | | | | | | |")  # fmt: skip
        lines.append(f"| control query (ms) | {a['control_ms']:.2f} | {b['control_ms']:.2f} "
                     "| | | | | | | |")  # fmt: skip
        loads = [x for x in (a.get("load_average_start"), b.get("load_average_end")) if x]
        if loads:
            lines += ["", "Load average (1 min) at the first A run's start and the last B "
                      "run's end: " + " and ".join(f"{x[0]:.1f}" for x in loads) + "."]  # fmt: skip
    lines += _stale_lines(result) + _rewrite_lines(result)
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


def _stale_lines(result: dict) -> list[str]:
    """The reads the canary check found stale, per revision, with their declared budget."""
    out = []
    for rev, checked in result.get("freshness", {}).items():
        for q, f in checked.items():
            if f["fresh"] is False:
                budget = (
                    f"{f['declared'][1]} (declared by {f['declared'][0]})"
                    if f["declared"]
                    else "no budget declared"
                )
                out.append(f"| {rev} | {q} | {budget} |")
    if not out:
        return []
    return ["", "Reads served from a materialized view, found stale by the canary check "
            "(a speedup marked *stale* above is that of a read that may lag the table by up "
            "to its budget):", "", "| revision | query | staleness budget |", "|---|---|---|",
            *out]  # fmt: skip


def _rewrite_lines(result: dict) -> list[str]:
    """Rewrites offered at opt5, measured beside the app's SQL in the last B run: "available
    if your app adopts it", never in a figure above or a target."""
    ab = result.get("ab")
    last = ab[LAST] if ab else result["bench"].get(LAST) or {}
    offered = last.get("available_rewrites") or {}
    rows = [f"| {q} | {name} | {'yes' if r['same_results'] else 'NO'} | "
            + (f"{r['app_ms']:.2f} | {r['rewrite_ms']:.2f} | ×{r['speedup']:.2f} |"
               if r.get("speedup") else "| | |")
            for q, found in offered.items() for name, r in found.items()]  # fmt: skip
    if not rows:
        return []
    return ["", "**Available if your app adopts it** (SQL the app would have to change to; "
            f"measured at {LAST} beside the app's own query, alternating, median of round means; "
            "counted in no figure or target above or below):", "",
            "| query | rewrite | same results | app's SQL (ms) | rewrite (ms) | speedup |",
            "|---|---|---|---|---|---|", *rows]  # fmt: skip


def write_markdown(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace the section in ``path``, keeping its hand-written NOTES subsection."""
    doc = path.read_text()
    if SECTION in doc:
        head, rest = doc.split(SECTION, 1)
        nxt = rest.find("\n## ")
        body, tail = (rest[:nxt], rest[nxt + 1 :]) if nxt >= 0 else (rest, "")
        if NOTES in body:
            text = text + "\n" + NOTES + body.split(NOTES, 1)[1].rstrip("\n") + "\n"
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
                    help=f"A/B pairs ({FIRST} clone, {LAST}) benched in turn at the end (0: none)")  # fmt: skip
    ap.add_argument("--qps-seconds", type=float, default=20.0,
                    help="the A/B's throughput phase, each run (the bench's default: 5)")  # fmt: skip
    ap.add_argument("--workload", default=str(WORKLOAD.relative_to(ROOT)),
                    help="the app's own queries (pgbench scripts) benched with Q1–Q10 "
                         "('none': Q1–Q10 only)")  # fmt: skip
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
    from stage4.config import settings
    from stage4.measure import bench
    from stage4.plumbing import migrations
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    s = settings()
    cluster = Cluster.from_settings(s)
    cluster.ensure_started()
    url = cluster.url()
    result: dict = {"features": n, "home": os.environ["STAGE4_HOME"],
                    "load_average_start": os.getloadavg(), "bench": {}, "migrations": {},
                    "workload": None if args.workload == "none" else str(Path(args.workload))}  # fmt: skip
    say(f"cluster {os.environ['STAGE4_HOME']}, {n:,} features")
    rev = migrations.current(url)
    if args.resume:
        result = json.loads((RESULTS / f"scale_{n}.json").read_text())
        global _RESUMED_AT
        _RESUMED_AT = result.get("wall_s", 0.0)
        say(f"resuming at {rev}: benches done {list(result['bench'])}")
        _forward(url, s, result, REVISIONS[REVISIONS.index(rev) + 1 :], args)
        _finish(url, s, result, n, args)
        return
    if rev not in (None, FIRST):
        say(f"database at {rev}: downgrading to schema")
        migrations.downgrade(url, FIRST)
    if rev is None:
        migrations.upgrade(url, FIRST)
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
    base = bench.run(
        url,
        label="SCHEMA",
        progress=_progress("bench schema"),
        save=False,
        workload_dir=_folder(result),
    )
    result["freshness"] = {FIRST: fresh(url, s, [])}
    result["bench"][FIRST] = summary(base)
    # Integer microseconds: exact enough, and no float noise in the JSON.
    result["baseline_samples_us"] = {q: _us(v) for q, v in base.samples.items()}
    result["baseline_control_us"] = _us(base.control)
    say(f"{FIRST}: mean {result['bench'][FIRST]['overall_mean_ms']:.2f} ms, {base.qps:.0f} QPS")
    _save(result, n)
    _forward(url, s, result, REVISIONS, args)
    _finish(url, s, result, n, args)


def _forward(url, s, result: dict, revisions: list[str], args) -> None:
    from types import SimpleNamespace

    from stage4.measure import bench, stats
    from stage4.plumbing import migrations
    from stage4.plumbing.db import connect
    from stage4.rollout.gate import GateOptions

    n = result["features"]
    with migrations.session(url):  # as `stage4 upgrade`: one connection for the steps
        for rev in revisions:
            say(f"{rev}: physical reference of the upgrade")
            quiesce(url)  # a view's scheduled refresh would hold the lock the reference takes
            ref_up = time_reference(url, s, rev, "up")
            metrics: dict = {}
            say(f"{rev}: upgrade (reference {ref_up:.2f} s)")
            quiesce(url)
            up, settled = migrations.timed(migrations.upgrade, url, rev, metrics=metrics,
                                           progress=_progress(f"upgrade {rev}"))  # fmt: skip
            say(f"{rev}: upgraded in {up:.2f} s {metrics or ''}, then VACUUM (ANALYZE) {settled}")
            quiesce(url)
            ref_down = time_reference(url, s, rev, "down")
            result["migrations"][f"{rev} up"] = {"seconds": up, "reference_s": ref_up,
                                                 "metrics": metrics, "settled_s": settled}  # fmt: skip
            result["migrations"][f"{rev} down"] = {"reference_s": ref_down}
            with connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE")
            say(f"bench at {rev}")
            quiesce(url)
            t0 = time.perf_counter()
            run = bench.run(
                url,
                label=rev,
                progress=_progress(f"bench {rev}"),
                save=False,
                workload_dir=_folder(result),
            )
            bench_s = time.perf_counter() - t0
            result["bench"][rev] = summary(run)
            result.setdefault("freshness", {})[rev] = fresh(
                url, s, REVISIONS[: REVISIONS.index(rev) + 1]
            )
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
                    ab_compare(url, Path(result["ab_home"]), result, args.ab_pairs,
                               _folder(result), args.qps_seconds)  # fmt: skip
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
    from stage4.plumbing import migrations

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
    from stage4.plumbing import migrations

    steps, refs = [m["seconds"]], [m["reference_s"]]
    while len(steps) < REPEATS:
        migrations.upgrade(url, rev)
        refs.append(time_reference(url, s, rev, "down"))
        quiesce(url)
        steps.append(migrations.timed(migrations.downgrade, url, migrations.previous(rev))[0])
    m.update(seconds=statistics.median(steps), reference_s=statistics.median(refs),
             samples_s=steps, reference_samples_s=refs)  # fmt: skip


def _folder(result: dict) -> Path | None:
    """The workload folder of the run (stored relative to the project), or None."""
    return ROOT / result["workload"] if result.get("workload") else None


def _us(ms: list[float]) -> list[int]:
    return [round(x * 1000) for x in ms]


def _ms(us: list[int]) -> list[float]:
    return [x / 1000 for x in us]


def _save(result: dict, n: int) -> None:
    result["wall_s"] = _RESUMED_AT + time.perf_counter() - T0  # the run's own time, no pause
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scale_{n}.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
