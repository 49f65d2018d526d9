"""Commands of the rollout: ``upgrade``, ``downgrade``, ``rehearse``, ``status``, ``drift``,
``plan`` and ``report``: options in, the library called, its answer printed."""

from __future__ import annotations

import functools
import inspect
import time
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stage4.cli.app import (
    LockRetriesOpt,
    LockTimeoutOpt,
    WorkloadOpt,
    app,
    err,
    out,
    print_summary,
    print_where,
    target_url,
)
from stage4.errors import Stage4Error
from stage4.plumbing.retry import DEFAULT_RETRIES
from stage4.progress import Live


# ------------------------------------------------------------------ migrations
class Judge(StrEnum):
    """How a multi-step upgrade is gated (gate.JUDGE_MODES)."""

    each = "each"
    target = "target"


ToOpt = Annotated[str, typer.Option("--to", help="Target revision (schema, opt1 … opt5, head).")]


ReportsOpt = Annotated[Path, typer.Option(help="A folder per run goes here.")]


GateIterOpt = Annotated[int | None, typer.Option(min=1, help="Latency iterations.")]


GateConcOpt = Annotated[int | None, typer.Option(min=1, help="Throughput clients.")]


GateDurOpt = Annotated[float | None, typer.Option(min=0.5, help="Throughput seconds.")]


BackupDirOpt = Annotated[Path, typer.Option(help="Where the pg_dump file goes.")]


KeepBackupsOpt = Annotated[
    int, typer.Option(min=1, help="Keep this many newest stage4 dumps in --backup-dir.")
]


ThresholdOpt = Annotated[
    float, typer.Option(min=0.001, help="Slower by more than this fraction = regression.")
]


ConfidenceOpt = Annotated[
    float, typer.Option(min=0.5, max=0.999, help="Confidence of the bootstrap interval.")
]


MinDeltaOpt = Annotated[
    float, typer.Option(min=0.0, help="…and by more than this many ms (median).")
]


ExpectOpt = Annotated[
    int | None, typer.Option(help="Refuse unless the table holds exactly this many rows.")
]


JudgeOpt = Annotated[
    Judge,
    typer.Option(
        help="each: every step against the baseline, a NO-GO rolls that step back. "
        "target: the steps as one package, each verified and measured, only --to gated; "
        "a NO-GO rolls them all back.",
    ),
]


AcceptStaleOpt = Annotated[
    bool,
    typer.Option(
        "--accept-stale",
        help="Accept reads served from a materialized view older than the table, within "
        "the staleness budget their revision declares (otherwise a stale read is NO-GO).",
    ),
]


AcceptDriftOpt = Annotated[
    bool,
    typer.Option(
        "--accept-drift",
        help="Start even when the catalog drifted from what the revision promises "
        "(see `stage4 drift`).",
    ),
]


KeepUnjudgedOpt = Annotated[
    bool,
    typer.Option(
        "--keep-unjudged",
        help="Interrupted (Ctrl-C, SIGTERM): keep a step that committed but was not judged "
        "yet, recorded as unjudged (the next upgrade judges it); default: roll it back.",
    ),
]


GateOpt = Annotated[
    bool, typer.Option("--gate/--no-gate", help="--no-gate: keep steps even when NO-GO.")
]


BackupOpt = Annotated[bool, typer.Option("--backup/--no-backup", help="pg_dump first.")]


ScratchOpt = Annotated[
    str | None,
    typer.Option(
        help="An empty database to rehearse in (default: a new one on the "
        "embedded cluster, dropped afterwards)."
    ),
]


SampleOpt = Annotated[
    int | None, typer.Option(min=1, help="Copy only this many rows of the table.")
]


