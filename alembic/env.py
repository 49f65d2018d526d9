"""Alembic environment for stage4.

The URL comes from ``-x url=...``, a Connection or Engine handed in through
``config.attributes["connection"]`` (stage4's CLI, pytest-alembic), then
``DATABASE_URL``, then the embedded cluster. Each revision runs in its own
transaction with a ``lock_timeout`` (fail fast rather than queue behind the app)
and a ``statement_timeout``; ``--sql`` renders the same statements offline.

Settings are values, never SQL: each is checked as a duration and reaches the server
as a literal (``set_config``). Run from the ``alembic`` command line, a bad setting or
URL and a refused connection end in one ``FAILED:`` line (password hidden), like stage4.
"""

from __future__ import annotations

import sys

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from stage4.config import check_duration, redact, settings, sqlalchemy_url
from stage4.errors import Stage4Error
from stage4.plumbing import livewrites, version_table
from stage4.plumbing.locks import alembic_guard
from stage4.plumbing.migrations import SETTINGS_KEY

config = context.config
xargs = context.get_x_argument(as_dictionary=True)
# the alembic command line (not stage4, not pytest-alembic) has no one to turn errors into a line
FROM_ALEMBIC_CLI = hasattr(config.cmd_opts, "cmd")


def _setting(name: str) -> str:
    given = xargs.get(name)
    if given is not None:
        return check_duration(name, given, where="-x")
    return check_duration(name, config.attributes.get(name) or getattr(settings(), name))


def _session_settings() -> dict[str, str]:
    return {name: _setting(name) for name in ("lock_timeout", "statement_timeout")}


def _set_config(name: str, value: str):
    return text(f"SELECT set_config('{name}', :value, false)").bindparams(value=value)


def run_migrations_offline() -> None:
    """Render SQL for review (``alembic upgrade schema --sql``); no database needed."""
    session = _session_settings()
    url = xargs.get("url") or "postgresql+psycopg://offline@localhost/offline"
    context.configure(
        url=sqlalchemy_url(url),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
        version_table_schema=settings().own_schema,
    )
    with context.begin_transaction():
        for name, value in session.items():
            context.execute(_set_config(name, value))
        for statement in version_table.create_schema_sql():
            context.execute(statement)
        context.run_migrations()


def _run(connection: Connection, session: dict[str, str]) -> None:
    # One rollout at a time: `alembic downgrade -1` during a stage4 rollout is refused
    # (a stage4 process that holds the lock says so in the attributes).
    with alembic_guard(connection, config.attributes.get("rollout_lock_held", False)):
        _migrate(connection, session)


def _migrate(connection: Connection, session: dict[str, str]) -> None:
    # A pooled connection (stage4's multi-step session) keeps them from the last step:
    # its info is cleared when the pool replaces the connection.
    if connection.info.get(SETTINGS_KEY) != session:
        for name, value in session.items():
            connection.execute(_set_config(name, value))
        connection.commit()
        connection.info[SETTINGS_KEY] = dict(session)
    _own_version_table(connection)
    context.configure(
        connection=connection,
        transaction_per_migration=True,
        version_table_schema=settings().own_schema,
    )
    with context.begin_transaction():
        context.run_migrations()
    # The step's own writes to the app table (a copy, a backfill) reach the statistics
    # before this returns, not in the window stage4 counts the app's writes in.
    livewrites.flush(connection)
    connection.commit()


def _own_version_table(connection: Connection) -> None:
    """The version table in stage4's own schema; one moved from ``public`` is said."""
    before = connection.exec_driver_sql(
        f"SELECT to_regclass('{version_table.legacy()}') IS NOT NULL "
        f"AND to_regclass('{version_table.qualified()}') IS NULL"
    ).scalar()
    for statement in version_table.ensure_sql():
        connection.exec_driver_sql(statement)
    connection.commit()
    if before:
        print(
            f"moved {version_table.legacy()} to {version_table.qualified()}, out of the API's "
            f"reach (to put it back: {version_table.move_back()})",
            file=sys.stderr,
        )


def run_migrations_online() -> None:
    session = _session_settings()
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given, session)
        return
    if isinstance(given, Engine):
        with given.connect() as connection:
            _run(connection, session)
        return
    from stage4.plumbing.db import engine, resolve_url

    url = resolve_url(xargs.get("url"))
    eng = engine(url)
    try:
        try:
            connection = eng.connect()
        except Exception as e:  # the driver's error, as one redacted line
            from stage4.errors import ConnectError
            from stage4.plumbing.db import explain

            raise ConnectError(explain(url, getattr(e, "orig", None) or e)) from None
        with connection:
            _run(connection, session)
    finally:
        eng.dispose()


def _main() -> None:
    if context.is_offline_mode():
        run_migrations_offline()
    else:
        run_migrations_online()


if FROM_ALEMBIC_CLI:
    try:
        _main()
    except Stage4Error as e:
        text_ = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"FAILED: {redact(text_)}\n")
        raise SystemExit(e.exit_code) from None
else:
    _main()
