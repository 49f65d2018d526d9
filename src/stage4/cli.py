"""The ``stage4`` command line: parses, prints, exits. No SQL here.

Errors from the library arrive as Stage4Error and leave as one line on stderr
with a non-zero exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import time
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from stage4.errors import Stage4Error
from stage4.plumbing.retry import DEFAULT_RETRIES
from stage4.progress import Live, bench_bars


class _Stage4Group(TyperGroup):
    """Errors become one ``FAILED: …`` line and an exit code here, inside the app, so
    ``CliRunner`` and the console script behave the same (``--debug`` re-raises)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.help = _reflow(self.help)

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            command.help = _reflow(command.help)
        return command

    def invoke(self, ctx):
        import psycopg

        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise  # typer's own: usage errors and exits, printed by typer
        except BrokenPipeError:  # `stage4 … | head`: the reader has all it wanted
            _stdout_gone()
            raise typer.Exit(1) from None
        except KeyboardInterrupt:  # SIGINT outside a rollout (which says more: Interrupted)
            err.print("FAILED: interrupted", markup=False)
            raise typer.Exit(130) from None
        except Exception as e:
            if _state["debug"]:
                _traceback(e)
            elif isinstance(e, (Stage4Error, psycopg.Error)):
                _fail(e)
            else:  # a bug: still one line, the traceback is one --debug away
                _fail(e, prefix=f"internal error ({type(e).__name__}, --debug shows where): ")
            raise typer.Exit(getattr(e, "exit_code", 1)) from None


def _reflow(text: str | None) -> str | None:
    """A docstring's paragraphs joined into lines the terminal wraps: their line breaks
    are the source file's, not the sentences' (an ``Example:`` keeps its own line)."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(re.sub(r"\n(?!Example:)", " ", p) for p in paragraphs)


def _stdout_gone() -> None:
    """The reader of stdout left (a pipe closed): what is still buffered goes nowhere, so
    neither the exit nor the interpreter's last flush reports a broken pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file behind stdout (a test runner's buffer)
        pass


def _fail(e: BaseException, prefix: str = "") -> None:
    from stage4.config import redact

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if not isinstance(e, Stage4Error) and not prefix:
        text = f"database error: {text}"
    err.print(f"FAILED: {redact(prefix + text)}", markup=False, highlight=False, soft_wrap=True)


def _traceback(e: BaseException) -> None:
    """``--debug``: the whole traceback, every line redacted (an exception's text may quote
    a password: a driver's parse error, a chained cause)."""
    import traceback

    from stage4.config import redact

    text = "".join(traceback.format_exception(e))
    sys.stderr.write(redact(text))
    sys.stderr.flush()


app = typer.Typer(
    cls=_Stage4Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(
    cls=_Stage4Group, help="The embedded PostgreSQL cluster under .stage4/.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
workload_app = typer.Typer(
    cls=_Stage4Group, help="The app's own queries as workload files.", no_args_is_help=True
)
app.add_typer(workload_app, name="workload")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state: dict[str, object] = {"url": None, "debug": False}

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        show_envvar=True,
        help="postgresql://user:pass@host:port/db. Default: the embedded cluster.",
    ),
]
WorkloadOpt = Annotated[
    Path | None,
    typer.Option(
        "--workload",
        help="A folder of the app's own queries (*.sql, pgbench script format: \\set name "
        "random(a, b), :name, one statement each), judged with Q1–Q10. "
        "Default: the workload key of pyproject.toml's tool.stage4 table.",
    ),
]


def _duration(value: str | None) -> str | None:
    """--lock-timeout's value, checked as a PostgreSQL duration before anything runs."""
    from stage4.plumbing.migrations import check_timeout

    return None if value is None else check_timeout(value)


LockTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--lock-timeout",
        callback=_duration,
        help="How long each step may wait for a table lock (e.g. 5s, 500ms); "
        "default: \\[tool.stage4] lock_timeout.",
    ),
]

LockRetriesOpt = Annotated[
    int,
    typer.Option(
        "--lock-retries",
        min=0,
        help="After a lock timeout, try the step again this many times, waiting longer each "
        "time (0: fail at once).",
    ),
]