# What decides a verdict: `upgrade` and `rehearse` judge alike, so both take every one of
# these, defined here once (``_judging`` gives them to a command). name: (option, default)
JUDGING: dict[str, tuple[Any, Any]] = {
    "threshold": (ThresholdOpt, 0.10),
    "confidence": (ConfidenceOpt, 0.95),
    "min_delta_ms": (MinDeltaOpt, 2.0),
    "iterations": (GateIterOpt, None),
    "concurrency": (GateConcOpt, None),
    "duration": (GateDurOpt, None),
    "expect_features": (ExpectOpt, None),
    "lock_timeout": (LockTimeoutOpt, None),
    "lock_retries": (LockRetriesOpt, DEFAULT_RETRIES),
    "judge": (JudgeOpt, Judge.each),
    "accept_stale": (AcceptStaleOpt, False),
    "accept_drift": (AcceptDriftOpt, False),
    "workload": (WorkloadOpt, None),
}


def _judging(command):
    """``command`` taking the JUDGING options after its own; its ``**judging`` gets them
    (typer reads the signature given here)."""
    own = inspect.signature(command, eval_str=True)
    kept = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=opt)
        for name, (opt, default) in JUDGING.items()
    ]

    @functools.wraps(command)
    def with_judging(**kwargs):
        return command(**kwargs)

    with_judging.__signature__ = own.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    with_judging.__annotations__ = {p.name: p.annotation for p in (*kept, *added)}
    return with_judging


def _gate_options(ctx: typer.Context, **given):
    """The rollout's options: every command option named as a GateOptions field, and
    ``given`` (options whose name or type differ)."""
    from dataclasses import fields

    from stage4.rollout.record import GateOptions

    names = {f.name for f in fields(GateOptions)}
    chosen = {k: v.value if isinstance(v, Enum) else v for k, v in ctx.params.items()}
    return GateOptions(**{k: v for k, v in chosen.items() if k in names} | given)


@app.command()
@_judging
def upgrade(
    ctx: typer.Context,
    to: ToOpt = "head",
    gate_: GateOpt = True,
    backup: BackupOpt = True,
    backup_dir: BackupDirOpt = Path("backups"),
    keep_backups: KeepBackupsOpt = 5,
    reports_dir: ReportsOpt = Path("reports"),
    keep_unjudged: KeepUnjudgedOpt = False,
    **judging: Any,
) -> None:
    """Upgrade one revision at a time to --to, benchmarking each step against the baseline.

    GO keeps the step; NO-GO rolls it back and stops (exit code 3). A revision that pays
    only with a later one can be judged with it: --judge target.
    Example: stage4 upgrade --to opt3
    """
    from stage4.measure import report
    from stage4.rollout import gate

    opts = _gate_options(ctx, gate=gate_)
    url, began = target_url(), time.time()
    try:
        with Live(err) as (phase, progress):
            rollout = gate.upgrade(url, to, opts, phase=phase, progress=progress)
    except Stage4Error:
        if backup:  # a dump taken by this run is what a user may need now: say where
            _backup_lines(url, backup_dir, keep_backups, began, console=err)
        raise
    for step in rollout.steps:
        out.print(report.step_line(step), markup=False)
        for line in _overridden(step):
            out.print(line, markup=False)
    if backup:
        _backup_lines(url, backup_dir, keep_backups, began, console=out)
    if rollout.folder:
        out.print(f"report: {Path(rollout.folder) / 'REPORT.md'}")
    overridden = [st.revision for st in rollout.steps if _overridden(st)]
    outcome = rollout.outcome
    if overridden:
        outcome += f" (--no-gate kept {', '.join(overridden)}, which the gate would have refused)"
    out.print(outcome, markup=False)


def _overridden(step) -> list[str]:
    """A step --no-gate kept although the gate would not have: why, one line each (the
    report lists them too; a bare GO on the terminal would hide them)."""
    if not step.verdict.startswith("GO (gate disabled"):
        return []
    return [f"  not GO without --no-gate: {r}" for r in step.reasons]


def _backup_lines(url: str, folder: Path, keep: int, since: float, console: Console) -> None:
    """Where this run's backup is and how to restore it; then the retention: once this run
    wrote its own dump (under the rollout lock), the older ones beyond ``keep`` go, whatever
    the outcome. A run that wrote none (refused: another rollout runs) deletes nothing."""
    from stage4.config import settings
    from stage4.rollout import backup

    taken, gone = backup.retain(folder, keep, since)
    if taken is not None:
        restore = backup.restore_command(taken, url, settings().schema)
        console.print(f"backup: {taken}", markup=False, highlight=False)
        console.print(f"restore it with: {restore}", markup=False, highlight=False)
    if gone:
        console.print(
            f"removed {len(gone)} older backup(s) from {folder} (--keep-backups {keep})",
            markup=False,
            highlight=False,
        )


