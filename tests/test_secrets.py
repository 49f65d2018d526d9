"""A password in the database URL never reaches stdout, stderr, error messages or files.

Runs the commands that work before the benchmark engine (status, plan, downgrade,
pre-flight refusals, connection failures, ``--debug`` tracebacks), a lock-timeout
failure, a real migration round trip and a backup, all with a URL carrying a password,
and greps everything they print or write.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from stage4 import backup, migrations
from stage4.cli import app
from stage4.config import settings
from stage4.errors import MigrationError, Stage4Error

SRC = Path(__file__).resolve().parents[1] / "src"
ROLE = "stage4_secret"
PASSWORD = "Zq8-secret-Pw%2Fx"  # %2F: a URL-encoded '/' must not leak decoded either
DECODED = "Zq8-secret-Pw/x"
WRONG = "Wr0ng-secret-Pw"


@pytest.fixture(scope="module")
def role(server) -> str:
    with server.admin() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{DECODED}'")
    return ROLE


@pytest.fixture
def secret_url(role: str, seeded_url: str) -> str:
    return seeded_url.replace("postgresql://postgres@", f"postgresql://{role}:{PASSWORD}@", 1)


def _clean(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, DECODED, WRONG):
            assert secret not in text, f"{secret!r} leaked in: {text}"


def _files_clean(folder: Path) -> int:
    """Every file name and content under ``folder`` is free of the password; how many files."""
    n = 0
    for path in folder.rglob("*"):
        _clean(str(path))
        if path.is_file():
            _clean(path.read_bytes().decode("latin-1"))
            n += 1
    return n


def _cli(args: list[str], **env: str):
    result = CliRunner().invoke(app, args, env=env or None)
    _clean(result.stdout, result.stderr, repr(result.exception))
    return result


def test_cli_commands_never_print_the_password(secret_url: str, tmp_path: Path) -> None:
    base = ["--database-url", secret_url]
    assert _cli([*base, "status"]).exit_code == 0
    assert _cli([*base, "db", "url"]).exit_code == 0
    assert _cli([*base, "plan", "--to", "opt1"]).exit_code == 0
    assert _cli([*base, "downgrade", "--to", "base"]).exit_code == 1  # refused: holds rows
    assert _cli([*base, "upgrade", "--to", "opt9"]).exit_code == 2
    refused = _cli([*base, "upgrade", "--to", "opt1", "--backup-dir", str(tmp_path / "b"),
                    "--reports-dir", str(tmp_path / "r")], STAGE4_FREE_BYTES="1")  # fmt: skip
    assert refused.exit_code == 1
    assert "pre-flight refused" in refused.stderr
    host = secret_url.split("@", 1)[1]
    wrong = _cli(["--database-url", f"postgresql://{ROLE}:{WRONG}@{host}", "status"])
    assert wrong.exit_code == 1 and "password authentication failed" in wrong.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = _cli(["--database-url", f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{port}/x", "status"])
    assert gone.exit_code == 1 and "Connection refused" in gone.stderr
    bad = _cli(["--database-url", f"mysql://{ROLE}:{PASSWORD}@h/db", "status"])
    assert bad.exit_code == 2 and ":***@" in bad.stderr
    assert _files_clean(tmp_path) == 0  # a refused upgrade writes nothing


def test_env_url_and_debug_tracebacks(secret_url: str) -> None:
    """DATABASE_URL, and ``--debug`` (which shows the traceback) in a real process."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "DATABASE_URL": secret_url}
    host = secret_url.split("@", 1)[1]
    runs = [
        ["status"],
        ["--debug", "downgrade", "--to", "base"],
        ["--debug", "--database-url", f"postgresql://{ROLE}:{WRONG}@{host}", "status"],
        ["--debug", "--database-url", f"mysql://{ROLE}:{PASSWORD}@h/db", "status"],
    ]
    for args in runs:
        done = subprocess.run([sys.executable, "-m", "stage4.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        _clean(done.stdout, done.stderr)
    assert done.returncode != 0 and "Traceback" in done.stderr  # --debug did show one


def test_migrations_and_their_failures(secret_url: str, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    migrations.upgrade(secret_url, "opt1")
    blocker = psycopg.connect(secret_url)
    try:
        blocker.execute("LOCK TABLE geometrias IN ACCESS SHARE MODE")
        blocker.execute("UPDATE geometrias SET descricao = 'x' WHERE id = 1")
        with pytest.raises(MigrationError) as e:
            migrations.downgrade(secret_url, "schema", lock_timeout="1s")
        _clean(str(e.value), repr(e.value), str(e.value.__cause__))
        assert "held by pid" in str(e.value)
    finally:
        blocker.rollback()
        blocker.close()
    migrations.downgrade(secret_url, "schema")
    out, err = capfd.readouterr()
    _clean(out, err, caplog.text)


def test_backup_file_and_its_failure(secret_url: str, tmp_path: Path) -> None:
    path = backup.dump(secret_url, settings(), tmp_path / "backups", "schema")
    assert path.stat().st_size > 0
    assert _files_clean(tmp_path) == 1
    host = secret_url.split("@", 1)[1]
    with pytest.raises(Stage4Error) as e:
        backup.dump(f"postgresql://{ROLE}:{WRONG}@{host}", settings(), tmp_path / "b2", "x")
    assert "pg_dump failed" in str(e.value)
    _clean(str(e.value))
    assert _files_clean(tmp_path) == 1  # the failed dump left no file


def test_a_full_gated_run_never_stores_the_password(secret_url: str, tmp_path: Path) -> None:
    """Every output of a gated rollout (stdout, stderr, report folder, backups, the
    benchmarking tables, the server's application names) is grepped for the password."""
    # --no-gate: every step benchmarked, compared and recorded, whatever the verdict (on
    # this kind of VM a parallel plan can make a query at opt1 ten times slower: a NO-GO
    # would stop the run before opt2)
    result = _cli(["--database-url", secret_url, "upgrade", "--to", "opt2", "--no-gate",
                   "--iterations", "3", "--concurrency", "2", "--duration", "1",
                   "--backup-dir", str(tmp_path / "backups"),
                   "--reports-dir", str(tmp_path / "reports")])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "REPORT.md" in result.stdout
    assert _files_clean(tmp_path / "reports") >= 5  # report, rollout, 3 METRICS, charts
    assert _files_clean(tmp_path / "backups") == 1
    with psycopg.connect(secret_url.replace(f"{ROLE}:{PASSWORD}", "postgres")) as conn:
        tables = conn.execute(
            "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM benchmarking.runs) t"
        ).fetchone()[0]
        _clean(tables)
        assert "stage4_secret@" in tables  # the runs do record who ran them, without the secret
