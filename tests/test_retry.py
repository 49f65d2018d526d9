"""Lock timeouts that retry: a lock held 4 s is outlasted with a 1 s lock timeout, each wait
told with the blocker's pid and query; with no retries the step fails at once, as before."""

from __future__ import annotations

import random
import re
import threading
import time

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.cli import app
from stage4.errors import ConfigError
from stage4.plumbing import migrations, retry
from stage4.rollout import gate

INSERT = (
    "INSERT INTO geometrias (nome, categoria, data_referencia, geom) "
    "VALUES ('b', 'escola', '2023-01-01', 'SRID=4326;POINT(0 0)')"
)
UPDATE = "UPDATE geometrias SET descricao = 'blocked' WHERE id = 7"
HELD = 4.0


def _retried(what: str, pid: int, query: str) -> re.Pattern:
    """One wait's line: the step, the try, the blocker's pid, state and query, the wait."""
    return re.compile(
        re.escape(f"{what}: lock timeout on try ")
        + r"\d of 6, "
        + re.escape(f"blocked by pid {pid} (blocking-app as postgres, idle in transaction for ")
        + r"\d+"
        + re.escape(f" s, holds RowExclusiveLock), last query {query!r}; retrying in ")
        + r"\d+\.\d s"
    )


class _Held:
    """A session holding a lock (an open write) for HELD seconds, then rolling back."""

    def __init__(self, url: str, sql: str) -> None:
        self.conn = psycopg.connect(url, application_name="blocking-app")
        self.conn.execute(sql)
        self.pid = self.conn.info.backend_pid
        self.timer = threading.Timer(HELD, self.conn.rollback)

    def __enter__(self) -> _Held:
        self.timer.start()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.timer.join()
        self.conn.rollback()
        self.conn.close()


class TestBackoff:
    def test_doubles_with_jitter_up_to_the_cap(self) -> None:
        rng = random.Random(7)
        for attempt in range(8):
            full = min(retry.CAP_SECONDS, retry.BASE_SECONDS * 2**attempt)
            waits = [retry.backoff(attempt, rng) for _ in range(50)]
            assert all(full / 2 <= w <= full for w in waits), (attempt, waits)
            assert len(set(waits)) == 50  # jittered: no two deploys wake in step

    def test_negative_retries_are_refused(self) -> None:
        with pytest.raises(ConfigError, match="lock retries must be 0 or more, not -1"):
            retry.on_lock_timeout(lambda: None, url="x", what="upgrade to opt1", retries=-1)


class TestDowngrade:
    @pytest.mark.slow
    def test_cli_outlasts_a_lock_held_4s(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt1")
        with _Held(seeded_url, INSERT) as held:
            result = CliRunner().invoke(
                app, ["--database-url", seeded_url, "downgrade", "--lock-timeout", "1s"]
            )
            took = time.monotonic() - held.started
        assert result.exit_code == 0, result.output
        assert migrations.current(seeded_url) == "schema"
        assert took >= HELD - 0.5, took  # it did wait for the blocker
        waits = [line for line in result.stderr.splitlines() if "lock timeout on try" in line]
        assert waits, result.stderr
        for line in waits:
            assert _retried("rollback to schema", held.pid, INSERT).search(line), line
        assert "opt1: rolled back in " in result.stdout

    @pytest.mark.slow
    def test_no_retries_fails_at_once_with_the_blocker(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt1")
        with _Held(seeded_url, INSERT) as held:
            result = CliRunner().invoke(
                app,
                [
                    "--database-url",
                    seeded_url,
                    "downgrade",
                    "--lock-timeout",
                    "1s",
                    "--lock-retries",
                    "0",
                ],
            )
            took = time.monotonic() - held.started
        assert result.exit_code == 1, result.output
        assert took < HELD, took
        assert "lock timeout on try" not in result.stderr
        failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
        assert len(failed) == 1, result.stderr
        assert failed[0].startswith(
            "FAILED: downgrade to schema failed and was rolled back: lock timeout (1s) waiting "
            f"for a lock on public.geometrias, held by pid {held.pid} (blocking-app as postgres, "
        ), failed[0]
        assert migrations.current(seeded_url) == "opt1"


class TestGate:
    @pytest.mark.slow
    def test_an_upgrade_step_outlasts_the_lock_and_notes_the_waits(self, seeded_url) -> None:
        rec = gate.StepRecord("opt1")
        told: list[tuple[str, str]] = []
        with _Held(seeded_url, UPDATE) as held:
            gate._timed_upgrade(
                seeded_url, rec, None, "1s", 5, lambda step, text: told.append((step, text))
            )
        assert migrations.current(seeded_url) == "opt1"
        waits = [n for n in rec.notes if "lock timeout on try" in n]
        assert waits and [text for _, text in told] == waits
        assert {step for step, _ in told} == {"opt1"}
        for line in waits:
            assert _retried("upgrade to opt1", held.pid, UPDATE).fullmatch(line), line

    @pytest.mark.slow
    def test_the_gate_rollback_outlasts_the_lock(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt1")
        rec = gate.StepRecord("opt1")
        opts = gate.GateOptions(lock_timeout="1s")
        with _Held(seeded_url, INSERT) as held:
            gate._roll_back(seeded_url, [rec], opts, lambda step, text: None)
        assert migrations.current(seeded_url) == "schema"
        waits = [n for n in rec.notes if "lock timeout on try" in n]
        assert waits, rec.notes
        for line in waits:
            assert _retried("rollback to schema", held.pid, INSERT).fullmatch(line), line

    @pytest.mark.slow
    def test_no_retries_in_the_gate_fails_at_once(self, seeded_url: str) -> None:
        from stage4.errors import MigrationError

        rec = gate.StepRecord("opt1")
        with _Held(seeded_url, UPDATE) as held, pytest.raises(MigrationError) as e:
            gate._timed_upgrade(seeded_url, rec, None, "1s", 0)
        assert time.monotonic() - held.started < HELD
        assert str(e.value).startswith(
            "upgrade to opt1 failed and was rolled back: lock timeout (1s) waiting for a lock "
            f"on public.geometrias, held by pid {held.pid} "
        )
        assert migrations.current(seeded_url) == "schema"
