"""pytest-alembic's standard checks on a seeded database, and the chain's shape."""

from __future__ import annotations

import psycopg
import pytest
from pytest_alembic.tests import (  # noqa: F401 - collected as tests
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from stage4.plumbing import migrations


def test_chain_is_linear_with_the_mission_ids() -> None:
    chain = migrations.chain()
    assert chain[0] == "schema"
    assert chain == ["schema", "opt1", "opt2", "opt3", "opt4", "opt5"][: len(chain)]


def test_fast_chain_agrees_with_alembic() -> None:
    assert migrations.chain() == migrations.alembic_chain()


def test_every_revision_renders_offline_sql() -> None:
    sql = migrations.offline_sql("upgrade", f"base:{migrations.chain()[-1]}")
    for rev in migrations.chain():
        assert f"-> {rev}" in sql


@pytest.mark.slow
def test_alembic_command_line_works_as_alembic_users_expect(seeded_url: str) -> None:
    """`alembic upgrade`, `current`, `history`, `downgrade -1` from the README, for real."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def alembic(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"url={seeded_url}", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    alembic("upgrade", "opt1")
    assert "opt1" in alembic("current")
    assert "schema -> opt1" in alembic("history")
    alembic("downgrade", "-1")
    assert migrations.current(seeded_url) == "schema"


@pytest.mark.slow
def test_stage4_downgrade_checks_rows_and_promises(seeded_url: str) -> None:
    from typer.testing import CliRunner

    from stage4.cli import app

    migrations.upgrade(seeded_url, "opt2")
    result = CliRunner().invoke(app, ["--database-url", seeded_url, "downgrade", "-1"])
    assert result.exit_code == 0, result.output
    assert "opt2: rolled back in" in result.stdout
    assert "every row kept; verified: public.geometrias is partitioned by range" in result.stdout
    assert migrations.current(seeded_url) == "opt1"
    result = CliRunner().invoke(app, ["--database-url", seeded_url, "downgrade", "--to", "schema"])
    assert result.exit_code == 0, result.output
    assert migrations.current(seeded_url) == "schema"


def _alembic_backends(url: str) -> list[tuple]:
    """(pid, state, holds a snapshot or xid) of stage4's Alembic connections to ``url``."""
    from stage4.plumbing.db import connect

    with connect(url) as conn:
        return conn.execute(
            "SELECT pid, state, backend_xid IS NOT NULL OR backend_xmin IS NOT NULL "
            "FROM pg_stat_activity WHERE application_name = 'stage4-alembic' "
            "AND datname = current_database()"
        ).fetchall()


def test_a_session_runs_every_step_on_one_idle_connection(seeded_url: str) -> None:
    """One connection for a multi-step rollout/rollback, holding no transaction between steps;
    the VACUUM after a step runs on it too, in autocommit, and leaves it transactional."""
    from stage4.plumbing.db import connect

    with migrations.session(seeded_url):
        assert list(migrations.upgrade(seeded_url, "opt1")) == ["geometrias"]  # vacuumed
        first = _alembic_backends(seeded_url)
        assert [(state, busy) for _, state, busy in first] == [("idle", False)]
        with connect(seeded_url) as conn:  # its last statement
            sql = "SELECT query FROM pg_stat_activity WHERE pid = %s"
            assert conn.execute(sql, (first[0][0],)).fetchone()[0].startswith("VACUUM (ANALYZE)")
        with migrations._SESSIONS[seeded_url][0].connect() as conn:  # the pool's only one
            assert conn.connection.driver_connection.autocommit is False
            # the VACUUM ran without the step's timeouts; the next step sets them again
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
        migrations.upgrade(seeded_url, "opt2")
        with migrations._SESSIONS[seeded_url][0].connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "5s"
        migrations.downgrade(seeded_url, "schema")
        assert _alembic_backends(seeded_url) == first  # same pid: not reconnected
        assert migrations.current(seeded_url) == "schema"
    assert _alembic_backends(seeded_url) == []


def test_a_session_reconnects_when_the_server_dropped_its_connection(seeded_url: str) -> None:
    """An idle connection killed between steps (idle_session_timeout, a failover, a DBA)
    does not fail the next step: the session pings it and connects again."""
    from stage4.plumbing.db import connect

    with migrations.session(seeded_url):
        migrations.upgrade(seeded_url, "opt1")
        [(pid, _, _)] = _alembic_backends(seeded_url)
        with connect(seeded_url) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        migrations.upgrade(seeded_url, "opt2")
        assert [p for p, _, _ in _alembic_backends(seeded_url)] not in ([], [pid])
    assert migrations.current(seeded_url) == "opt2"


class TestDowngradeReach:
    """`stage4 downgrade -N` / `--to REV` out of reach: refused before any change, the
    reachable range in the message (Alembic refuses `downgrade -5` up front too)."""

    def _refused(self, url: str, *args: str, code: int) -> str:
        from typer.testing import CliRunner

        from stage4.cli import app

        before = _content(url)
        result = CliRunner().invoke(app, ["--database-url", url, "downgrade", *args])
        assert result.exit_code == code, result.output
        assert result.stdout == "" and result.stderr.count("\n") == 1, result.output
        assert migrations.current(url) == "opt3" and _content(url) == before
        return result.stderr.removeprefix("FAILED: ").rstrip("\n")

    def test_past_base_is_refused_with_the_range(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt3")
        assert self._refused(seeded_url, "-5", code=2) == (
            "downgrade -5 from opt3: past base; `stage4 downgrade` reaches -1 … -3 "
            "(opt2 … schema), nothing was changed"
        )

    def test_below_schema_with_rows_is_refused_with_the_range(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt3")
        expected = (
            "refusing to drop public.geometrias: it holds 2000 rows (back it up, then run "
            "`alembic -x force=1 downgrade base` to drop it anyway); `stage4 downgrade` "
            "reaches -1 … -3 (opt2 … schema), nothing was changed"
        )
        assert self._refused(seeded_url, "-4", code=1) == expected
        assert self._refused(seeded_url, "--to", "base", code=1) == expected

    def test_a_target_above_the_current_revision_is_refused(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt3")
        assert self._refused(seeded_url, "--to", "opt4", code=2) == (
            "downgrade --to opt4 from opt3: opt4 is not below opt3; `stage4 downgrade` "
            "reaches -1 … -3 (opt2 … schema), nothing was changed"
        )

    def test_within_reach_goes_there(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt2")
        assert migrations.downgrade_target(seeded_url, 2) == "schema"
        assert migrations.downgrade_target(seeded_url, to="opt2") == "opt2"  # nothing to do
        with psycopg.connect(seeded_url) as conn:  # an empty table may go down to base
            conn.execute("TRUNCATE geometrias")
        assert migrations.downgrade_target(seeded_url, 3) == "base"


def _content(url: str) -> str:
    from stage4.config import settings
    from stage4.rollout import judging

    with psycopg.connect(url) as conn:
        return judging.rows_hash(conn, settings())


def test_the_alembic_folder_is_found_from_the_package_not_the_working_directory(
    tmp_path, monkeypatch
):
    migrations._script_location.cache_clear()
    monkeypatch.chdir(tmp_path)
    try:
        assert (migrations._script_location() / "env.py").is_file()
    finally:
        migrations._script_location.cache_clear()
