"""Alembic environment for stage4.

The URL comes from ``-x url=...``, a Connection or Engine handed in through
``config.attributes["connection"]`` (stage4's CLI, pytest-alembic), then
``DATABASE_URL``, then the embedded cluster. Each revision runs in its own
transaction with a ``lock_timeout`` (fail fast rather than queue behind the app)
and a ``statement_timeout``; ``--sql`` renders the same statements offline.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection, Engine

from stage4.config import settings, sqlalchemy_url
from stage4.migrations import SETTINGS_KEY

config = context.config
xargs = context.get_x_argument(as_dictionary=True)
cfg = settings()
lock_timeout = (
    xargs.get("lock_timeout") or config.attributes.get("lock_timeout") or cfg.lock_timeout
)
statement_timeout = (
    xargs.get("statement_timeout")
    or config.attributes.get("statement_timeout")
    or cfg.statement_timeout
)
SESSION_SETTINGS = {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout}


def run_migrations_offline() -> None:
    """Render SQL for review (``alembic upgrade schema --sql``); no database needed."""
    url = xargs.get("url") or "postgresql+psycopg://offline@localhost/offline"
    context.configure(
        url=sqlalchemy_url(url),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        for name, value in SESSION_SETTINGS.items():
            context.execute(f"SET {name} = '{value}'")
        context.run_migrations()


def _run(connection: Connection) -> None:
    # A pooled connection (stage4's multi-step session) keeps them from the last step:
    # its info is cleared when the pool replaces the connection.
    if connection.info.get(SETTINGS_KEY) != SESSION_SETTINGS:
        for name, value in SESSION_SETTINGS.items():
            connection.exec_driver_sql(f"SET {name} = '{value}'")
        connection.commit()
        connection.info[SETTINGS_KEY] = dict(SESSION_SETTINGS)
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    if isinstance(given, Engine):
        with given.connect() as connection:
            _run(connection)
        return
    from stage4.config import resolve_url
    from stage4.db import engine

    eng = engine(resolve_url(xargs.get("url")))
    try:
        with eng.connect() as connection:
            _run(connection)
    finally:
        eng.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
