"""`make demo` ends with three lines a newcomer can act on (its `demo-end` target)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stage4.config import redact
from stage4.plumbing import migrations

ROOT = Path(__file__).resolve().parents[1]


def _demo_end(url: str, reports: Path) -> list[str]:
    stage4 = Path(sys.executable).parent / "stage4"
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        ["make", "-s", "demo-end", f"STAGE4={stage4}", f"REPORTS={reports}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.slow
def test_demo_ends_with_where_and_what_next(seeded_url: str, tmp_path: Path) -> None:
    run = tmp_path / "reports" / "20261201-050000"
    run.mkdir(parents=True)
    (run / "REPORT.md").write_text("# report\n")
    assert _demo_end(seeded_url, tmp_path / "reports") == [
        "",
        f"Database: {redact(seeded_url)} (revision schema)",
        f"Report:   {run / 'REPORT.md'}",
        "Next:     make status, then make upgrade TO=opt5 JUDGE=target (the five "
        "steps judged as one package)",
    ]  # nothing to roll back at schema (a NO-GO at opt1 ends there)
    migrations.upgrade(seeded_url, "opt1")
    assert _demo_end(seeded_url, tmp_path / "reports")[1:] == [
        f"Database: {redact(seeded_url)} (revision opt1)",
        f"Report:   {run / 'REPORT.md'}",
        "Next:     make downgrade (rolls back one step), then make status",
    ]


@pytest.mark.slow
def test_demo_end_without_a_report_says_how_to_get_one(seeded_url: str, tmp_path: Path) -> None:
    lines = _demo_end(seeded_url, tmp_path / "none")
    assert lines[2] == f"Report:   none yet (make upgrade writes one under {tmp_path / 'none'}/)"
