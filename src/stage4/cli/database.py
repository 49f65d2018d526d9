"""Commands for the database itself: the embedded cluster (``stage4 db``), sample data
(``seed``) and the hand-run refresh of the views."""

from __future__ import annotations

from typing import Annotated

import typer

from stage4.cli.app import app, db_app, err, options, out, target_url


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

    url = target_url()
    if show_password and not explicit_url(options["url"]):
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

    url = target_url()
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


@app.command()
def refresh() -> None:
    """Refresh every materialized view of the app schema (CONCURRENTLY where it can).

    What pg_cron does on a schedule after opt3/opt5; run it by hand where pg_cron is absent.
    Example: stage4 refresh
    """
    from stage4.plumbing.refresh import refresh_all

    done = refresh_all(target_url())
    if not done:
        out.print("no materialized views to refresh")
    for name, seconds in done:
        out.print(f"{name}: refreshed in {seconds:.2f} s")
