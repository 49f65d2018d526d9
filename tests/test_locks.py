"""Lock contention: a step that cannot get its lock fails fast, names the blocker, leaves
nothing half-done, and succeeds when retried after the blocker is gone."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.catalog import snapshot
from stage4.cli import app
from stage4.errors import MigrationError
from stage4.plumbing import locks, migrations

INSERT = (
    "INSERT INTO geometrias (nome, categoria, data_referencia, geom) "
    "VALUES ('b', 'escola', '2023-01-01', 'SRID=4326;POINT(0 0)')"
)
# An app write in an open transaction (no nextval: the snapshot after its rollback is exact).
UPDATE = "UPDATE geometrias SET descricao = 'blocked' WHERE id = 7"
RETRY = (
    "retry when it has finished, or raise the lock timeout "
    "(stage4 upgrade --lock-timeout 30s, stage4 downgrade --lock-timeout 30s, "
    "alembic -x lock_timeout=30s)"
)


def _snap(url: str) -> dict:
    # A snapshot must never queue behind a blocker: fail the test instead of hanging it.
    with psycopg.connect(url, options="-c lock_timeout=10s") as conn:
        return snapshot.take(conn)


def _blocker(url: str, sql: str) -> psycopg.Connection:
    """A session with an open transaction, named so the message can be checked."""
    conn = psycopg.connect(url, application_name="blocking-app")
    conn.execute(sql)
    return conn


def _expected(verb: str, target: str, pid: int, state: str, mode: str) -> re.Pattern:
    head = (
        f"{verb} to {target} failed and was rolled back: lock timeout (1s) waiting for a "
        f"lock on public.geometrias, held by pid {pid} (blocking-app as postgres, {state} for "
    )
    return re.compile(re.escape(head) + r"\d+" + re.escape(f" s, holds {mode}); {RETRY}"))


class TestUpgradeBlocked:
    @pytest.mark.slow
    @pytest.mark.parametrize(
        ("sql", "mode"),
        [
            (UPDATE, "RowExclusiveLock"),
            ("LOCK TABLE geometrias IN ACCESS EXCLUSIVE MODE", "AccessExclusiveLock"),
        ],
        ids=["row-exclusive", "access-exclusive"],
    )
    def test_fails_fast_names_pid_then_succeeds(self, seeded_url: str, sql: str, mode: str):
        before = _snap(seeded_url)
        blocker = _blocker(seeded_url, sql)
        pid = blocker.info.backend_pid
        try:
            started = time.monotonic()
            with pytest.raises(MigrationError) as e:
                migrations.upgrade(seeded_url, "opt1", lock_timeout="1s")
            took = time.monotonic() - started
            assert _expected("upgrade", "opt1", pid, "idle in transaction", mode).fullmatch(
                str(e.value)
            ), str(e.value)
            assert 1.0 <= took < 8, took
        finally:
            blocker.rollback()
            blocker.close()
        assert migrations.current(seeded_url) == "schema"
        after = _snap(seeded_url)
        assert after == before, "\n".join(snapshot.diff(before, after))
        migrations.upgrade(seeded_url, "opt1", lock_timeout="1s")
        assert migrations.current(seeded_url) == "opt1"

    @pytest.mark.slow
    def test_in_a_session_the_next_step_runs_after_a_timeout(self, seeded_url: str) -> None:
        """A failed step leaves a shared connection clean: the retry in the same session works."""
        with migrations.session(seeded_url):
            blocker = _blocker(seeded_url, "LOCK TABLE geometrias IN ACCESS EXCLUSIVE MODE")
            try:
                with pytest.raises(MigrationError, match="lock timeout"):
                    migrations.upgrade(seeded_url, "opt1", lock_timeout="1s")
            finally:
                blocker.rollback()
                blocker.close()
            assert migrations.current(seeded_url) == "schema"
            migrations.upgrade(seeded_url, "opt1", lock_timeout="1s")
        assert migrations.current(seeded_url) == "opt1"

    @pytest.mark.slow
    def test_in_a_session_each_step_gets_its_timeout(self, seeded_url: str) -> None:
        """env.py sets the timeouts once per pooled connection: a changed timeout, and a new
        connection (the old one was killed), get them set again. Were either skipped, the
        blocked step would wait for the blocker's release (15 s) and succeed."""
        with migrations.session(seeded_url):
            migrations.upgrade(seeded_url, "opt1", lock_timeout="30s")
            for kill_first in (False, True):
                if kill_first:
                    with psycopg.connect(seeded_url, autocommit=True) as conn:
                        conn.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'stage4-alembic'"
                        )
                blocker = _blocker(seeded_url, "LOCK TABLE geometrias IN ACCESS EXCLUSIVE MODE")
                release = threading.Timer(15, blocker.rollback)
                release.start()
                try:
                    started = time.monotonic()
                    with pytest.raises(MigrationError, match="lock timeout"):
                        migrations.upgrade(seeded_url, "opt2", lock_timeout="1s")
                    assert time.monotonic() - started < 8
                finally:
                    release.cancel()
                    blocker.rollback()
                    blocker.close()
            assert migrations.current(seeded_url) == "opt1"

    def test_blocker_already_gone_says_retry(self, seeded_url: str) -> None:
        """A lock timeout whose holder has finished by the time we look: say so, no pid."""
        from stage4.plumbing import locks

        assert locks.explain_timeout(seeded_url, "1s", "LOCK TABLE public.geometrias") == (
            "lock timeout (1s) waiting for a lock on public.geometrias; the session that held "
            "it has finished since: retry"
        )

    @pytest.mark.slow
    def test_active_holder_shows_its_state(self, seeded_url: str) -> None:
        """A blocker running a long statement (not idle) is reported as active."""
        from stage4.plumbing import locks

        conn = psycopg.connect(seeded_url, application_name="blocking-app", autocommit=True)
        try:
            conn.execute("SET statement_timeout = '20s'")
            t = threading.Thread(
                target=lambda: _swallow(conn, "SELECT pg_sleep(3) FROM geometrias LIMIT 1")
            )
            t.start()
            deadline = time.monotonic() + 10
            with psycopg.connect(seeded_url, autocommit=True) as probe:
                while time.monotonic() < deadline:
                    found = locks.holders(probe, ["public.geometrias"])
                    if found and found[0][2] == "active":
                        break
                    time.sleep(0.05)
            assert found[0][0] == conn.info.backend_pid
            assert found[0][1:3] == ("blocking-app as postgres", "active")
            assert "AccessShareLock" in found[0][4]
            t.join()
        finally:
            conn.close()


