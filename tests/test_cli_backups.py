"""Backups: private, kept to the newest N, and restorable with the command stage4 prints."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.cli import app
from stage4.config import settings
from stage4.rollout import backup


def _old_dump(folder: Path, name: str, age_s: float) -> Path:
    path = folder / name
    path.write_bytes(b"old")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_prune_keeps_the_newest_and_only_touches_stage4_dumps(tmp_path: Path) -> None:
    dumps = [
        _old_dump(tmp_path, f"stage4-opt{i}-2026010{i}-000000.dump", 1000 - i) for i in range(1, 5)
    ]
    mine = _old_dump(tmp_path, "my-own.dump", 5000)
    assert backup.prune(tmp_path, 2) == dumps[:2]
    assert sorted(tmp_path.iterdir()) == sorted([*dumps[2:], mine])
    assert backup.prune(tmp_path, 2) == []


def test_retain_names_this_runs_dump_and_what_went(seeded_url: str, tmp_path: Path) -> None:
    old = [
        _old_dump(tmp_path, f"stage4-opt{i}-2026010{i}-000000.dump", 1000 - i) for i in range(1, 4)
    ]
    began = time.time()
    assert backup.retain(tmp_path, 2, began) == (None, [])  # this run took none: none go
    # another process's dump, newer than any: not this run's, so not a reason to delete
    _old_dump(tmp_path, "stage4-opt4-20260104-000000.dump", 0)
    assert backup.retain(tmp_path, 2, began) == (None, [])
    made = backup.dump(seeded_url, settings(), tmp_path, "schema")
    assert backup.retain(tmp_path, 2, began) == (made, old)  # this run's and the newest stay


@pytest.mark.slow
def test_upgrade_keeps_n_backups_and_prints_a_restore_command_that_works(
    seeded_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    old = [_old_dump(folder, f"stage4-schema-2026010{i}-000000.dump", 1000 - i) for i in (1, 2)]
    result = CliRunner().invoke(
        app,
        [
            "--database-url",
            seeded_url,
            "upgrade",
            "--to",
            "opt1",
            "--no-gate",
            "--iterations",
            "1",
            "--concurrency",
            "1",
            "--duration",
            "1",
            "--backup-dir",
            str(folder),
            "--keep-backups",
            "2",
            "--reports-dir",
            str(tmp_path / "reports"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    made = next(Path(ln.removeprefix("backup: ")) for ln in lines if ln.startswith("backup: "))
    assert made.parent == folder and made.name.startswith("stage4-schema-")
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert sorted(folder.iterdir()) == sorted([old[1], made])  # the oldest went
    assert f"removed 1 older backup(s) from {folder} (--keep-backups 2)" in lines
    restore = next(ln for ln in lines if ln.startswith("restore it with: "))
    command = restore.removeprefix("restore it with: ")
    assert command == backup.restore_command(made, seeded_url)
    # the run folder keeps it too, for the report
    (saved,) = (tmp_path / "reports").glob("*/rollout.json")
    assert json.loads(saved.read_text())["restore"] == command

    # the printed command, run as printed: a new database holding the rows from before
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=300, check=False
    )
    restored = (
        seeded_url.replace("?", "_restored?", 1)
        if "?" in seeded_url
        else (seeded_url + "_restored")
    )
    try:
        assert done.returncode == 0, done.stderr
        with psycopg.connect(restored) as conn:
            assert conn.execute("SELECT version_num FROM stage4.alembic_version").fetchone()[0] == (
                "schema"
            )
            assert conn.execute("SELECT count(*) FROM geometrias").fetchone()[0] == 2000
    finally:
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            name = restored.split("/")[-1].split("?")[0]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_progress_lines_when_not_a_terminal(seeded_url: str, tmp_path: Path) -> None:
    """CI logs: one line per phase and per measured part, each with its duration."""
    result = CliRunner().invoke(
        app,
        [
            "--database-url",
            seeded_url,
            "upgrade",
            "--to",
            "opt1",
            "--no-gate",
            "--no-backup",
            "--iterations",
            "1",
            "--concurrency",
            "1",
            "--duration",
            "2",
            "--reports-dir",
            str(tmp_path / "reports"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # no bar drawn
    # a pre-flight check's result is printed as it is, under its phase's line
    checking = lines.index(next(ln for ln in lines if ln.startswith("pre-flight checking")))
    assert re.fullmatch(r"pre-flight \[ok\] \S+: .*", lines[checking + 1])
    assert any(re.fullmatch(r"pre-flight \[ok\] table contract: \S+ matches", ln) for ln in lines)
    for pattern in (
        r"pre-flight checking the database: \d+\.\d s",
        r"opt1 upgrading: \d+\.\d s",
        r"  latency 1: \d+\.\d s",
        r"  throughput 2 s: [2-9]\.\d s",
    ):
        assert any(re.fullmatch(pattern, ln) for ln in lines), (pattern, lines)


@pytest.mark.slow
def test_throughput_bar_counts_seconds() -> None:
    """On a terminal the throughput task (counted in seconds) advances with the clock."""
    from rich.console import Console
    from rich.progress import Progress

    from stage4.progress import _Count

    with Progress(_Count(), console=Console(file=io.StringIO(), force_terminal=True)) as bar:
        clock = bar.add_task("throughput", total=3, clock=True)
        rounds = bar.add_task("latency", total=20)
        bar.update(rounds, completed=4)
        time.sleep(1.2)
        assert re.fullmatch(r"[12]/3 s", str(_Count().render(bar.tasks[clock])))  # not 0/3
        assert str(_Count().render(bar.tasks[rounds])) == "4/20"