@app.command(context_settings={"ignore_unknown_options": True})
def downgrade(
    relative: Annotated[str | None, typer.Argument(help="-1 (one step, the default).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Revision to go back to.")] = None,
    lock_timeout: LockTimeoutOpt = None,
    lock_retries: LockRetriesOpt = DEFAULT_RETRIES,
) -> None:
    """Roll back: one revision (default, or -1), or down to --to.

    Example: stage4 downgrade -1
    """
    from stage4.errors import ConfigError
    from stage4.plumbing import migrations
    from stage4.rollout import gate

    n = None if to is not None or relative in (None, "-1") else _relative(relative)
    if to is not None and relative is not None:
        raise ConfigError("downgrade takes -N or --to REV, not both")
    url = target_url()
    to = migrations.downgrade_target(url, n, to)  # out of reach: refused before any change

    def said(step: str, text: str) -> None:
        err.print(f"{step}: {text} …")

    steps = gate.downgrade(
        url, to, lock_timeout=lock_timeout, phase=said, lock_retries=lock_retries
    )
    for step in steps:
        checks = f"; verified: {', '.join(step.verified)}" if step.verified else ""
        then = "".join(f"; {note}" for note in gate.settled_notes(step.settled))
        line = f"{step.revision}: rolled back in {step.seconds:.2f} s, every row kept"
        out.print(f"{line}{checks}{then}", markup=False)
    print_summary(url)


@app.command()
@_judging
def rehearse(
    ctx: typer.Context,
    to: ToOpt = "head",
    scratch_url: ScratchOpt = None,
    sample: SampleOpt = None,
    keep: Annotated[bool, typer.Option(help="Keep the embedded scratch database.")] = False,
    reports_dir: ReportsOpt = Path("reports"),
    **judging: Any,
) -> None:
    """Rehearse `upgrade --to` on a copy of the database; the source is only read (pg_dump).

    It takes every judging option of upgrade (--threshold, --accept-stale, --workload …),
    so it judges what the upgrade would. Prints each step's verdict, durations and lock
    waits, and the report's path. NO-GO in the rehearsal: exit code 3; already at --to:
    nothing to do, exit code 0.
    Example: stage4 rehearse --to opt3 --sample 100000
    """
    from stage4.rollout import rehearse as rehearsal

    opts = _gate_options(ctx)
    with Live(err) as (phase, progress):
        r = rehearsal.run(
            target_url(),
            to,
            opts,
            scratch_url=scratch_url,
            sample=sample,
            keep=keep,
            phase=phase,
            progress=progress,
        )
    if r.rows is None:  # nothing to rehearse: nothing was copied
        out.print(r.outcome, markup=False)
        return
    for line in _rehearsal_lines(r):
        out.print(line, markup=False)
    out.print(rehearsal.hardware(r.source, r.scratch), markup=False)
    if r.report:
        out.print(f"report: {r.report}", markup=False)
    out.print(r.outcome, markup=False)
    if r.no_go:
        raise typer.Exit(3)


def _rehearsal_lines(r):
    """What was copied, each step's verdict, durations and lock waits, the notes."""
    yield (
        f"rehearsal of {r.source} ({r.revision}) to {r.target} in {r.scratch}: "
        f"{r.rows} rows copied in {r.copy_seconds:.1f} s"
    )
    for step in r.steps:
        up, back = step.get("upgrade_seconds"), step.get("rollback_seconds")
        times = f"upgrade {up:.1f} s" if up is not None else "upgrade –"
        times += f", rollback {back:.1f} s" if back is not None else ""
        yield f"{step['revision']}: {step['verdict']} ({times})"
        for note in step.get("notes", []):
            if "lock timeout on try" in note:
                yield f"  lock wait: {note}"
    yield from r.notes + r.baselines


