"""`stage4 bench`, `stage4 baseline`, `stage4 compare`: output, files, refusals and exit codes."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from stage4 import cli

runner = CliRunner()
FAST = ["--iterations", "1", "--concurrency", "1", "--duration", "1"]


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the console entry point (errors -> one FAILED line + exit code)."""
    monkeypatch.setattr(sys, "argv", ["stage4", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


@pytest.mark.slow
def test_bench_prints_a_table_and_writes_metrics(seeded_url: str, tmp_path) -> None:
    result = runner.invoke(
        cli.app,
        [
            "--database-url",
            seeded_url,
            "bench",
            "--label",
            "demo",
            *FAST,
            "--json-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "run 1 DEMO at schema" in result.output
    for qid in ("Q1 ", "Q10 "):
        assert qid in result.output
    assert "QPS" in result.output and "cache hit" in result.output
    assert (tmp_path / "METRICS_DEMO.json").is_file()


@pytest.mark.slow
def test_baseline_refuses_overwrite_without_force(seeded_url: str, monkeypatch, capsys) -> None:
    url = ["--database-url", seeded_url]
    first = runner.invoke(cli.app, [*url, "baseline", *FAST])  # no run yet: measures one
    assert first.exit_code == 0, first.output
    assert "baseline: run 1" in first.output
    assert runner.invoke(cli.app, [*url, "bench", *FAST]).exit_code == 0
    code, _, err = _main(monkeypatch, capsys, *url, "baseline")
    assert code == 2
    assert err.strip() == (
        "FAILED: a baseline already exists (run 1); pass --force to replace it with run 2"
    )
    forced = runner.invoke(cli.app, [*url, "baseline", "--force"])
    assert forced.exit_code == 0 and "baseline: run 2" in forced.output


@pytest.mark.slow
def test_compare_shows_verdicts_against_the_baseline(seeded_url: str) -> None:
    url = ["--database-url", seeded_url]
    assert runner.invoke(cli.app, [*url, "baseline", *FAST]).exit_code == 0
    assert runner.invoke(cli.app, [*url, "bench", *FAST]).exit_code == 0
    result = runner.invoke(cli.app, [*url, "compare"])
    assert result.exit_code == 0, result.output
    assert "run 2 RUN vs baseline run 1 BASELINE" in result.output
    assert "95% CI" in result.output and "same" in result.output
    assert "overall mean" in result.output
    result = runner.invoke(cli.app, [*url, "compare", "1"])
    assert "x1.00" in result.output


def test_compare_without_baseline_fails_with_advice(seeded_url: str, monkeypatch, capsys) -> None:
    code, _, err = _main(monkeypatch, capsys, "--database-url", seeded_url, "compare")
    assert code == 2
    assert err.strip() == "FAILED: no baseline stored: run `stage4 baseline` first"
