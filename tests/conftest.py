"""Real-database fixtures: a PostGIS + pg_cron server for the session, a fresh database per test.

The server is a testcontainers container when a Docker engine answers (and
``STAGE4_TEST_DOCKER`` is not ``0``), otherwise a throwaway local cluster
(initdb + pg_ctl in a temporary folder). The header of the run says which.
Nothing is mocked and nothing is skipped: when no server can be had, every
test that needs one fails with the way to get one.

The one place for two more: a seeded database dressed as Supabase dresses a project
(``supabase_url``, its SQL in fixtures_supabase.py) and test-only revisions in a copy of
the script folder (``chain``, each file's source from ``revision``).
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import socket
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from fixtures_supabase import SUPABASE
from stage4.config import settings
from stage4.plumbing import migrations
from stage4.plumbing.cluster import PACKAGES, Cluster

TEMPLATE = "stage4_template"
SEEDED = "stage4_seeded"
CRON_DB = "stage4_cron"
SEED_FEATURES = 2000
# Gate options for tests about something else than speed: a short bench, no backup, and a
# margin no step can miss.
ANY_SPEED = {
    "backup": False,
    "iterations": 3,
    "concurrency": 1,
    "duration": 2.0,
    "threshold": 100.0,
    "min_delta_ms": 100_000.0,
}
_counter = itertools.count()


@dataclass
class Server:
    """Where the tests' databases live; ``url(db)`` connects as the superuser."""

    kind: str
    base_url: str
    cron: bool
    stop: object = None

    def url(self, database: str) -> str:
        # the local cluster's URL ends in ?passfile=… (its password file): keep the query
        return urlunsplit(urlsplit(self.base_url)._replace(path="/" + database))

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url("postgres"), autocommit=True)


@functools.cache
def _docker_answers() -> bool:
    """Does a Docker engine answer on its socket? (Checked by hand: the docker client leaks
    its socket when no engine listens, which filterwarnings=error turns into a failure.)"""
    if os.environ.get("STAGE4_TEST_DOCKER") == "0":
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        try:
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
        except OSError:
            return False


def _container_server() -> Server:
    from testcontainers.postgres import PostgresContainer

    image = os.environ.get("STAGE4_TEST_IMAGE", "supabase/postgres:15.8.1.085")
    pg = PostgresContainer(image, username="postgres", password="postgres", dbname="postgres")
    pg.start()
    url = pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
    return Server("testcontainers " + image, url, cron=True, stop=pg.stop)


def _local_server(tmp: Path) -> Server:
    cluster = Cluster(home=tmp / "cluster", database="postgres", cron_database=CRON_DB)
    cluster.ensure_started()
    cron = "pg_cron" in (cluster.conf.read_text() if cluster.conf.exists() else "")
    # The cluster requires its password: libpq reads it from the cluster's password file,
    # named in PGPASSFILE for this process and the commands it runs, so the tests' URLs stay
    # plain (they add query parameters and swap database names).
    os.environ["PGPASSFILE"] = str(cluster.passfile)
    url = cluster.url().split("?", 1)[0]
    return Server(f"local cluster {cluster.home} (initdb + pg_ctl, scram-sha-256)", url, cron,
                  stop=cluster.destroy)  # fmt: skip


def _create_db(server: Server, name: str, template: str = "template0") -> None:
    with server.admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The session's PostgreSQL server, with a PostGIS template and a seeded template."""
    # Not pytest's tmp_path: as root the server runs as `postgres`, which must be able
    # to enter the folder (pytest's is private to root).
    tmp = Path(tempfile.mkdtemp(prefix="stage4-tests-"))
    tmp.chmod(0o755)
    try:
        srv = _container_server() if _docker_answers() else _local_server(tmp)
    except Exception as e:  # no silent skip: say how to get a database
        pytest.fail(
            f"no PostgreSQL + PostGIS server for the tests ({e}). Install the server packages "
            f"(apt-get install {PACKAGES}) or start a Docker engine.",
            pytrace=False,
        )
    print(f"\n[stage4 tests] database server: {srv.kind}")
    _create_db(srv, TEMPLATE)
    with psycopg.connect(srv.url(TEMPLATE), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    _create_db(srv, SEEDED, TEMPLATE)
    from stage4.plumbing import seed

    migrations.upgrade(srv.url(SEEDED), "schema")
    with psycopg.connect(srv.url(SEEDED)) as conn:
        seed.seed(conn, settings(), features=SEED_FEATURES, seed=42)
    yield srv
    if callable(srv.stop):
        srv.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "supabase(sql): how `supabase_url` dresses the database (default SUPABASE)"
    )