def _relative(text: str) -> int:
    from stage4.errors import ConfigError

    if not text.startswith("-") or not text[1:].isdigit() or int(text[1:]) < 1:
        raise ConfigError(f"downgrade takes -N (e.g. -1) or --to REV, not {text!r}")
    return int(text[1:])


@app.command()
def status(
    reports_dir: Annotated[Path, typer.Option(help="Where rollout reports are.")] = Path("reports"),
) -> None:
    """Revision, pending steps, rows, baseline, last run per step and verdicts, cron jobs.

    Read-only.
    Example: stage4 status
    """
    from stage4.config import settings
    from stage4.rollout import status as state

    info = state.collect(target_url(), settings(), reports_dir)
    print_where(info)
    for line in _status_lines(info):
        out.print(line, markup=False)
    _print_drift(info["drift"], "drift: ")


def _status_lines(info: dict):
    """``status.collect``'s answers past the database, revision and rows."""
    yield f"pending: {', '.join(info['pending']) or 'none'}"
    yield from _version_table_line(info.get("version_table"))
    if info.get("strays"):
        from stage4.config import settings

        s = settings()
        yield (
            f"in {s.schema}, made by an earlier stage4: {', '.join(info['strays'])}; "
            f"`stage4 downgrade --to schema` then `stage4 upgrade` places them in {s.own_schema}"
        )
    base = info["baseline"]
    if base:
        when = f"{base['started_at']:%Y-%m-%d %H:%M}"
        yield (
            f"baseline: run {base['run_id']} at {base['revision']}, {when}, "
            f"mean {base['mean_ms']:.2f} ms"
        )
    else:
        yield "baseline: none yet (the first `stage4 upgrade` or `stage4 baseline` takes it)"
    for r in info["latest_runs"]:
        yield (
            f"  last {r['label']}: run {r['run_id']} at {r['revision']}, "
            f"mean {r['mean_ms']:.2f} ms, {r['qps'] or 0:.0f} QPS"
        )
    if info["rollout_running"]:
        yield f"rollout running: {info['rollout_running']}"
    if roll := info["last_rollout"]:
        yield f"last rollout ({roll['path']}): {roll['outcome']}"
        yield from (f"  {step['revision']}: {step['verdict']}" for step in roll["steps"])
    if info["unjudged"]:
        names = ", ".join(info["unjudged"])
        yield (
            f"unjudged: {names} applied, never judged (`stage4 upgrade` judges it, "
            "`stage4 downgrade` removes it)"
        )
    jobs = info["cron_jobs"]
    if jobs is None:
        yield "pg_cron: not installed in this database (refresh: `stage4 refresh`)"
    else:
        yield f"pg_cron jobs: {', '.join(f'{j} ({sch})' for j, sch, _ in jobs) or 'none'}"


def _version_table_line(found: str | None):
    """Where the revision is kept, when an earlier stage4 left it in the API's sight."""
    from stage4.plumbing import version_table

    if found == version_table.legacy():
        yield (
            f"version table: {found}, readable and writable by the API roles that "
            f"{found.split('.')[0]} grants to; the next `stage4 upgrade`/`downgrade` moves it to "
            f"{version_table.qualified()}"
        )


def _print_drift(found, prefix: str = "") -> None:
    """Drift in what the revisions manage, then the app's own changes, labelled apart; why
    the chain was not replayed, if it was not, on stderr first."""
    if found.warning:
        err.print(f"warning: {found.warning}", markup=False, highlight=False, soft_wrap=True)
    if not found.drifted:
        out.print(f"{prefix}no drift ({found.source})", markup=False)
    else:
        n = len(found.managed)
        out.print(f"{prefix}{n} difference(s) from {found.source}:", markup=False)
        for line in found.managed:
            out.print(f"  {line}", markup=False)
    if found.own:
        since = "since the record" if found.source.startswith("record ") else "from the replay"
        out.print(
            f"{prefix}the app's own, {len(found.own)} change(s) {since} "
            "(carried, never a reason to refuse an upgrade):",
            markup=False,
        )
        for line in found.own:
            out.print(f"  {line}", markup=False)


