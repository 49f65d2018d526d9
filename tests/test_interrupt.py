"""Interrupted migrations: a killed client or a terminated backend leaves the database exactly
at the previous revision, and the same migration then succeeds.

The migration runs in a child process whose ``progress`` callback, at the chosen phase
(after the first copy batch, or after the swap, just before commit), writes a marker file
and waits. The test then SIGKILLs the child, or terminates its server backend found by
``application_name = 'stage4-alembic'``, while the migration's transaction is open.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from stage4.catalog import snapshot
from stage4.plumbing import migrations

SRC = Path(__file__).resolve().parents[1] / "src"
CHILD = """
import sys, time
from pathlib import Path
from stage4.plumbing import migrations
from stage4.errors import Stage4Error

url, verb, target, phase, marker = sys.argv[1:]
release = Path(marker + ".release")

def progress(what, done, total):
    if what == phase and 0 < done and (phase != "copy" or done < total):
        # written whole, then renamed: the test reads it as soon as the name exists
        Path(marker + ".tmp").write_text(f"{what} {done}/{total}")
        Path(marker + ".tmp").rename(marker)
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
        return [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'stage4-alembic' "
                "AND datname = current_database()"
            )
        ]


def _start(url: str, verb: str, target: str, phase: str, marker: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, verb, target, phase, str(marker)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- the gated rollout
# `stage4 upgrade` in a child process, interrupted (SIGINT or SIGTERM sent to it alone, as
# `kill` does; SIGKILL) when its progress on stderr shows the phase: the database ends at a
# judged revision, no pg_dump or pgbench is left, `stage4 status` agrees with the catalog.
STAGE4 = str(Path(sys.executable).parent / "stage4")
FAST = ("--iterations", "3", "--concurrency", "1", "--duration", "3")


class Rollout:
    def __init__(self, url: str, tmp: Path, *args: str) -> None:
        self.url, self.tmp = url, tmp
        self.proc = subprocess.Popen(
            [
                STAGE4,
                "--database-url",
                url,
                "upgrade",
                "--to",
                "opt1",
                "--reports-dir",
                str(tmp / "reports"),
                "--backup-dir",
                str(tmp / "backups"),
                *FAST,
                *args,
            ],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 180) -> None:
        """Until a stderr line holds ``text`` (off a terminal, a phase's line is printed when
        it ends, with its duration; a part of it, indented, when that part ends)."""
        deadline = time.monotonic() + timeout
        while not any(text in x for x in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.finish()
                pytest.fail(f"never saw {text!r}: {self.lines}")
            time.sleep(0.05)

    def in_benchmark(self) -> None:
        """Inside opt1's benchmark: its first part (fingerprints) is done, pgbench runs."""
        self.wait_for("opt1 checking results are fresh")
        start = next(i for i, x in enumerate(self.lines) if "opt1 checking results" in x)
        deadline = time.monotonic() + 120
        while not any("fingerprints" in x for x in self.lines[start:]):
            assert time.monotonic() < deadline and self.proc.poll() is None, self.lines
            time.sleep(0.02)

    def end(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        return self.finish()

    def finish(self) -> tuple[int, str]:
        """Wait for the end; (exit code, last stderr line); stdout in ``self.out``."""
        try:
            self.proc.wait(timeout=600)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join(30)
            self.out = self.proc.stdout.read()
            self.proc.stdout.close()
            self.proc.stderr.close()
        return self.proc.returncode, (self.lines or [""])[-1]


def _children(url: str) -> list[str]:
    """pg_dump / pgbench processes working on this test's database, wherever their parent."""
    where = re.escape(url.split("@", 1)[1].split("?", 1)[0])  # host:port/database
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(args[0].decode()).name in ("pg_dump", "pgbench") and any(
            re.search(rf"@{where}(\?|$)", a.decode()) for a in args
        ):
            found.append(b" ".join(args).decode())
    return found


def _no_children(url: str) -> None:
    deadline = time.monotonic() + 10  # a child killed by the kernel may take a moment
    while _children(url):
        assert time.monotonic() < deadline, _children(url)
        time.sleep(0.1)


def _status(url: str, tmp: Path) -> str:
    done = subprocess.run(
        [STAGE4, "--database-url", url, "status", "--reports-dir", str(tmp / "reports")],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _unjudged_line(rev: str) -> str:
    return (
        f"unjudged: {rev} applied, never judged (`stage4 upgrade` judges it, "
        "`stage4 downgrade` removes it)"
    )


def _judged_next(url: str, tmp: Path) -> None:
    """The next upgrade judges the unjudged step instead of saying "nothing to do"."""
    again = Rollout(url, tmp, "--no-backup")
    again.finish()
    out = again.out
    assert "nothing to do" not in out, out
    assert "judging it now" in "\n".join(again.lines), again.lines
    assert again.proc.returncode in (0, 3), again.lines  # GO or NO-GO: judged
    assert _unjudged_line("opt1") not in _status(url, tmp)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupted_benchmark_rolls_the_step_back(seeded_url: str, tmp_path: Path, sig) -> None:
    run = Rollout(seeded_url, tmp_path, "--no-backup")
    run.in_benchmark()
    code, last = run.end(sig)
    assert code == 130, "\n".join(run.lines)
    assert last == (
        "FAILED: interrupted during opt1 benchmarking: opt1 rolled back (not "
        "judged); the database is at schema"
    ), run.lines
    assert any(
        x.startswith("opt1 interrupted before it was judged: rolling back: ") for x in run.lines
    ), run.lines
    assert migrations.current(seeded_url) == "schema"
    _no_children(seeded_url)
    status = _status(seeded_url, tmp_path)
    assert "revision: schema" in status and "unjudged" not in status.split("last rollout")[0]
    assert "opt1: rolled back (interrupted before it was judged)" in status, status
    assert _unjudged_line("opt1") not in status


@pytest.mark.slow
def test_keep_unjudged_then_the_next_upgrade_judges_it(seeded_url: str, tmp_path: Path) -> None:
    run = Rollout(seeded_url, tmp_path, "--no-backup", "--keep-unjudged")
    run.in_benchmark()
    code, last = run.end(signal.SIGTERM)
    assert code == 130, "\n".join(run.lines)
    assert last == (
        "FAILED: interrupted during opt1 benchmarking: opt1 kept, not judged "
        "(--keep-unjudged): the next `stage4 upgrade` judges it; the database is "
        "at opt1"
    ), run.lines
    assert migrations.current(seeded_url) == "opt1"
    _no_children(seeded_url)
    status = _status(seeded_url, tmp_path)
    assert "revision: opt1" in status and _unjudged_line("opt1") in status, status
    _judged_next(seeded_url, tmp_path)


@pytest.mark.slow
def test_killed_during_the_benchmark_status_names_the_unjudged_step(
    seeded_url: str, tmp_path: Path
) -> None:
    run = Rollout(seeded_url, tmp_path, "--no-backup", "--duration", "8")
    run.in_benchmark()
    time.sleep(1.0)
    code, _ = run.end(signal.SIGKILL)
    assert code == -signal.SIGKILL
    _no_children(seeded_url)  # pgbench got SIGTERM when its parent died
    assert migrations.current(seeded_url) == "opt1"
    status = _status(seeded_url, tmp_path)
    assert "is gone: interrupted or killed" in status and _unjudged_line("opt1") in status, status
    _judged_next(seeded_url, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_interrupted_backup_leaves_no_pg_dump_and_no_file(
    seeded_url: str, tmp_path: Path, sig
) -> None:
    # pg_dump waits for a table of the schema that another session holds exclusively
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.side (id int)")
    blocker = psycopg.connect(seeded_url)
    blocker.execute("LOCK TABLE public.side IN ACCESS EXCLUSIVE MODE")
    try:
        run = Rollout(seeded_url, tmp_path)
        deadline = time.monotonic() + 60
        # the backup's dump (-Fc), not drift's schema-only one (it gives up after
        # lock_timeout and drift falls back to the record)
        while not [c for c in _children(seeded_url) if " -Fc" in c]:
            assert time.monotonic() < deadline, run.lines
            time.sleep(0.05)
        time.sleep(0.5)
        code, last = run.end(sig)
    finally:
        blocker.rollback()
        blocker.close()
    _no_children(seeded_url)
    assert list((tmp_path / "backups").glob("*.dump")) == []
    assert migrations.current(seeded_url) == "schema"
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        return
    assert code == 130, "\n".join(run.lines)
    assert last == (
        "FAILED: interrupted during backup pg_dump -Fc: nothing unjudged was left "
        "applied; the database is at schema"
    ), run.lines
    assert "unjudged" not in _status(seeded_url, tmp_path).split("last rollout")[0]


def _until_it_waits_for_the_blocker(url: str, run: Rollout) -> None:
    """Until the rollout's step (or rollback) waits for the app transaction's lock."""
    deadline = time.monotonic() + 120
    while not _waiting(url):
        assert time.monotonic() < deadline and run.proc.poll() is None, run.lines
        time.sleep(0.1)


@pytest.mark.slow
def test_interrupted_step_is_rolled_back_by_postgresql(seeded_url: str, tmp_path: Path) -> None:
    blocker = psycopg.connect(seeded_url, application_name="blocking-app")
    blocker.execute("UPDATE geometrias SET descricao = descricao WHERE id = 7")
    try:
        run = Rollout(seeded_url, tmp_path, "--no-backup", "--lock-timeout", "120s")
        _until_it_waits_for_the_blocker(seeded_url, run)
        code, last = run.end(signal.SIGINT)
    finally:
        blocker.rollback()
        blocker.close()
    assert code == 130, "\n".join(run.lines)
    assert last == (
        "FAILED: interrupted during opt1 upgrading: nothing unjudged was left "
        "applied; the database is at schema"
    ), run.lines
    assert migrations.current(seeded_url) == "schema"
    status = _status(seeded_url, tmp_path)
    assert "revision: schema" in status and _unjudged_line("opt1") not in status


@pytest.mark.slow
def test_interrupted_rollback_leaves_the_step_named_unjudged(
    seeded_url: str, tmp_path: Path
) -> None:
    run = Rollout(seeded_url, tmp_path, "--no-backup", "--lock-timeout", "120s", "--duration", "8")
    run.in_benchmark()
    # the rollback the interrupt starts must wait for this app transaction's lock
    blocker = psycopg.connect(seeded_url, application_name="blocking-app")
    blocker.execute("UPDATE geometrias SET descricao = descricao WHERE id = 7")
    try:
        run.proc.send_signal(signal.SIGINT)
        _until_it_waits_for_the_blocker(seeded_url, run)
        code, last = run.end(signal.SIGINT)
    finally:
        blocker.rollback()
        blocker.close()
    assert code == 130, "\n".join(run.lines)
    assert last == (
        "FAILED: interrupted during opt1 benchmarking: rolling back opt1 stopped "
        "(interrupted again): opt1 left applied, not judged; the next `stage4 "
        "upgrade` judges it, `stage4 downgrade` removes it; the database is at "
        "opt1"
    ), run.lines
    assert migrations.current(seeded_url) == "opt1"
    _no_children(seeded_url)
    assert _unjudged_line("opt1") in _status(seeded_url, tmp_path)


def _waiting(url: str) -> bool:
    """Whether a stage4 migration is waiting for a lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = "
            "'stage4-alembic' AND wait_event_type = 'Lock' AND datname = current_database())"
        ).fetchone()[0]


def test_an_interrupt_swallowed_where_it_arrived_still_stops_the_next_phase():
    """Python prints "Exception ignored in ..." and goes on when a signal's KeyboardInterrupt
    is raised inside a finaliser or a callback; the rollout must still stop at its next phase
    instead of finishing as if nothing had happened."""
    from stage4.plumbing import interrupts
    from stage4.rollout.record import Said

    say = Said("pre-flight", "starting")
    with interrupts.sigterm_as_interrupt():
        try:  # stands for the finaliser that swallows it
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt):
            say("opt1", "benchmarking")
        interrupts.clear()
        say("opt1", "benchmarking")  # handled: the next phase goes on
    say("opt2", "upgrading")  # outside a rollout nothing is pending
    assert str(say) == "opt2 upgrading"
