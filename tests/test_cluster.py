"""The embedded cluster: created, started, stopped and restarted with its data and port kept;
every connection authenticates with the generated password kept in ``pgpass``."""

from __future__ import annotations

import errno
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.cli import app
from stage4.errors import ClusterError
from stage4.plumbing.cluster import Cluster


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder the `postgres` user can enter (pytest's own is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="stage4-cluster-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_lifecycle_keeps_data_across_restart(tmp_path: Path) -> None:
    c = Cluster(home=tmp_path / "emb", database="lifecycle")
    assert c.status()["initialized"] is False
    c.ensure_started()
    try:
        assert c.running()
        with psycopg.connect(c.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (7)")
            libs = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            postgis = conn.execute(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'"
            ).fetchone()[0]
        assert "pg_cron" in libs
        assert postgis == 1
        port = c.port()
        c.stop()  # the server's connections linger in TIME_WAIT on its port
        assert not c.running()
        assert c.status()["running"] is False
        c.ensure_started()  # idempotent start, same port, same data
        assert c.port() == port
        with psycopg.connect(c.url()) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone()[0] == 7
    finally:
        c.destroy()
    assert not (tmp_path / "emb").exists()


@pytest.mark.slow
def test_url_names_loopback_database_and_password_file(tmp_path: Path) -> None:
    c = Cluster(home=tmp_path / "emb2", database="named")
    c.init()
    port, home = c.port(), tmp_path / "emb2"
    assert c.url() == f"postgresql://postgres@127.0.0.1:{port}/named?passfile={home}/pgpass"
    password = c.password()
    assert password and len(password) >= 30
    assert c.url(show_password=True) == f"postgresql://postgres:{password}@127.0.0.1:{port}/named"


def _login(c: Cluster, **kw) -> None:
    params = {
        "host": "127.0.0.1",
        "port": c.port(),
        "user": "postgres",
        "dbname": "postgres",
        "passfile": "/nonexistent",
        "connect_timeout": 10,
        **kw,
    }
    psycopg.connect(**params).close()


@pytest.mark.slow
def test_every_login_needs_the_password(tmp_path: Path) -> None:
    c = Cluster(home=tmp_path / "auth", database="auth")
    c.ensure_started()
    try:
        assert stat.S_IMODE(c.passfile.stat().st_mode) == 0o600
        assert stat.S_IMODE(c.run_dir.stat().st_mode) == 0o700
        hba = [
            ln
            for ln in (c.data / "pg_hba.conf").read_text().splitlines()
            if ln and not ln.startswith("#")
        ]
        assert hba == ["local all all scram-sha-256", "host all all 127.0.0.1/32 scram-sha-256"]
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            _login(c)  # over TCP, as the superuser, without a password
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            _login(c, host=str(c.run_dir))  # over the socket
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            _login(c, password="postgres")
        _login(c, password=c.password())
        _login(c, passfile=str(c.passfile))  # what the URL does
    finally:
        c.destroy()


@pytest.mark.slow
def test_a_trusting_cluster_from_an_older_stage4_is_converted(tmp_path: Path) -> None:
    """An existing ``.stage4/`` made with trust authentication: the next start gives the
    superuser a password, keeps it in pgpass, requires it, and says so."""
    said: list[str] = []
    c = Cluster(home=tmp_path / "old", database="old", notice=said.append)
    c.ensure_started()
    try:
        with psycopg.connect(c.url(), autocommit=True) as conn:  # make it as an older stage4 did
            conn.execute("ALTER ROLE postgres PASSWORD NULL")
            (c.data / "pg_hba.conf").write_text(
                "local all all trust\n"
                "host all postgres 127.0.0.1/32 trust\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
            )
            conn.execute("SELECT pg_reload_conf()")
        c.passfile.unlink()
        c.stop()
        c.ensure_started()
        assert said == [
            f"the embedded cluster in {c.home} now requires a password "
            f"(scram-sha-256), kept in {c.passfile}"
        ]
        assert stat.S_IMODE(c.passfile.stat().st_mode) == 0o600
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            _login(c)
        with psycopg.connect(c.url()) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"
    finally:
        c.destroy()


@pytest.mark.slow
def test_a_taken_port_is_replaced_and_said(tmp_path: Path) -> None:
    said: list[str] = []
    c = Cluster(home=tmp_path / "port", database="port", notice=said.append)
    c.ensure_started()
    old = c.port()
    c.stop()
    try:
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                squatter.bind(("127.0.0.1", old))
                squatter.listen()
            except OSError as e:  # another program took it first: the same case
                if e.errno != errno.EADDRINUSE:
                    raise
            c.ensure_started()
        new = c.port()
        assert new != old
        assert said == [
            f"port {old} is taken by another program: the embedded cluster now "
            f"listens on port {new} (stage4 db url prints the new URL)"
        ]
        with psycopg.connect(c.url()) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        c.destroy()


@pytest.mark.slow
def test_db_commands_show_port_size_and_hide_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGE4_HOME", str(tmp_path / "cli"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    c = Cluster(home=tmp_path / "cli")
    try:
        started = CliRunner().invoke(app, ["db", "start"])
        assert started.exit_code == 0, started.stderr
        password = c.password()
        status = CliRunner().invoke(app, ["db", "status"])
        lines = status.stdout.splitlines()
        assert f"port: {c.port()}" in lines
        size = next(ln for ln in lines if ln.startswith("size: "))
        assert size.endswith(" MB") and float(size.split()[1]) > 10  # an initdb'd cluster
        url = CliRunner().invoke(app, ["db", "url"])
        assert url.stdout.strip() == c.url()
        shown = CliRunner().invoke(app, ["db", "url", "--show-password"])
        assert shown.stdout.strip() == c.url(show_password=True)
        for result in (started, status, url):
            assert password not in result.stdout + result.stderr
        assert password in shown.stdout
        # `stage4 db stop`, then a command that starts it again: same port, nothing to say
        port = c.port()
        assert CliRunner().invoke(app, ["db", "stop"]).exit_code == 0
        again = CliRunner().invoke(app, ["db", "url"])
        assert again.exit_code == 0 and again.stderr == ""
        assert c.running() and c.port() == port and again.stdout.strip() == c.url()
    finally:
        c.destroy()


@pytest.mark.slow
def test_a_lost_password_file_is_one_clear_line(tmp_path: Path) -> None:
    c = Cluster(home=tmp_path / "lost", database="lost")
    c.ensure_started()
    try:
        c.passfile.unlink()
        with pytest.raises(ClusterError) as e:
            c.ensure_started()
        assert str(e.value) == (
            f"the embedded cluster in {c.home} refuses its password file {c.passfile} "
            f"(missing or replaced?); to start afresh: stage4 db stop && rm -rf {c.home}"
        )
    finally:
        c.destroy()