ReplayScratchOpt = Annotated[
    str | None,
    typer.Option(
        "--scratch-url",
        help="A server to replay the chain on, as a URL whose role may create databases, "
        "for when the database's own role may not (a scratch database is created there "
        "and dropped).",
    ),
]


@app.command()
def drift(scratch_url: ReplayScratchOpt = None) -> None:
    """Compare the live catalog with what the current revision makes; exit 1 on drift.

    The revision's state is replayed: the chain run up to it in a scratch database, on an
    empty copy of the table (cached per revision and chain). Partitions and their bounds,
    indexes, views and their definitions, RPC bodies, cron jobs and settings are compared.
    Where the chain cannot be replayed, a warning says why and the catalog recorded when
    stage4 last left the database at this revision (else the revision's promises) is the
    reference. The app's own changes (policies, row level security, grants, comments,
    indexes and columns it added to its table) are listed apart and do not make the exit
    1. The database is only read.
    Example: stage4 drift
    """
    from stage4.catalog import drift as drifting

    found = drifting.check(target_url(), scratch_url=scratch_url)
    _print_drift(found)
    if found.drifted:
        raise typer.Exit(1)


@app.command()
def report(
    folder: Annotated[
        Path | None, typer.Argument(help="A run folder (default: the newest).")
    ] = None,
    reports_dir: Annotated[Path, typer.Option(help="Where rollout reports are.")] = Path("reports"),
) -> None:
    """Regenerate REPORT.md and its charts from a run folder (no database needed).

    Example: stage4 report reports/20261125-212541
    """
    from stage4.measure import report as reporting

    out.print(str(reporting.write(reporting.run_folder(folder, reports_dir))))


@app.command()
def plan(
    to: Annotated[str, typer.Option("--to", help="Target revision.")] = "head",
    since: Annotated[
        str | None, typer.Option(help="Start revision (default: the database's current one).")
    ] = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Only the SQL (offline with --since: no database).")
    ] = False,
    scratch_url: ReplayScratchOpt = None,
) -> None:
    """What going to a revision changes in the catalog, then the SQL each step and its
    rollback would run. Nothing is executed on the database.

    The catalog diff compares the replayed states of both revisions (the chain run in a
    scratch database on an empty copy of the table): partitions, indexes, views,
    functions, cron jobs and settings added, changed or removed.
    Example: stage4 plan --to opt1 --since schema
    """
    from stage4.plumbing import migrations

    target = migrations.check_target(to)
    start = migrations.check_target(since) if since is not None else None
    url = None if start is not None else target_url()  # the diff needs one too (below)
    start = start or migrations.current(url) or "base"
    order = ["base", *migrations.chain()]
    if order.index(target) < order.index(start):  # below the start: a downgrade's plan
        sections = [
            (f"-- downgrade {start} -> {target}", migrations.offline_sql("downgrade", f"{start}:{target}")),
            (f"-- its reverse: upgrade {target} -> {start}", migrations.offline_sql("upgrade", f"{target}:{start}")),
        ]  # fmt: skip
    else:
        up, down = migrations.offline_plan(start, target)
        if up is None:
            out.print(f"-- already at {target}: nothing to plan")
            return
        sections = [
            (f"-- upgrade {start} -> {target}", up),
            (f"-- rollback {target} -> {start}", down),
        ]
    if not sql:
        _print_catalog_diff(url or target_url(), start, target, scratch_url)
    for title, text in sections:
        out.print(title, markup=False, highlight=False)
        out.print(text, markup=False, highlight=False)


def _print_catalog_diff(url: str, start: str, target: str, scratch_url: str | None) -> None:
    """``plan``'s first part: the replayed catalog of ``start`` against ``target``'s; a
    warning instead when the chain cannot be replayed."""
    from stage4.catalog import replay

    try:
        lines = replay.diff(url, start, target, scratch_url=scratch_url)
    except replay.ReplayError as e:
        err.print(f"warning: no catalog diff: {e}", markup=False, highlight=False)
        return
    for line in lines:
        out.print(line, markup=False, highlight=False)