@app.callback()
def main_callback(
    database_url: UrlOpt = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """stage4: benchmark-gated migrations for a PostgreSQL + PostGIS database.

    Upgrades one Alembic revision at a time (schema, opt1 … opt5), benchmarks the
    GIS workload after each step against a stored baseline, and rolls a step back
    when it does not pay. Without --database-url / DATABASE_URL every command works
    on the embedded cluster (.stage4/), which it starts when needed.
    """
    _state["url"] = database_url
    _state["debug"] = debug


def _url() -> str:
    from stage4.plumbing.db import resolve_url

    url = resolve_url(_state["url"])  # type: ignore[arg-type]
    _check_passfile(url)
    return url


def _check_passfile(url: str) -> None:
    """A URL's ``passfile`` must exist: libpq skips a missing one silently and the server
    then answers only "no password supplied", which names neither the file nor the typo."""
    from urllib.parse import parse_qs, urlsplit

    from stage4.errors import ConfigError

    for name in parse_qs(urlsplit(url).query).get("passfile", []):
        if not Path(name).is_file():
            raise ConfigError(f"the passfile the database URL names does not exist: {name}")


# ------------------------------------------------------------------ db group
@db_app.command("start")
def db_start() -> None:
    """Create (if needed) and start the embedded cluster; print its URL.

    Example: stage4 db start
    """
    from stage4.config import settings
    from stage4.plumbing.cluster import Cluster

    c = Cluster.from_settings(settings())
    c.ensure_started()
    out.print(c.url())


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster (its data stays in .stage4/)."""
    from stage4.config import settings
    from stage4.plumbing.cluster import Cluster

    Cluster.from_settings(settings()).stop()
    err.print("embedded cluster stopped")


@db_app.command("status")
def db_status() -> None:
    """Say whether the embedded cluster exists and runs, and where."""
    from stage4.config import settings
    from stage4.plumbing.cluster import Cluster

    for key, value in Cluster.from_settings(settings()).status().items():
        out.print(f"{key}: {value}")


@db_app.command("url")
def db_url(
    show_password: Annotated[
        bool, typer.Option("--show-password", help="Write the password into the URL.")
    ] = False,
) -> None:
    """Print the URL of the database stage4 would use (starting the cluster if needed).

    The embedded cluster's URL names its password file (.stage4/pgpass) instead of the
    password: psql and libpq read it from there.
    Example: psql "$(stage4 db url)"
    """
    from stage4.config import explicit_url, redact, settings
    from stage4.plumbing.cluster import Cluster

    url = _url()
    if show_password and not explicit_url(_state["url"]):
        url = Cluster.from_settings(settings()).url(show_password=True)
    out.print(url if show_password else redact(url), markup=False, highlight=False)


# ------------------------------------------------------------------ data
@app.command()
def seed(
    features: Annotated[int, typer.Option(min=1, help="How many features to create.")] = 251,
    seed_: Annotated[
        int, typer.Option("--seed", help="Generator seed (same seed, same data).")
    ] = 42,
    append: Annotated[
        bool, typer.Option(help="Add rows to a table that already has some.")
    ] = False,
    if_empty: Annotated[
        bool, typer.Option(help="Seed only an empty table; otherwise say so and succeed.")
    ] = False,
) -> None:
    """Fill the table with deterministic synthetic BIBLIOTECA features.

    Refuses a table that already holds rows unless --append.
    Example: stage4 seed --features 100000 --seed 42
    """
    from rich.progress import Progress

    from stage4.config import settings
    from stage4.plumbing import seed as seeding
    from stage4.plumbing.db import connect

    url = _url()
    if if_empty and not append:
        existing = seeding.existing_rows(url, settings())
        if existing:
            out.print(f"{settings().qualified_table} already holds {existing} rows: not seeding")
            return
    with connect(url) as conn, Progress(console=err, transient=True) as bar:
        task = bar.add_task("seeding", total=features)
        result = seeding.seed(
            conn,
            settings(),
            features=features,
            seed=seed_,
            append=append,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    out.print(
        f"seeded {result.inserted} features in {result.seconds:.1f} s "
        f"({result.total} rows in {settings().qualified_table})"
    )


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
    url, began = _url(), time.time()
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
    url = _url()
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
    _summary(url)


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
            _url(),
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

    info = state.collect(_url(), settings(), reports_dir)
    _print_where(info)
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

    found = drifting.check(_url(), scratch_url=scratch_url)
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
    url = None if start is not None else _url()  # the diff needs one too (below)
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
        _print_catalog_diff(url or _url(), start, target, scratch_url)
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


@app.command()
def refresh() -> None:
    """Refresh every materialized view of the app schema (CONCURRENTLY where it can).

    What pg_cron does on a schedule after opt3/opt5; run it by hand where pg_cron is absent.
    Example: stage4 refresh
    """
    from stage4.plumbing.refresh import refresh_all

    done = refresh_all(_url())
    if not done:
        out.print("no materialized views to refresh")
    for name, seconds in done:
        out.print(f"{name}: refreshed in {seconds:.2f} s")


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

    with connect(_url(), autocommit=True) as conn:
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

    url = _url()  # a bad URL fails before the progress display opens
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

    chosen = baselines.choose(_url(), run_id, force=force, workload=workload, measure=measure)
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
        _url(), run, threshold=threshold, confidence=confidence, workload=workload
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

    holder = locks.running(_url())
    if holder:
        err.print(f"note: a rollout is running ({holder}): {why}", markup=False)


def _summary(url: str) -> None:
    from stage4.config import settings
    from stage4.rollout import status as state

    _print_where(state.summary(url, settings()))


def _print_where(info: dict) -> None:
    """The database, its revision and the table's rows (``status.summary``'s keys)."""
    from stage4.config import settings

    table, rows = settings().qualified_table, info["rows"]
    out.print(f"database: {info['database']}")
    out.print(f"revision: {info['revision'] or '(none)'}")
    out.print(f"{table}: {'absent' if rows is None else f'{rows} rows'}")


def main() -> None:
    """Console-script entry: one line per error, exit code from the error class."""
    try:
        app(standalone_mode=True)
    except BrokenPipeError:  # stdout closed outside a command (`stage4 --help | head`)
        _stdout_gone()
        sys.exit(1)
    except Stage4Error as e:  # raised outside a command (the group translates the rest)
        if _state["debug"]:
            _traceback(e)
        else:
            _fail(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("FAILED: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
