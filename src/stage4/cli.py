"""The ``stage4`` command line: parses, prints, exits. No SQL here.

Errors from the library arrive as Stage4Error and leave as one line on stderr
with a non-zero exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.console import Console

from stage4.errors import Stage4Error

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="The embedded PostgreSQL cluster under .stage4/.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)
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
    from stage4.config import resolve_url

    return resolve_url(_state["url"])  # type: ignore[arg-type]


# ------------------------------------------------------------------ db group
@db_app.command("start")
def db_start() -> None:
    """Create (if needed) and start the embedded cluster; print its URL.

    Example: stage4 db start
    """
    from stage4.cluster import Cluster
    from stage4.config import settings

    c = Cluster.from_settings(settings())
    c.ensure_started()
    out.print(c.url())


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster (its data stays in .stage4/)."""
    from stage4.cluster import Cluster
    from stage4.config import settings

    Cluster.from_settings(settings()).stop()
    err.print("embedded cluster stopped")


@db_app.command("status")
def db_status() -> None:
    """Say whether the embedded cluster exists and runs, and where."""
    from stage4.cluster import Cluster
    from stage4.config import settings

    for key, value in Cluster.from_settings(settings()).status().items():
        out.print(f"{key}: {value}")


@db_app.command("url")
def db_url() -> None:
    """Print the URL of the database stage4 would use (starting the cluster if needed)."""
    from stage4.config import redact

    out.print(redact(_url()))


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

    from stage4 import seed as seeding
    from stage4.config import settings
    from stage4.db import connect

    url = _url()
    if if_empty and not append:
        existing = seeding.existing_rows(url, settings())
        if existing:
            out.print(f"{settings().qualified_table} already holds {existing} rows: not seeding")
            return
    with connect(url) as conn, Progress(console=err, transient=True) as bar:
        task = bar.add_task("seeding", total=features)
        result = seeding.seed(
            conn, settings(), features=features, seed=seed_, append=append,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    out.print(
        f"seeded {result.inserted} features in {result.seconds:.1f} s "
        f"({result.total} rows in {settings().qualified_table})"
    )


# ------------------------------------------------------------------ migrations
@app.command()
def upgrade(
    to: Annotated[
        str, typer.Option("--to", help="Target revision (schema, opt1 … opt5, head).")
    ] = "head",
) -> None:
    """Upgrade one revision at a time up to --to, with a summary.

    Example: stage4 upgrade --to opt3
    """
    from stage4 import migrations

    url = _url()
    todo = migrations.steps(url, to)
    if not todo:
        out.print(f"already at {migrations.current(url)}: nothing to do")
        return
    for rev in todo:
        t0 = time.perf_counter()
        err.print(f"upgrading to {rev} …")
        migrations.upgrade(url, rev)
        out.print(f"{rev}: upgraded in {time.perf_counter() - t0:.2f} s")
    _summary(url)


@app.command(context_settings={"ignore_unknown_options": True})
def downgrade(
    relative: Annotated[str | None, typer.Argument(help="-1 (one step, the default).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Revision to go back to.")] = None,
) -> None:
    """Roll back: one revision (default, or -1), or down to --to.

    Example: stage4 downgrade -1
    """
    from stage4 import migrations
    from stage4.errors import ConfigError

    url = _url()
    now = migrations.current(url)
    if now is None:
        raise ConfigError("the database is at no revision: nothing to roll back")
    if to is None:
        n = 1 if relative in (None, "-1") else _relative(relative)
        revs = migrations.chain()
        index = revs.index(now) - n
        to = revs[index] if index >= 0 else "base"
    for rev in migrations.down_steps(url, to):
        t0 = time.perf_counter()
        err.print(f"rolling back {rev} …")
        migrations.downgrade(url, migrations.previous(rev))
        out.print(f"{rev}: rolled back in {time.perf_counter() - t0:.2f} s")
    _summary(url)


def _relative(text: str) -> int:
    from stage4.errors import ConfigError

    if not text.startswith("-") or not text[1:].isdigit() or int(text[1:]) < 1:
        raise ConfigError(f"downgrade takes -N (e.g. -1) or --to REV, not {text!r}")
    return int(text[1:])


@app.command()
def status() -> None:
    """Current revision, pending revisions and the table's row count (read-only)."""
    from stage4 import migrations

    url = _url()
    _summary(url)
    out.print(f"pending: {', '.join(migrations.steps(url, 'head')) or 'none'}")


@app.command()
def plan(
    to: Annotated[str, typer.Option("--to", help="Target revision.")] = "head",
    since: Annotated[
        str | None, typer.Option(help="Start revision (default: the database's current one).")
    ] = None,
) -> None:
    """Print the SQL each step and its rollback would run (offline; nothing is executed).

    Example: stage4 plan --to opt1 --since schema
    """
    from stage4 import migrations

    target = migrations.check_target(to)
    start = since if since is not None else (migrations.current(_url()) or "base")
    if start != "base":
        migrations.check_target(start)
    if start == target:
        out.print(f"-- already at {target}: nothing to plan")
        return
    out.print(f"-- upgrade {start} -> {target}", markup=False, highlight=False)
    out.print(migrations.offline_sql("upgrade", f"{start}:{target}"), markup=False,
              highlight=False)  # fmt: skip
    out.print(f"-- rollback {target} -> {start}", markup=False, highlight=False)
    out.print(migrations.offline_sql("downgrade", f"{target}:{start}"), markup=False,
              highlight=False)  # fmt: skip


@app.command()
def refresh() -> None:
    """Refresh every materialized view of the app schema (CONCURRENTLY where it can).

    What pg_cron does on a schedule after opt3/opt5; run it by hand where pg_cron is absent.
    Example: stage4 refresh
    """
    from stage4.refresh import refresh_all

    done = refresh_all(_url())
    if not done:
        out.print("no materialized views to refresh")
    for name, seconds in done:
        out.print(f"{name}: refreshed in {seconds:.2f} s")


def _summary(url: str) -> None:
    from stage4 import migrations
    from stage4.config import settings
    from stage4.db import connect, where

    s = settings()
    with connect(url) as conn:
        present = conn.execute("SELECT to_regclass(%s)", (s.qualified_table,)).fetchone()[0]
        rows = (
            conn.execute(f"SELECT count(*) FROM {s.qualified_table}").fetchone()[0]
            if present
            else None
        )
    out.print(f"database: {where(url)}")
    out.print(f"revision: {migrations.current(url) or '(none)'}")
    out.print(f"{s.qualified_table}: {'absent' if rows is None else f'{rows} rows'}")


def main() -> None:
    """Console-script entry: one line per error, exit code from the error class."""
    try:
        app(standalone_mode=True)
    except Stage4Error as e:
        if _state["debug"]:
            raise
        from stage4.config import redact

        err.print(f"FAILED: {redact(str(e))}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("FAILED: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
