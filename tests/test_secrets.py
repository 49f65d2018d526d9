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
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.cli import app
from stage4.config import settings
from stage4.errors import MigrationError, Stage4Error
from stage4.plumbing import migrations
from stage4.rollout import backup

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


@pytest.mark.slow
def test_cli_commands_never_print_the_password(secret_url: str, tmp_path: Path) -> None:
    base = ["--database-url", secret_url]
    assert _cli([*base, "status"]).exit_code == 0
    assert _cli([*base, "db", "url"]).exit_code == 0
    assert _cli([*base, "plan", "--to", "opt1"]).exit_code == 0
    assert _cli([*base, "downgrade", "--to", "base"]).exit_code == 1  # refused: holds rows
    assert _cli([*base, "upgrade", "--to", "opt9"]).exit_code == 2
    refused = _cli(
        [
            *base,
            "upgrade",
            "--to",
            "opt1",
            "--backup-dir",
            str(tmp_path / "b"),
            "--reports-dir",
            str(tmp_path / "r"),
        ],
        STAGE4_FREE_BYTES="1",
    )
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


@pytest.mark.slow
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
        done = subprocess.run(
            [sys.executable, "-m", "stage4.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        _clean(done.stdout, done.stderr)
    assert done.returncode != 0 and "Traceback" in done.stderr  # --debug did show one


@pytest.mark.slow
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
    # every row is in there, those RLS hides too: readable by us only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert _files_clean(tmp_path) == 1
    host = secret_url.split("@", 1)[1]
    with pytest.raises(Stage4Error) as e:
        backup.dump(f"postgresql://{ROLE}:{WRONG}@{host}", settings(), tmp_path / "b2", "x")
    assert "pg_dump failed" in str(e.value)
    _clean(str(e.value))
    assert _files_clean(tmp_path) == 1  # the failed dump left no file


@pytest.mark.slow
def test_a_full_gated_run_never_stores_the_password(secret_url: str, tmp_path: Path) -> None:
    """Every output of a gated rollout (stdout, stderr, report folder, backups, the
    benchmarking tables, the server's application names) is grepped for the password."""
    # --no-gate: every step benchmarked, compared and recorded, whatever the verdict (on
    # this kind of VM a parallel plan can make a query at opt1 ten times slower: a NO-GO
    # would stop the run before opt2)
    result = _cli(
        [
            "--database-url",
            secret_url,
            "upgrade",
            "--to",
            "opt2",
            "--no-gate",
            "--iterations",
            "3",
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--backup-dir",
            str(tmp_path / "backups"),
            "--reports-dir",
            str(tmp_path / "reports"),
        ]
    )
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


# ------------------------------------------------------------ malformed URLs
# Each carries "Secret" in its password: no output may contain that word, whole or in part.
MALFORMED = [
    "postgresql://postgres:Leak%zzSecret@127.0.0.1/db",  # bad percent-encoding
    "postgresql://postgres:Leak Secret9@127.0.0.1/db",  # a space
    "postgresql://postgres:Leak@Secret9@127.0.0.1/db",  # a second '@'
    "postgresql://postgres:Leak/Secret9@127.0.0.1/db",  # an unencoded '/'
    "postgresql://postgres:Leak?Secret9@127.0.0.1/db",  # an unencoded '?'
    "postgresql://postgres:Leak#Secret9@127.0.0.1/db",  # an unencoded '#'
    "postgresql://postgres:LeakSecret9@127.0.0.1:port/db",  # a bad port
    "mysql://postgres:LeakSecret9@127.0.0.1/db",  # an unknown scheme
    "postgresql://postgres:LeakSecret9@127.0.0.1",  # no database
]
# ':' in the password is well-formed (libpq splits at the first one): it reaches the server
COLON = "postgresql://postgres:Leak:Secret9@127.0.0.1:{port}/db"
COMMANDS = [
    ["status"],
    ["plan", "--to", "opt1"],
    ["upgrade", "--to", "opt1"],
    ["downgrade"],
    ["seed"],
    ["bench"],
    ["baseline"],
    ["compare"],
    ["refresh"],
    ["db", "url"],
    ["db", "url", "--show-password"],
]


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert "Secret" not in text, text


@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
@pytest.mark.parametrize("url", MALFORMED, ids=lambda u: u.split("Leak", 1)[1][:8])
def test_no_malformed_url_prints_its_password(url: str, debug: list[str]) -> None:
    """Every command's error path, with the URL as an option and in DATABASE_URL."""
    for command in COMMANDS:
        for args, env in (
            ([*debug, "--database-url", url, *command], {}),
            ([*debug, *command], {"DATABASE_URL": url}),
        ):
            result = CliRunner().invoke(app, args, env=env)
            _no_secret(result.stdout, result.stderr, repr(result.exception))
            assert result.exit_code == 2, (args, result.stdout, result.stderr)
            if debug:
                assert "Traceback" in result.stderr  # --debug shows one, redacted
            else:
                assert result.stderr.startswith("FAILED: malformed database URL '")
                assert len(result.stderr.strip().splitlines()) == 1


def test_a_colon_in_the_password_is_hidden_when_the_server_refuses() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = COLON.format(port=port)
    for debug in ([], ["--debug"]):
        result = CliRunner().invoke(app, [*debug, "--database-url", url, "status"])
        _no_secret(result.stdout, result.stderr)
        assert result.exit_code == 1
    assert result.stderr.count("Connection refused") >= 1


@pytest.mark.slow
def test_debug_in_a_real_process_prints_no_malformed_password() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("DATABASE_URL", None)
    for url in MALFORMED[:3]:
        done = subprocess.run(
            [sys.executable, "-m", "stage4.cli", "--debug", "--database-url", url, "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        _no_secret(done.stdout, done.stderr)
        assert done.returncode == 2 and "Traceback" in done.stderr


ROOT = SRC.parent


def _alembic(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line(done: subprocess.CompletedProcess) -> str:
    """alembic ended with exit code != 0 and exactly one line, a FAILED one, no traceback."""
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert done.returncode != 0, done
    assert len(lines) == 1 and lines[0].startswith("FAILED: "), done
    return lines[0].removeprefix("FAILED: ")


@pytest.mark.slow
@pytest.mark.parametrize(
    "url", [*MALFORMED, COLON.format(port=1)], ids=lambda u: u.split("Leak", 1)[1][:8]
)
def test_alembic_x_url_malformed(url: str) -> None:
    for args in (["current"], ["upgrade", "schema:opt1", "--sql"]):
        done = _alembic("-x", f"url={url}", *args)
        _no_secret(done.stdout, done.stderr)
        if "--sql" in args and "Leak:" in url:
            assert done.returncode == 0  # well-formed: offline SQL needs no server
            continue
        line = _one_line(done)
        assert line.startswith(("malformed database URL", "cannot connect to postgres@")), line


def test_alembic_wrong_password_is_one_line(role: str, seeded_url: str) -> None:
    host = seeded_url.split("@", 1)[1].split("?")[0]
    done = _alembic("-x", f"url=postgresql://{role}:{WRONG}@{host}", "current")
    _clean(done.stdout, done.stderr)
    assert _one_line(done) == (
        f'cannot connect to {role}@{host}: password authentication failed for user "{role}"'
    )


# ------------------------------------------------------------ settings are values
INJECTION = "5s'; create table public.injected(); select '1"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lock_timeout", "statement_timeout"])
def test_x_settings_cannot_inject_sql(name: str, seeded_url: str) -> None:
    for args in (["current"], ["upgrade", "schema:opt1", "--sql"]):
        done = _alembic("-x", f"url={seeded_url}", "-x", f"{name}={INJECTION}", *args)
        assert _one_line(done) == (
            f'-x {name} = "{INJECTION}" is not a duration: use e.g. 5s, 500ms, 2min (0 = no limit)'
        )
    with psycopg.connect(seeded_url) as conn:
        assert conn.execute("SELECT to_regclass('public.injected')").fetchone()[0] is None


@pytest.mark.slow
def test_x_settings_reach_sql_as_literals(seeded_url: str) -> None:
    """Valid values render as set_config literals offline and apply online."""
    done = _alembic("-x", "lock_timeout=2500ms", "upgrade", "schema:opt1", "--sql")
    assert done.returncode == 0, done.stderr
    assert "SELECT set_config('lock_timeout', '2500ms', false);" in done.stdout
    assert "SELECT set_config('statement_timeout', '0', false);" in done.stdout
    ok = _alembic("-x", f"url={seeded_url}", "-x", "lock_timeout=2500ms", "current")
    assert ok.returncode == 0, ok.stderr


def test_tool_stage4_settings_are_validated(tmp_path: Path) -> None:
    from stage4.config import settings as load
    from stage4.errors import ConfigError

    cases = {
        f'lock_timeout = "{INJECTION}"': f"[tool.stage4] lock_timeout = {INJECTION!r} is not a "
        "duration: use e.g. 5s, 500ms, 2min (0 = no limit)",
        'statement_timeout = "1 hour"': "[tool.stage4] statement_timeout = '1 hour' is not a "
        "duration: use e.g. 5s, 500ms, 2min (0 = no limit)",
        'srid = "4326); drop table x; --"': "[tool.stage4] srid = '4326); drop table x; --' is "
        "not a whole number",
        'database = "app\\"; drop"': "[tool.stage4] database = 'app\"; drop' is not a plain SQL "
        "identifier",
    }
    for i, (line, message) in enumerate(cases.items()):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "pyproject.toml").write_text(f"[tool.stage4]\n{line}\n")
        with pytest.raises(ConfigError) as e:
            load(folder)
        assert str(e.value) == message
