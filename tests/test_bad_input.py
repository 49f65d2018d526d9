"""Bad input: each refusal is one ``FAILED: …`` line on stderr, a non-zero exit code, no
traceback, and nothing changed in the database.

Most go through ``stage4.cli.app`` with Typer's CliRunner (the app translates errors
itself); a few run ``python -m stage4.cli`` in a real process to prove no traceback
reaches the terminal.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.cli import app
from stage4.config import settings
from stage4.plumbing import migrations
from stage4.rollout import preflight

SRC = Path(__file__).resolve().parents[1] / "src"
ROLE, PASSWORD = "stage4_pw", "Pw-7d1e-correct"


@pytest.fixture(scope="module")
def role(server) -> str:
    """A login role with a password (scram over 127.0.0.1 on the test server)."""
    with server.admin() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    return ROLE


def _as(url: str, user: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://{user}:{password}@", 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], **env: str):
    return CliRunner().invoke(app, args, env=env or None)


def _failed(result, code: int) -> str:
    """The one FAILED line (after any progress lines), checked for exit code and no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED: ")]
    assert len(failed) == 1, result.stderr
    assert result.stderr.rstrip("\n").endswith(failed[0]), "the error is the last line"
    return failed[0].removeprefix("FAILED: ")


def _sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def _upgrade(url: str, tmp: Path, *extra: str, **env: str):
    return _run(
        [
            "--database-url",
            url,
            "upgrade",
            "--to",
            "opt1",
            "--no-backup",
            "--reports-dir",
            str(tmp / "reports"),
            *extra,
        ],
        **env,
    )


