"""After a NO-GO rollback a short bench shows whether the figures are back, and the report
says which. The NO-GO comes from test_gate's test-only `wrong` revision (the search RPC
returns fewer rows: NO-GO whatever the timings)."""

from __future__ import annotations

import json

import pytest

from stage4.errors import GateError
from stage4.plumbing import migrations
from stage4.rollout import gate
from test_gate import _opts, scripts  # noqa: F401  (scripts: the fixture, used by name)

WIDE = {"threshold": 1.0, "min_delta_ms": 25}  # at 2,000 rows only a real change clears it


@pytest.mark.slow
def test_the_report_says_the_figures_are_back(seeded_url, scripts, tmp_path) -> None:  # noqa: F811
    scripts("wrong")
    with pytest.raises(GateError):
        gate.upgrade(seeded_url, "wrong", _opts(tmp_path, **WIDE))
    assert migrations.current(seeded_url) == "schema"
    folder = next((tmp_path / "reports").iterdir())
    step = json.loads((folder / "rollout.json").read_text())["steps"][0]
    after = step["after_rollback"]
    assert after["compared_with"].endswith("(BASELINE)"), after
    assert after["restored"] is True, after
    assert after["reasons"] == []
    report = (folder / "REPORT.md").read_text()
    assert (
        f"- after the rollback, re-bench run {after['run_id']} vs {after['compared_with']}: "
        "the figures are back (no query slower, by the gate's rule)"
    ) in report
