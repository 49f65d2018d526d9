"""`stage4 plan --sql`: the SQL of the steps and of their rollback, offline (``--since``
given, so no database is reached), as ``migrations.offline_plan`` renders it. The catalog
diff that leads `stage4 plan` without ``--sql``: test_replay.py."""

from __future__ import annotations

from typer.testing import CliRunner

from stage4.cli import app
from stage4.plumbing import migrations


def _plan(*args: str):
    return CliRunner().invoke(app, ["plan", *args])


def test_plan_prints_the_step_then_its_rollback() -> None:
    up, down = migrations.offline_plan("schema", "opt1")
    assert up == migrations.offline_sql("upgrade", "schema:opt1")
    assert down == migrations.offline_sql("downgrade", "opt1:schema")
    result = _plan("--to", "opt1", "--since", "schema", "--sql")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"-- upgrade schema -> opt1\n{up}\n-- rollback opt1 -> schema\n{down}\n"


def test_plan_at_the_target_has_nothing_to_plan() -> None:
    assert migrations.offline_plan("opt1", "opt1") == (None, None)
    result = _plan("--to", "opt1", "--since", "opt1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "-- already at opt1: nothing to plan\n"


def test_plan_from_an_unknown_revision_is_refused() -> None:
    result = _plan("--to", "opt1", "--since", "opt9")
    assert result.exit_code == 2
    valid = ", ".join(migrations.chain())
    assert result.stderr.strip() == (
        f"FAILED: unknown target 'opt9': valid revisions are {valid}, head (= opt5)"
    )
