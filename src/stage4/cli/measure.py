"""Commands of the measuring instrument: ``bench``, ``baseline``, ``compare`` and
``workload capture``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stage4.cli.app import WorkloadOpt, app, err, out, target_url, workload_app
from stage4.progress import bench_bars


@workload_app.command("capture")
def workload_capture(
    top: Annotated[int, typer.Option("--top", min=1, help="How many statements.")] = 10,
    out_dir: Annotated[
        Path, typer.Option("--out", help="The folder to write them to (created if missing).")
    ] = Path("workload"),
) -> None:
    """Write the heaviest reads of pg_stat_statements as workload files to complete.

    Each file, captured_NN.sql, has one `\\set pN TODO` line per parameter.
    Give each a range or a value, then: stage4 bench --workload DIR.
    Example: stage4 workload capture --top 5 --out workload
    """
    from stage4.config import settings
    from stage4.measure import capture
    from stage4.plumbing.db import connect

    with connect(target_url(), autocommit=True) as conn:
        rows = capture.top_statements(conn, top, settings().bench_schema)
    if not rows:
        out.print("pg_stat_statements holds no read of this database yet: nothing written")
        return
    for path in capture.write(rows, out_dir):
        out.print(f"wrote {path}")
    out.print(f"next: replace each TODO, then stage4 bench --workload {out_dir}")


# ------------------------------------------------------------------ benchmark
# bench / baseline / compare: thin wrappers over stage4.measure.bench, stage4.measure.store, stage4.measure.stats.
def _measure(
    label: str, iterations: int, concurrency: int, duration: float, workload: Path | None = None
):
    from stage4.measure import bench

    url = target_url()  # a bad URL fails before the progress display opens
    with bench_bars(err) as bar:
        tasks: dict[str, object] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total, clock=what == "throughput")
            bar.update(tasks[what], completed=done, total=total)

        return bench.run(
            url,
            label=label,
            iterations=iterations,
            concurrency=concurrency,
            duration=duration,
            progress=progress,
            workload_dir=workload,
        )


def _run_table(run) -> None:
    from rich.table import Table

    from stage4.measure.workload import CONTRACT, title
    from stage4.queries import WRITES

    table = Table(title=f"run {run.run_id} {run.label} at {run.revision or '(no revision)'}")
    for col in ("query", "app sends", "p50 ms", "mean ms", "p95 ms", "p99 ms", "fingerprint"):
        table.add_column(col, justify="left" if col in ("query", "app sends") else "right")
    for qid, s in run.summary.items():
        figures = [f"{s[k]:.2f}" for k in ("p50", "mean", "p95", "p99")]
        sends = "write, rolled back" if qid in WRITES else CONTRACT.get(qid, "SQL")
        table.add_row(f"{qid} {title(qid)}", sends, *figures, run.fingerprints.get(qid, "")[:12])
    out.print(table)
    for e in run.environment.get("errors", {}).values():  # an app's file that failed
        out.print(f"not measured: {e['file']}: {e['error']}", markup=False, highlight=False)
    o = run.overall
    hit = "–" if o["cache_hit_pct"] is None else f"{o['cache_hit_pct']:.2f} %"
    out.print(
        f"overall: mean {o['mean']:.2f} ms, p50 {o['p50']:.2f}, p95 {o['p95']:.2f}, "
        f"p99 {o['p99']:.2f} ms; {o['qps']:.1f} QPS ({run.concurrency} clients, "
        f"{run.duration:g} s); cache hit {hit}; run took {run.seconds:.1f} s"
    )
    for qid, found in run.environment.get("available_rewrites", {}).items():
        for name, r in found.items():
            gain = "not timed"
            if r.get("speedup"):
                gain = f"x{r['speedup']:.2f} ({r['app_ms']:.2f} -> {r['rewrite_ms']:.2f} ms)"
            same = "same results" if r["same_results"] else "DIFFERENT results"
            out.print(f"available if your app adopts it: {qid} by {name}: {gain}, {same}")


IterOpt = Annotated[
    int, typer.Option(min=1, help="Latency rounds (each runs Q1–Q10 on 4 fixed parameter sets).")
]


ConcOpt = Annotated[int, typer.Option(min=1, help="Throughput phase: concurrent clients.")]


DurOpt = Annotated[float, typer.Option(min=1, help="Throughput phase: seconds.")]


@app.command()
def bench(
    label: Annotated[str, typer.Option(help="Run label (METRICS_<LABEL>.json).")] = "RUN",
    iterations: IterOpt = 20,
    concurrency: ConcOpt = 4,
    duration: DurOpt = 5.0,
    json_dir: Annotated[
        Path | None, typer.Option(help="Also write METRICS_<LABEL>.json into this folder.")
    ] = None,
    workload: WorkloadOpt = None,
) -> None:
    """Benchmark Q1–Q10 now and store the run in the benchmarking schema.

    Warm-up + result fingerprints, interleaved latency rounds, a pgbench
    throughput phase, cache-hit ratio.
    Example: stage4 bench --label opt1 --json-dir reports
    """
    from stage4.measure.metrics import export

    _note_rollout("its load skews these timings")
    run = _measure(label, iterations, concurrency, duration, workload)
    _run_table(run)
    if json_dir is not None:
        out.print(f"metrics: {export(run, json_dir)}")


@app.command()
def baseline(
    force: Annotated[bool, typer.Option(help="Replace an existing baseline.")] = False,
    run_id: Annotated[
        int | None, typer.Option("--run", help="Store this run (default: the latest one).")
    ] = None,
    iterations: IterOpt = 20,
    concurrency: ConcOpt = 4,
    duration: DurOpt = 5.0,
    workload: WorkloadOpt = None,
) -> None:
    """Store a run as the baseline: --run N, else the latest run, else measure one now.

    With --workload, the run stored must hold every query of that folder (one measured
    now when there is no run yet).

    Refuses to replace an existing baseline unless --force (old ones stay in history).
    Example: stage4 baseline --force
    """
    from stage4.measure import baseline as baselines

    def measure():
        err.print("no run stored yet: measuring one now")
        return _measure("BASELINE", iterations, concurrency, duration, workload)

    chosen = baselines.choose(target_url(), run_id, force=force, workload=workload, measure=measure)
    out.print(f"baseline: run {chosen}")


@app.command()
def compare(
    run: Annotated[int | None, typer.Argument(help="Run id (default: the latest run).")] = None,
    threshold: Annotated[float, typer.Option(min=0.001, help="Practical margin.")] = 0.10,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="CI level.")] = 0.95,
    workload: WorkloadOpt = None,
    brief: Annotated[
        bool, typer.Option("--brief", help="What got faster and what did not, a line each.")
    ] = False,
) -> None:
    """Compare a run with the baseline: per-query median ratio, CI and verdict, then GO/NO-GO.

    With --workload, both runs must hold every query of that folder.

    Example: stage4 compare 7
    """
    from stage4.measure import baseline as baselines
    from stage4.measure.stats import margin_line

    _note_rollout("a run measured meanwhile saw its load")
    c = baselines.compare(
        target_url(), run, threshold=threshold, confidence=confidence, workload=workload
    )
    if brief:
        for line in _brief(c):
            out.print(line, markup=False, highlight=False)
        return
    out.print(_comparison_table(c, confidence))
    out.print(margin_line(c.queries), markup=False)
    b, o = c.base.overall, c.run.overall
    out.print(
        f"overall mean {b['mean']:.2f} -> {o['mean']:.2f} ms "
        f"({100 * (o['mean'] / b['mean'] - 1):+.1f} %), geometric mean of ratios "
        f"x{c.ratio_mean:.2f}; QPS {b['qps'] or 0:.1f} -> {o['qps'] or 0:.1f}"
    )
    decision = c.decision
    out.print("GO" if decision.go else "NO-GO: " + "; ".join(decision.reasons), markup=False)


def _brief(c) -> list[str]:
    """The comparison in three lines: faster, slower (each with its medians), unchanged."""
    from stage4.measure.stats import FASTER, SLOWER

    def moved(verdict: str) -> str:
        found = [f"{q} x{x.ratio:.2f} ({x.baseline_median:.2f} -> {x.candidate_median:.2f} ms)"
                 for q, x in c.queries.items() if x.verdict == verdict]  # fmt: skip
        return ", ".join(found) or "none"

    same = [q for q, x in c.queries.items() if x.verdict not in (FASTER, SLOWER)]
    head = f"run {c.run.run_id} at {c.run.revision} against the baseline (run {c.base.run_id} "
    return [
        head + f"at {c.base.revision}), medians:",
        f"  faster: {moved(FASTER)}",
        f"  slower: {moved(SLOWER)}",
        f"  no significant change (within the margin or the floor): {', '.join(same) or 'none'}",
    ]


def _comparison_table(c, confidence: float):
    from rich.table import Table

    base, run = c.base, c.run
    table = Table(title=f"run {run.run_id} {run.label} vs baseline run {base.run_id} {base.label}")
    # the measured ratio, and the one judged where the machine's speed was taken out
    corrected = ["corrected"] if any(q.adjusted_ratio for q in c.queries.values()) else []
    columns = ("query", "base p50", "run p50", "ratio", *corrected, f"{confidence:.0%} CI",
               "verdict", "result")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("query", "verdict") else "right")
    for qid, q in c.queries.items():
        table.add_row(
            qid,
            f"{q.baseline_median:.2f}",
            f"{q.candidate_median:.2f}",
            f"x{q.ratio:.2f}",
            *([f"x{q.adjusted_ratio:.2f}"] if corrected else []),
            f"x{q.ci_low:.2f}–x{q.ci_high:.2f}",
            q.verdict,
            "same" if c.same.get(qid) else "DIFFERENT",
        )
    return table


def _note_rollout(why: str) -> None:
    """bench and compare only read: they run beside a rollout, and say so."""
    from stage4.plumbing import locks

    holder = locks.running(target_url())
    if holder:
        err.print(f"note: a rollout is running ({holder}): {why}", markup=False)