def _swallow(conn: psycopg.Connection, sql: str) -> None:
    conn.execute(sql)


class TestDowngradeBlocked:
    @pytest.mark.slow
    def test_cli_downgrade_names_pid_then_succeeds(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt1")
        blocker = _blocker(seeded_url, INSERT)  # locks the parent and the 2023 partition
        pid = blocker.info.backend_pid
        before = _snap(seeded_url)
        runner = CliRunner()
        try:
            result = runner.invoke(
                app, ["--database-url", seeded_url, "downgrade", "--lock-timeout", "1s"]
            )
            assert result.exit_code == 1, result.output
            failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
            assert len(failed) == 1, result.stderr
            assert _expected(
                "downgrade", "schema", pid, "idle in transaction", "RowExclusiveLock"
            ).fullmatch(failed[0].removeprefix("FAILED: ")), failed[0]
            assert "Traceback" not in result.stderr
            assert migrations.current(seeded_url) == "opt1"
            after = _snap(seeded_url)
            assert after == before, "\n".join(snapshot.diff(before, after))
        finally:
            blocker.commit()
            blocker.close()
        result = runner.invoke(
            app, ["--database-url", seeded_url, "downgrade", "--lock-timeout", "1s"]
        )
        assert result.exit_code == 0, result.output
        assert "opt1: rolled back in " in result.stdout
        assert migrations.current(seeded_url) == "schema"

    @pytest.mark.parametrize("verb", ["downgrade", "upgrade"])
    def test_bad_lock_timeout_is_refused_before_connecting(self, verb: str) -> None:
        result = CliRunner().invoke(
            app,
            [
                "--database-url",
                "postgresql://nobody@127.0.0.1:1/none",
                verb,
                "--lock-timeout",
                "soon",
            ],
        )
        assert result.exit_code == 2
        assert result.stderr == (
            "FAILED: lock timeout 'soon' is not a duration: use e.g. 5s, 500ms, 2min "
            "(0 waits forever)\n"
        )


# --------------------------------------------------------------------------- one rollout at a time
BUSY = re.compile(
    r"FAILED: another rollout is running on public\.geometrias: pid (\d+) \(([^)]*)\) "
    r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; wait for it to finish \(`stage4 status` shows it\)"
)


def _stage4(url: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "stage4"), "--database-url", url, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lock_sessions_all(url: str) -> dict[int, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(
            conn.execute(
                "SELECT pid, application_name FROM pg_stat_activity "
                "WHERE application_name LIKE 'stage4%%' AND datname = current_database()"
            ).fetchall()
        )


def _lock_sessions(url: str) -> dict[int, str]:
    return {p: a for p, a in _lock_sessions_all(url).items() if a.startswith("stage4 ")}


class TestOneRolloutAtATime:
    @pytest.mark.slow
    def test_two_upgrades_started_together_one_is_refused_naming_the_other(
        self, seeded_url: str, tmp_path: Path
    ) -> None:
        args = (
            "upgrade",
            "--to",
            "opt1",
            "--no-backup",
            "--reports-dir",
            str(tmp_path),
            "--iterations",
            "3",
            "--concurrency",
            "1",
            "--duration",
            "1",
        )
        first, second = (_stage4(seeded_url, *args, cwd=tmp_path) for _ in range(2))
        seen: dict[int, str] = {}
        while first.poll() is None or second.poll() is None:
            seen |= _lock_sessions(seeded_url)
            time.sleep(0.05)
        done = {p: p.communicate(timeout=60) for p in (first, second)}
        refused = [p for p in done if p.returncode == 1]
        assert len(refused) == 1, {p.returncode: e for p, (_, e) in done.items()}
        (ran,) = set(done) - set(refused)
        errors = done[ran][1]
        assert ran.returncode in (0, 3), errors  # GO or NO-GO: judged, not failed
        failed = [x for x in errors.splitlines() if x.startswith("FAILED")]
        assert all(x.startswith("FAILED: NO-GO at opt1") for x in failed), errors
        assert "baseline already exists" not in errors and "deadlock" not in errors
        line = done[refused[0]][1].strip()
        match = BUSY.fullmatch(line)
        assert match, line
        assert match.group(2) == "stage4 upgrade --to opt1"
        assert seen.get(int(match.group(1))) == "stage4 upgrade --to opt1", (seen, line)
        with psycopg.connect(seeded_url) as conn:  # one baseline, measured once
            assert (
                conn.execute(
                    "SELECT count(*) FROM benchmarking.runs WHERE label = 'BASELINE'"
                ).fetchone()[0]
                == 1
            )

    @pytest.mark.slow
    def test_alembic_and_stage4_downgrade_are_refused_during_a_rollout(
        self, seeded_url: str, tmp_path: Path
    ) -> None:
        migrations.upgrade(seeded_url, "opt1")
        root = Path(__file__).resolve().parents[1]
        with locks.rollout_lock(seeded_url, "upgrade --to opt3"):
            (holder,) = [
                p for p, a in _lock_sessions(seeded_url).items() if a == "stage4 upgrade --to opt3"
            ]
            alembic = subprocess.run(
                [sys.executable, "-m", "alembic", "-x", f"url={seeded_url}", "downgrade", "-1"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            stage4 = _stage4(seeded_url, "downgrade", "-1", cwd=tmp_path)
            _, stage4_err = stage4.communicate(timeout=120)
            # the holder's own process runs Alembic on another connection: not refused
            migrations.upgrade(seeded_url, "opt2")
            migrations.downgrade(seeded_url, "opt1")
        assert alembic.returncode != 0
        failed = [x for x in alembic.stderr.splitlines() if x.startswith("FAILED")]
        assert len(failed) == 1 and "Traceback" not in alembic.stderr, (
            alembic.stdout + alembic.stderr
        )
        for line in (failed[0], stage4_err.strip()):
            match = BUSY.fullmatch(line)
            assert match, line
            assert (int(match.group(1)), match.group(2)) == (holder, "stage4 upgrade --to opt3")
        assert stage4.returncode == 1
        assert migrations.current(seeded_url) == "opt1"
        # released: the next one runs
        migrations.downgrade(seeded_url, "schema")
        assert migrations.current(seeded_url) == "schema"

    @pytest.mark.slow
    def test_an_alembic_command_holds_the_lock_while_it_runs(
        self, seeded_url: str, tmp_path: Path
    ) -> None:
        """An Alembic run (here paused inside opt1's copy) refuses a stage4 rollout."""
        paused, release = threading.Event(), threading.Event()

        def progress(what: str, done: int, total: int) -> None:
            if what == "copy" and 0 < done < total:
                paused.set()
                release.wait(60)

        t = threading.Thread(
            target=migrations.upgrade,
            args=(seeded_url, "opt1"),
            kwargs={"progress": progress, "batch_rows": 200},
        )
        t.start()
        try:
            assert paused.wait(60)
            (alembic_pid,) = [
                p for p, a in _lock_sessions_all(seeded_url).items() if a == "stage4-alembic"
            ]
            refused = _stage4(seeded_url, "baseline", cwd=tmp_path)
            _, errors = refused.communicate(timeout=120)
        finally:
            release.set()
            t.join(60)
        assert refused.returncode == 1
        match = BUSY.fullmatch(errors.strip())
        assert match, errors
        assert (int(match.group(1)), match.group(2)) == (alembic_pid, "stage4-alembic")
        assert migrations.current(seeded_url) == "opt1"
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            assert locks.rollout_holder(conn) is None  # released at the end

    @pytest.mark.slow
    def test_bench_runs_beside_a_rollout_and_says_so(self, seeded_url: str, tmp_path: Path):
        with locks.rollout_lock(seeded_url, "upgrade --to opt2"):
            (pid,) = [
                p for p, a in _lock_sessions(seeded_url).items() if a == "stage4 upgrade --to opt2"
            ]
            assert locks.running(seeded_url) is None  # the holder's own process: no note
            bench = _stage4(
                seeded_url,
                "bench",
                "--iterations",
                "1",
                "--concurrency",
                "1",
                "--duration",
                "1",
                cwd=tmp_path,
            )
            _, errors = bench.communicate(timeout=300)
            status = subprocess.run(
                [
                    str(Path(sys.executable).parent / "stage4"),
                    "--database-url",
                    seeded_url,
                    "status",
                    "--reports-dir",
                    str(tmp_path),
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        assert bench.returncode == 0, errors
        assert status.returncode == 0, status.stderr
        assert re.search(
            rf"^rollout running: pid {pid} \(stage4 upgrade --to opt2\) since \S+ \S+ UTC$",
            status.stdout,
            re.M,
        ), status.stdout
        notes = [x for x in errors.splitlines() if x.startswith("note:")]
        assert len(notes) == 1, errors
        assert re.fullmatch(
            rf"note: a rollout is running \(pid {pid} \(stage4 upgrade --to opt2\) since "
            r"\S+ \S+ UTC\): its load skews these timings",
            notes[0],
        ), notes[0]
        assert locks.running(seeded_url) is None
