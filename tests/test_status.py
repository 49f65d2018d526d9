"""Where the database stands (``status.summary``), read from a real database, and the
lines the CLI prints from it after a downgrade."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import SEED_FEATURES
from stage4.cli import app
from stage4.config import settings
from stage4.plumbing import migrations
from stage4.plumbing.db import where
from stage4.rollout import status


def test_summary_of_a_seeded_database(seeded_url: str) -> None:
    assert status.summary(seeded_url, settings()) == {
        "database": where(seeded_url),
        "revision": "schema",
        "rows": SEED_FEATURES,
    }


def test_summary_before_any_revision_has_no_table(db_url: str) -> None:
    assert status.summary(db_url, settings()) == {
        "database": where(db_url),
        "revision": None,
        "rows": None,
    }


@pytest.mark.slow
def test_downgrade_ends_with_where_the_database_stands(seeded_url: str) -> None:
    migrations.upgrade(seeded_url, "opt1")
    result = CliRunner().invoke(app, ["--database-url", seeded_url, "downgrade"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-3:] == [
        f"database: {where(seeded_url)}",
        "revision: schema",
        f"{settings().qualified_table}: {SEED_FEATURES} rows",
    ]


def test_status_starts_with_the_same_lines(seeded_url: str) -> None:
    result = CliRunner().invoke(app, ["--database-url", seeded_url, "status"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:3] == [
        f"database: {where(seeded_url)}",
        "revision: schema",
        f"{settings().qualified_table}: {SEED_FEATURES} rows",
    ]


def test_the_steps_of_a_package_judged_go_at_its_target_are_judged():
    from stage4.rollout import status
    from stage4.rollout.record import UNJUDGED

    steps = [{"revision": r, "verdict": "measured (judged at opt5)"} for r in
             ("opt1", "opt2", "opt3", "opt4")]  # fmt: skip
    assert status.unjudged({"steps": [*steps, {"revision": "opt5", "verdict": "GO"}]}, "opt5") == []
    # the target not judged yet (an interrupt, a kill): the whole package is still unjudged
    pending = {"steps": [*steps, {"revision": "opt5", "verdict": UNJUDGED}]}
    assert status.unjudged(pending, "opt5") == ["opt1", "opt2", "opt3", "opt4", "opt5"]