class TestConnection:
    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            (
                "mysql://u:secret@h/db",
                "'mysql://u:***@h/db': expected postgresql://user@host:port/dbname",
            ),
            ("postgresql://u@localhost:port/db", "'postgresql://u@localhost:port/db': bad port"),
            ("postgresql://u@localhost:5432", "'postgresql://u@localhost:5432': no database name"),
        ],
        ids=["scheme", "port", "no-db"],
    )
    def test_malformed_url(self, url: str, reason: str) -> None:
        assert _failed(_run(["--database-url", url, "status"]), 2) == (
            f"malformed database URL {reason}"
        )

    def test_wrong_password(self, role: str, seeded_url: str) -> None:
        url = _as(seeded_url, role, "not-the-password")
        host = url.split("@", 1)[1].split("?")[0]  # messages name no query (passfile)
        assert _failed(_run(["--database-url", url, "status"]), 1) == (
            f'cannot connect to {role}@{host}: password authentication failed for user "{role}"'
        )

    def test_unreachable_host(self) -> None:
        port = _free_port()
        url = f"postgresql://postgres@127.0.0.1:{port}/biblioteca"
        assert _failed(_run(["--database-url", url, "status"]), 1) == (
            f"cannot connect to postgres@127.0.0.1:{port}/biblioteca: Connection refused"
        )

    @pytest.mark.slow
    def test_real_process_prints_one_line(self, role: str, seeded_url: str) -> None:
        """Through the console entry point: one line on stderr, exit code, no traceback."""
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        env.pop("DATABASE_URL", None)
        cases = [
            (
                ["--database-url", _as(seeded_url, role, "nope"), "status"],
                1,
                "password authentication failed",
            ),
            (["--database-url", seeded_url, "upgrade", "--to", "opt9"], 2, "unknown target 'opt9'"),
            (["--database-url", "mysql://x@h/db", "plan"], 2, "malformed database URL"),
        ]
        for args, code, words in cases:
            done = subprocess.run(
                [sys.executable, "-m", "stage4.cli", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == code, done
            assert "Traceback" not in done.stderr
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert lines[-1].startswith("FAILED: ") and words in lines[-1], done.stderr
            assert [line for line in lines if line.startswith("FAILED")] == lines[-1:]


class TestTargets:
    @pytest.mark.parametrize(
        "args",
        [["upgrade", "--to", "opt9"], ["plan", "--to", "opt9"], ["downgrade", "--to", "opt9"]],
        ids=["upgrade", "plan", "downgrade"],
    )
    def test_unknown_target_lists_valid_ones(self, seeded_url: str, args: list[str]) -> None:
        valid = ", ".join(migrations.chain())
        assert _failed(_run(["--database-url", seeded_url, *args]), 2) == (
            f"unknown target 'opt9': valid revisions are {valid}, head (= opt5)"
        )
        assert migrations.current(seeded_url) == "schema"

    @pytest.mark.parametrize("args", [["downgrade", "--to", "base"], ["downgrade", "-1"]])
    def test_downgrade_below_schema_with_data_is_refused(
        self, seeded_url: str, args: list[str]
    ) -> None:
        assert _failed(_run(["--database-url", seeded_url, *args]), 1) == (
            "refusing to drop public.geometrias: it holds 2000 rows (back it up, then run "
            "`alembic -x force=1 downgrade base` to drop it anyway)"
        )
        assert migrations.current(seeded_url) == "schema"
        _sql(seeded_url, "SELECT 1 FROM geometrias LIMIT 1")


REFUSED = "pre-flight refused (nothing was changed): "


class TestPreflight:
    """Refusals of ``stage4 upgrade`` before anything is changed (pre-flight runs first)."""

    def _refused(self, url: str, tmp: Path, **env: str) -> str:
        reason = _failed(_upgrade(url, tmp, **env), 1)
        assert migrations.current(url) == "schema"
        assert not (tmp / "reports").exists(), "a refused upgrade writes no report folder"
        return reason

    @pytest.mark.slow
    def test_postgis_not_installed_in_this_database(self, seeded_url: str, tmp_path: Path):
        _sql(seeded_url, "DROP EXTENSION postgis CASCADE")  # the server still has it
        assert self._refused(seeded_url, tmp_path) == REFUSED + (
            "postgis: the postgis extension is not installed in this database "
            "(CREATE EXTENSION postgis); table contract: column geom is missing"
        )

    @pytest.mark.slow
    def test_missing_column(self, seeded_url: str, tmp_path: Path) -> None:
        _sql(seeded_url, "ALTER TABLE geometrias DROP COLUMN categoria")
        assert self._refused(seeded_url, tmp_path) == REFUSED + (
            "table contract: column categoria is missing"
        )

    @pytest.mark.slow
    def test_wrong_column_type(self, seeded_url: str, tmp_path: Path) -> None:
        _sql(seeded_url, "ALTER TABLE geometrias ALTER COLUMN data_referencia TYPE timestamp")
        assert self._refused(seeded_url, tmp_path) == REFUSED + (
            "table contract: column data_referencia is timestamp without time zone, expected date"
        )

    def test_null_and_invalid_geometries(self, seeded_url: str, tmp_path: Path) -> None:
        _sql(
            seeded_url,
            "ALTER TABLE geometrias ALTER COLUMN geom DROP NOT NULL",
            "UPDATE geometrias SET geom = NULL WHERE id = 5",
            "UPDATE geometrias SET geom = 'SRID=4326;POLYGON((0 0,1 1,1 0,0 1,0 0))' WHERE id = 9",
        )
        assert self._refused(seeded_url, tmp_path) == REFUSED + (
            "geometries: 1 NULL and 1 invalid geometries (first id 5): fill or delete the NULL "
            "ones and repair the invalid ones (UPDATE … SET geom = ST_MakeValid(geom) WHERE NOT "
            "ST_IsValid(geom)) before migrating"
        )

    def test_mixed_srids(self, seeded_url: str, tmp_path: Path) -> None:
        _sql(
            seeded_url,
            "ALTER TABLE geometrias ALTER COLUMN geom TYPE geometry",
            "UPDATE geometrias SET geom = ST_SetSRID(geom, 3857) WHERE id IN (3, 4)",
        )
        assert self._refused(seeded_url, tmp_path) == REFUSED + (
            "SRID: mixed SRIDs [3857, 4326]; every geometry must be SRID 4326"
        )

    def test_dates_far_outside(self, seeded_url: str, tmp_path: Path) -> None:
        _sql(
            seeded_url,
            "UPDATE geometrias SET data_referencia = '1850-06-01' WHERE id = 3",
            "UPDATE geometrias SET data_referencia = '2500-01-01' WHERE id = 4",
        )
        assert self._refused(seeded_url, tmp_path) == REFUSED + (
            "dates: 2 rows dated outside 1900–2199 (from 1850-06-01 to 2500-01-01): "
            "fix the data first"
        )

    def test_disk_too_small(self, seeded_url: str, tmp_path: Path) -> None:
        reason = self._refused(seeded_url, tmp_path, STAGE4_FREE_BYTES="1000")
        assert re.fullmatch(
            re.escape(REFUSED + "disk: the migration copies the table (")
            + r"\d+ (MB|kB)\) and needs ~\d+ (MB|kB)"
            + re.escape(" free on the database server's disk, which has 1 kB: free space first"),
            reason,
        ), reason

    def test_zero_rows_allowed_but_said(self, seeded_url: str) -> None:
        _sql(seeded_url, "DELETE FROM geometrias")
        with psycopg.connect(seeded_url) as conn:
            p = preflight.run(conn, settings(), steps=["opt1"])
        assert p.failures == []
        assert (
            "[warn] feature count: the table is empty: the benchmark will measure an empty "
            "workload" in [c.line() for c in p.checks]
        )
        p.raise_for_failures()  # allowed
        result = _run(["--database-url", seeded_url, "status"])
        assert result.exit_code == 0
        assert "public.geometrias: 0 rows" in result.stdout

    def test_parallel_worker_start_is_measured_and_said(self, seeded_url: str) -> None:
        """Said before opt1 (never fatal), measured on the connection, setting put back."""
        with psycopg.connect(seeded_url) as conn:
            p = preflight.run(conn, settings(), steps=["opt1"])
            [check] = [c for c in p.checks if c.name == "parallel workers"]
            assert re.fullmatch(r"one worker starts in \d+\.\d ms.*", check.detail), check.detail
            assert p.facts["parallel_worker_ms"] > 0  # a worker always costs something
            assert check.ok == (p.facts["parallel_worker_ms"] <= preflight.SLOW_WORKER_MS)
            assert check not in p.failures
            assert conn.execute("SHOW force_parallel_mode").fetchone()[0] == "off"
            conn.execute("SET max_parallel_workers_per_gather = 0")
            p = preflight.run(conn, settings(), steps=["opt1"])
            assert (
                "[ok] parallel workers: parallel queries are off "
                "(max_parallel_workers_per_gather = 0)" in [c.line() for c in p.checks]
            )
            p = preflight.run(conn, settings(), steps=["opt2"])
            assert "parallel workers" not in [c.name for c in p.checks]


class TestBackupDir:
    def test_not_writable(self, seeded_url: str, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        target = blocker / "backups"  # a folder under a file: never writable, even as root
        result = _run(
            [
                "--database-url",
                seeded_url,
                "upgrade",
                "--to",
                "opt1",
                "--backup-dir",
                str(target),
                "--reports-dir",
                str(tmp_path / "r"),
            ]
        )
        assert _failed(result, 1) == (
            f"backup directory {target} is not writable (Not a directory); "
            "pass --backup-dir DIR or --no-backup"
        )
        assert migrations.current(seeded_url) == "schema"