def pytest_report_header(config: pytest.Config) -> str:
    kind = "testcontainers (Docker engine answers)" if _docker_answers() else "local cluster"
    return f"stage4 database fixture: {kind}"


def _fresh_db(server: Server, prefix: str, template: str) -> Iterator[str]:
    """A database copied from ``template`` for one test, dropped after it."""
    name = f"{prefix}{next(_counter)}_{os.getpid()}"
    _create_db(server, name, template)
    yield server.url(name)
    with server.admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(server: Server) -> Iterator[str]:
    """A fresh, empty database with PostGIS available (not yet at any revision)."""
    yield from _fresh_db(server, "t", TEMPLATE)


@pytest.fixture
def seeded_url(server: Server) -> Iterator[str]:
    """A fresh database at revision ``schema`` holding SEED_FEATURES seeded rows."""
    yield from _fresh_db(server, "s", SEEDED)


@pytest.fixture
def supabase_url(seeded_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh seeded database dressed as Supabase dresses a project
    (``fixtures_supabase.SUPABASE``), or by the SQL of the test's ``supabase`` mark."""
    mark = request.node.get_closest_marker("supabase")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(mark.args[0] if mark else SUPABASE)
    return seeded_url


def revision(name: str, down: str, upgrade: str, downgrade: str, head: str = "") -> str:
    """The source of a test-only revision file: ``upgrade`` and ``downgrade`` are their
    bodies (``op``, ``settings`` and ``functions`` in scope), ``head`` module-level lines
    after the revision ids (a declaration)."""

    def body(code: str) -> str:
        return textwrap.indent(textwrap.dedent(code).strip("\n"), "    ")

    return (
        f'"""Test-only: {name}."""\nfrom alembic import op\n\n'
        "from stage4.config import settings\nfrom stage4.ddl import functions\n\n"
        f'revision = "{name}"\ndown_revision = "{down}"\n' + (f"{head}\n" if head else "") + "\n\n"
        f"def upgrade() -> None:\n{body(upgrade)}\n\n\n"
        f"def downgrade() -> None:\n{body(downgrade)}\n"
    )


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """``chain(**files)``: Alembic runs a copy of alembic/ holding ``schema`` and these
    test-only revision files (name -> source, see ``revision``); the real chain stays
    untouched. Called again, the copy is made afresh."""
    real = migrations._script_location()

    def install(**files: str) -> Path:
        dst = tmp_path / "alembic"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(real, dst, ignore=shutil.ignore_patterns("__pycache__", "opt*"))
        for name, source in files.items():
            (dst / "versions" / f"{name}.py").write_text(source)
        monkeypatch.setattr(migrations, "_script_location", lambda: dst)
        migrations.chain.cache_clear()
        return dst

    yield install
    migrations.chain.cache_clear()


@pytest.fixture
def cron_url(server: Server) -> Iterator[str]:
    """The one database where pg_cron runs (cron.database_name), fresh, seeded, at ``schema``."""
    if not server.cron:
        pytest.fail("pg_cron is not preloaded in the test server: apt-get install "
                    "postgresql-15-cron", pytrace=False)  # fmt: skip
    _create_db(server, CRON_DB, SEEDED)
    with psycopg.connect(server.url(CRON_DB), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    yield server.url(CRON_DB)


@pytest.fixture
def alembic_config():
    """pytest-alembic: our alembic.ini and script folder."""
    # pytest-alembic walks down to base: let `schema` drop the seeded test table.
    return migrations.config(force=True)


@pytest.fixture
def alembic_engine(seeded_url: str):
    """pytest-alembic: an engine on a fresh seeded database (it runs from base)."""
    from stage4.plumbing.db import engine

    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("DROP TABLE stage4.alembic_version")
    eng = engine(seeded_url)
    yield eng
    eng.dispose()
