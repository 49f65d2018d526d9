"""The ``stage4`` app: its command groups, the global options, and the edge where errors
become one line and an exit code. No SQL here; the commands live beside it."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from stage4.errors import Stage4Error


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
            if options["debug"]:
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


# The global options (--database-url, --debug), as the callback received them.
options: dict[str, object] = {"url": None, "debug": False}


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
    options["url"] = database_url
    options["debug"] = debug


def target_url() -> str:
    from stage4.plumbing.db import resolve_url

    url = resolve_url(options["url"])  # type: ignore[arg-type]
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


def print_summary(url: str) -> None:
    from stage4.config import settings
    from stage4.rollout import status as state

    print_where(state.summary(url, settings()))


def print_where(info: dict) -> None:
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
        if options["debug"]:
            _traceback(e)
        else:
            _fail(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("FAILED: interrupted")
        sys.exit(130)
