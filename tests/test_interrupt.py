"""Interrupted migrations: a killed client or a terminated backend leaves the database exactly
at the previous revision, and the same migration then succeeds.

The migration runs in a child process whose ``progress`` callback, at the chosen phase
(after the first copy batch, or after the swap, just before commit), writes a marker file
and waits. The test then SIGKILLs the child, or terminates its server backend found by
``application_name = 'stage4-alembic'``, while the migration's transaction is open.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from stage4 import migrations, snapshot

SRC = Path(__file__).resolve().parents[1] / "src"
CHILD = """
import sys, time
from pathlib import Path
from stage4 import migrations
from stage4.errors import Stage4Error

url, verb, target, phase, marker = sys.argv[1:]
release = Path(marker + ".release")

def progress(what, done, total):
    if what == phase and 0 < done and (phase != "copy" or done < total):
        Path(marker).write_text(f"{what} {done}/{total}")
        while not release.exists():  # the transaction stays open meanwhile
            time.sleep(0.05)

try:
    getattr(migrations, verb)(url, target, progress=progress, batch_rows=200)
except Stage4Error as e:
    print(f"FAILED: {e}", file=sys.stderr)
    sys.exit(1)
"""


def _snap(url: str) -> dict:
    with psycopg.connect(url, options="-c lock_timeout=10s") as conn:
        return snapshot.take(conn)


def _migration_backends(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'stage4-alembic' "
            "AND datname = current_database()"
        )]  # fmt: skip


def _start(url: str, verb: str, target: str, phase: str, marker: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, verb, target, phase, str(marker)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists():
        if child.poll() is not None:
            pytest.fail(f"the {verb} finished before {phase}: {child.communicate()}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the {verb} never reached {phase}: {child.communicate()}")
        time.sleep(0.05)
    return child


def _wait_gone(url: str) -> None:
    deadline = time.monotonic() + 30
    while _migration_backends(url):
        assert time.monotonic() < deadline, "the migration's backend is still there"
        time.sleep(0.05)


def _interrupt(url: str, verb: str, target: str, phase: str, how: str, folder: Path) -> None:
    marker = folder / f"{verb}-{phase}-{how}"
    child = _start(url, verb, target, phase, marker)
    try:
        assert "/" in marker.read_text() or phase == "swap"
        (pid,) = _migration_backends(url)
        if how == "sigkill":
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
            assert child.returncode == -signal.SIGKILL
        else:
            with psycopg.connect(url, autocommit=True) as conn:
                assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
            Path(str(marker) + ".release").touch()
            _, stderr = child.communicate(timeout=60)
            assert child.returncode == 1, stderr
            assert "Traceback" not in stderr
            assert stderr.startswith(
                f"FAILED: {verb} to {target} failed and was rolled back: terminating connection "
                "due to administrator command"
            ), stderr
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    _wait_gone(url)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path


CASES = [("copy", "sigkill"), ("copy", "terminate"), ("swap", "sigkill"), ("swap", "terminate")]


@pytest.mark.parametrize(("phase", "how"), CASES, ids=[f"{p}-{h}" for p, h in CASES])
def test_interrupted_upgrade_leaves_schema_then_succeeds(
    seeded_url: str, folder: Path, phase: str, how: str
) -> None:
    before = _snap(seeded_url)
    _interrupt(seeded_url, "upgrade", "opt1", phase, how, folder)
    assert migrations.current(seeded_url) == "schema"
    after = _snap(seeded_url)
    assert after == before, "\n".join(snapshot.diff(before, after))
    migrations.upgrade(seeded_url, "opt1", batch_rows=200)
    assert migrations.current(seeded_url) == "opt1"
    assert _snap(seeded_url)["data"] == before["data"]


@pytest.mark.parametrize(("phase", "how"), CASES[:2], ids=[f"{p}-{h}" for p, h in CASES[:2]])
def test_interrupted_downgrade_leaves_opt1_then_succeeds(
    seeded_url: str, folder: Path, phase: str, how: str
) -> None:
    original = _snap(seeded_url)
    migrations.upgrade(seeded_url, "opt1", batch_rows=200)
    before = _snap(seeded_url)
    _interrupt(seeded_url, "downgrade", "schema", phase, how, folder)
    assert migrations.current(seeded_url) == "opt1"
    after = _snap(seeded_url)
    assert after == before, "\n".join(snapshot.diff(before, after))
    migrations.downgrade(seeded_url, "schema", batch_rows=200)
    assert migrations.current(seeded_url) == "schema"
    restored = _snap(seeded_url)
    assert restored == original, "\n".join(snapshot.diff(original, restored))
