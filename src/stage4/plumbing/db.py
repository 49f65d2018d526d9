"""Connections: which database to work on (the given URL, ``DATABASE_URL`` or the embedded
cluster), and one place that opens them and turns driver errors into one clear line."""

from __future__ import annotations

import re
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


def engine(url: str, **kw) -> Engine:
    """A SQLAlchemy engine on psycopg 3 (used by Alembic)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    kw.setdefault("poolclass", NullPool)
    connect_args = {"connect_timeout": 10, "application_name": "stage4-alembic"}
    return create_engine(sqlalchemy_url(url), connect_args=connect_args, **kw)
