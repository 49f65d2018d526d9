"""Connections: which database to work on (the given URL, ``DATABASE_URL`` or the embedded
cluster), one place that opens them and turns driver errors into one clear line, and the
session a judgement lends to each of its checks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from stage4.config import check_url, explicit_url, redact, settings, sqlalchemy_url
from stage4.errors import ConnectError

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import Engine


def where(url: str) -> str:
    """``user@host:port/db`` for messages: never the password."""
    p = urlsplit(check_url(url))
    return f"{p.username or ''}@{p.hostname or 'localhost'}:{p.port or 5432}{p.path}"


def resolve_url(url: str | None = None, *, start_embedded: bool = True) -> str:
    """The database to work on: the given URL, ``DATABASE_URL``, or the embedded cluster."""
    given = explicit_url(url)
    if given:
        return given
    from stage4.plumbing import cluster

    embedded = cluster.Cluster.from_settings(settings())
    if start_embedded:
        embedded.ensure_started()
    return embedded.url()


def explain(url: str, err: Exception) -> str:
    """A one-line reason for a failed connection, with the password removed."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^connection failed: ", "", text)
    text = re.sub(r'^connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed: ', "", text)
    text = re.sub(r"^(FATAL|ERROR):\s+", "", text)  # the server's severity adds nothing here
    return redact(f"cannot connect to {where(url)}: {text}")


def connect(url: str, *, autocommit: bool = False, **kw) -> psycopg.Connection:
    """psycopg 3 connection; a failure becomes ConnectError with a redacted message."""
    import psycopg

    url = check_url(url)
    kw.setdefault("connect_timeout", 10)
    kw.setdefault("application_name", "stage4")
    try:
        return psycopg.connect(url, autocommit=autocommit, **kw)
    except psycopg.OperationalError as e:
        raise ConnectError(explain(url, e)) from None


class Session:
    """One connection lent in turn to each check of a judgement (its promises, who sees
    what, freshness, plans), instead of a URL that each check reconnects with.

    Each loan sets the connection as the check expects (autocommit or not, prepared
    statements or not) and ends as ``with connect(...)`` would: committed, or rolled back
    when the check raised; the connection stays open for the next one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def lend(
        self, *, autocommit: bool = False, prepare_threshold: int | None = 5
    ) -> Iterator[psycopg.Connection]:
        from psycopg.pq import TransactionStatus

        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, autocommit=True)
        conn = self._conn
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.rollback()  # a loan that ended inside a transaction it opened itself
        conn.autocommit = autocommit
        conn.prepare_threshold = prepare_threshold
        try:
            yield conn
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        if not autocommit:
            conn.commit()


@contextmanager
def lend(db: str | Session, *, autocommit: bool = False, **kw) -> Iterator[psycopg.Connection]:
    """A connection for one piece of work: the session's when given one (a judgement's),
    else a new one on the URL, closed after."""
    if isinstance(db, Session):
        with db.lend(autocommit=autocommit, **kw) as conn:
            yield conn
    else:
        with connect(db, autocommit=autocommit, **kw) as conn:
            yield conn


def engine(url: str, **kw) -> Engine:
    """A SQLAlchemy engine on psycopg 3 (used by Alembic)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    kw.setdefault("poolclass", NullPool)
    connect_args = {"connect_timeout": 10, "application_name": "stage4-alembic"}
    return create_engine(sqlalchemy_url(url), connect_args=connect_args, **kw)
