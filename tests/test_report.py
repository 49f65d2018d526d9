"""REPORT.md, the charts and rollout.json tell one story.

Most tests write a run folder as the gate does (``gate.Rollout.save`` and
``report.write_metrics`` on ``BenchRun`` objects compared by ``stats.compare_bench``)
and read the report back: no database needed for what is only files. One test runs the
gate on a real database.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from stage4.measure import report, stats
from stage4.measure.metrics import BenchRun, round_samples
from stage4.rollout import gate

QUERIES = [f"Q{i}" for i in range(1, 11)]
ROUNDS, SETS = 12, 4


def bench_run(label: str, seed: int, slow: dict[str, float] | None = None) -> BenchRun:
    """A run whose queries have one slow parameter set out of four: the per-execution p50
    and the median of round means (what the gate compares) are far apart, as for Q7 when
    one set started parallel workers."""
    rng = np.random.default_rng(seed)
    executions = {}
    for i, q in enumerate(QUERIES):
        factor = (slow or {}).get(q, 1.0)
        one_round = [1.0 + i, 1.0 + i, 1.0 + i, 12.0 * (1 + i)]
        executions[q] = [
            ms * factor * float(rng.lognormal(0, 0.03)) for _ in range(ROUNDS) for ms in one_round
        ]
    return BenchRun(
        label=label,
        samples=round_samples(executions, SETS),
        executions=executions,
        sets=SETS,
        control=[3.0] * (ROUNDS * len(QUERIES)),
        fingerprints={q: "f" for q in QUERIES},
        variants={},
        qps=100.0,
        cache_hit=0.99,
        iterations=ROUNDS,
        concurrency=2,
        duration=1.0,
        run_id=seed,
    )


def step(rev: str, base: BenchRun, run: BenchRun, verdict: str | None = None) -> gate.StepRecord:
    comps = stats.compare_bench(base, run, min_delta_ms=2.0)
    decision = stats.gate_verdict(comps)
    rec = gate.StepRecord(rev, upgrade_seconds=1.0, run_id=run.run_id)
    rec.comparisons = {q: c.to_dict() for q, c in comps.items()}
    rec.vs_previous = rec.comparisons
    rec.reasons = decision.reasons
    rec.verdict = verdict or ("GO" if decision.go else "NO-GO")
    if rec.verdict == "NO-GO":
        rec.rollback_seconds, rec.restored_exactly = 0.5, True
    return rec


def folder_with(tmp_path: Path, target: str, steps, runs, outcome: str) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    rollout = gate.Rollout("postgresql://u@h/db", target, "2026-01-01T00:00:00", {"x": "1"})
    rollout.folder, rollout.outcome, rollout.steps = str(folder), outcome, steps
    rollout.preflight = ["ok: something checked"]
    rollout.baseline_run_id = runs[0].run_id if runs else None
    rollout.save()
    for r in runs:
        report.write_metrics(folder, r.label, r)
    report.write(folder)
    return folder


def table_row(text: str, first_cell: str) -> list[str]:
    row = next(line for line in text.splitlines() if line.startswith(f"| {first_cell}"))
    return [c.strip() for c in row.strip("|").split("|")]


class TestOneSetOfFigures:
    def test_table_decision_and_rollout_json_quote_the_same_medians(self, tmp_path) -> None:
        base, opt1 = bench_run("BASELINE", 1), bench_run("OPT1", 2, slow={"Q7": 2.0})
        rec = step("opt1", base, opt1)
        folder = folder_with(tmp_path, "opt1", [rec], [base, opt1], "NO-GO at opt1")
        text = (folder / "REPORT.md").read_text()
        reason = next(r for r in rec.reasons if r.startswith("Q7 slower"))
        m = re.match(r"Q7 slower: median ([\d.]+) ms vs baseline ([\d.]+) ms", reason)
        assert m, reason
        cand, basem = m.group(1), m.group(2)
        # the per-query table: Q7's BASELINE and OPT1 cells are the decision's figures
        cells = table_row(text, "Q7 ")
        assert cells[1:3] == [basem, cand]
        # rollout.json and METRICS hold the same numbers
        saved = json.loads((folder / "rollout.json").read_text())["steps"][0]["comparisons"]["Q7"]
        metrics = json.loads((folder / "METRICS_OPT1.json").read_text())["queries"]["Q7"]
        assert saved["candidate_median"] == pytest.approx(metrics["round_median"])
        assert f"{saved['candidate_median']:.2f}" == cand
        # and not the per-execution p50, which is a different statistic
        assert f"{metrics['p50']:.2f}" != cand

    def test_every_decision_prints_its_margin_go_included(self, tmp_path) -> None:
        base, opt1 = bench_run("BASELINE", 1), bench_run("OPT1", 2)
        rec = step("opt1", base, opt1)
        assert rec.verdict == "GO"
        text = (
            folder_with(tmp_path, "opt1", [rec], [base, opt1], "GO: at opt1") / "REPORT.md"
        ).read_text()
        decision = text[text.index("### opt1: GO") :]
        line = (
            "margin x1.10 (10% threshold, no machine drift) vs baseline, judged on the ratios "
            "with the machine's speed taken out"
        )
        assert f"- {line}" in decision
        assert report.margins(rec) == line
        assert "floor" not in decision  # nothing excused: nothing named

    def test_what_the_floor_excused_is_named_in_the_report_and_rollout_json(self, tmp_path) -> None:
        # Q1 (3.75 ms) x1.4: beyond the margin, but +1.5 ms, under the 2 ms floor
        base, opt1 = bench_run("BASELINE", 1), bench_run("OPT1", 2, slow={"Q1": 1.4})
        rec = step("opt1", base, opt1)
        assert rec.verdict == "GO"
        folder = folder_with(tmp_path, "opt1", [rec], [base, opt1], "GO: at opt1")
        text = (folder / "REPORT.md").read_text()
        decision = text[text.index("### opt1: GO") :]
        q1 = rec.comparisons["Q1"]
        delta = q1["candidate_median"] - q1["baseline_median"]
        named = (
            f"Q1 x{q1['ratio']:.2f} raw, x{q1['adjusted_ratio']:.2f} with the machine's speed "
            f"taken out (+{delta:.2f} ms, under the 2 ms floor: not counted)"
        )
        assert re.search(
            r"Q1 x1\.[3-5]\d raw, x1\.[3-5]\d .* \(\+1\.[3-7]\d ms, under the 2 ms", named
        )
        margin = (
            "margin x1.10 (10% threshold, no machine drift) vs baseline, judged on the ratios "
            "with the machine's speed taken out"
        )
        assert f"- {margin}; {named}" in decision
        assert report.margins(rec).count("not counted") == 1  # vs_previous is the same run
        saved = json.loads((folder / "rollout.json").read_text())["steps"][0]
        assert saved["comparisons"]["Q1"]["excused"] == "slower"
        assert saved["comparisons"]["Q1"]["min_delta_ms"] == 2.0
        assert [q for q, c in saved["comparisons"].items() if c["excused"]] == ["Q1"]

    def test_a_rolled_back_step_is_named_so_and_not_used_as_the_last_state(self, tmp_path) -> None:
        base, opt1 = bench_run("BASELINE", 1), bench_run("OPT1", 2)
        opt2 = bench_run("OPT2", 3, slow={"Q3": 3.0})
        steps = [step("opt1", base, opt1), step("opt2", base, opt2)]
        assert [s.verdict for s in steps] == ["GO", "NO-GO"]
        text = (
            folder_with(tmp_path, "opt2", steps, [base, opt1, opt2], "NO-GO at opt2") / "REPORT.md"
        ).read_text()
        header = table_row(text, "query")
        assert header[1:] == [
            "BASELINE",
            "OPT1",
            "OPT2 (NO-GO, rolled back)",
            "OPT1 / baseline",
            "OPT1 / baseline, with the machine's speed taken out",
        ]
        assert "| OPT2 (NO-GO, rolled back) |" in text  # the overall table too


class TestNothingToJudge:
    def test_upgrade_to_schema_writes_a_short_correct_report(self, tmp_path) -> None:
        rec = gate.StepRecord(
            "schema", verdict="GO (reference schema, not gated)", upgrade_seconds=0.3
        )
        text = (
            folder_with(tmp_path, "schema", [rec], [], "GO: at schema") / "REPORT.md"
        ).read_text()
        assert "## Nothing was judged" in text
        assert "### schema: GO (reference schema, not gated)" in text
        assert "within the threshold" not in text and "no query slower" not in text
        assert "margin" not in text
        for gone in ("## Overall", "## Per query", "## Measured vs claimed", "| query |"):
            assert gone not in text
        assert "- baseline run: none (nothing measured)" in text
        # every table that is there has a header, a rule and at least one row
        tables = re.findall(r"((?:^\|.*\|\n)+)", text, re.MULTILINE)
        assert tables
        for t in tables:
            rows = t.strip().splitlines()
            assert len(rows) >= 3 and set(rows[1]) <= set("|-")


class TestClaimsAtTheirOwnStep:
    def test_a_rollout_that_stops_at_opt1_measures_no_final_figure(self, tmp_path) -> None:
        base, opt1 = bench_run("BASELINE", 1), bench_run("OPT1", 2)
        folder = folder_with(tmp_path, "opt1", [step("opt1", base, opt1)], [base, opt1], "GO")
        text = (folder / "REPORT.md").read_text()
        # the final claims are after opt5, whatever the rollout's last step was
        assert table_row(text, "mean latency after opt5 (ms)")[1:] == ["–", "46.70 (claimed)"]
        assert table_row(text, "QPS after opt5")[1] == "–"
        q5 = json.loads((folder / "METRICS_OPT1.json").read_text())["queries"]["Q5"]
        assert table_row(text, "Q5 after opt1 (ms)")[1:] == [
            f"{q5['round_median']:.2f}",
            "27.30 (claimed)",
        ]
        assert "after OPT1" not in text

    def test_a_rolled_back_step_measures_no_claim(self, tmp_path) -> None:
        base, opt1 = bench_run("BASELINE", 1), bench_run("OPT1", 2, slow={"Q5": 3.0})
        folder = folder_with(tmp_path, "opt1", [step("opt1", base, opt1)], [base, opt1], "NO-GO")
        assert table_row((folder / "REPORT.md").read_text(), "Q5 after opt1 (ms)")[1] == "–"


class TestCharts:
    def test_log_axis_says_so_and_rolled_back_steps_are_marked(self, tmp_path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        base, opt1 = bench_run("BASELINE", 1), bench_run("OPT1", 2, slow={"Q3": 3.0})
        rec = step("opt1", base, opt1)
        folder = folder_with(tmp_path, "opt1", [rec], [base, opt1], "NO-GO at opt1")
        by_query, mean = report.figures(
            ["BASELINE", "OPT1"],
            {
                lbl: json.loads((folder / f"METRICS_{lbl}.json").read_text())
                for lbl in ("BASELINE", "OPT1")
            },
            {"OPT1": rec.__dict__},
        )
        ax = by_query.axes[0]
        assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == ["BASELINE", "OPT1 (NO-GO, rolled back)"]
        assert [p.get_hatch() for p in ax.containers[1]] == ["//"] * len(QUERIES)
        ax2 = mean.axes[0]
        assert ax2.get_yscale() == "linear" and "linear scale" in ax2.get_ylabel()
        means = [
            json.loads((folder / f"METRICS_{lbl}.json").read_text())["overall"]["mean"]
            for lbl in ("BASELINE", "OPT1")
        ]
        # bars from 0, each with its value; the rolled-back one hatched and named inside
        # the axes (below the top of the y range, so never on the title)
        assert ax2.get_ylim()[0] == 0 and ax2.get_ylim()[1] > max(means)
        assert [b.get_height() for b in ax2.containers[0]] == pytest.approx(means)
        assert [b.get_hatch() for b in ax2.containers[0]] == [None, "//"]
        texts = [t.get_text() for t in ax2.texts]
        assert texts == ["NO-GO, rolled back", *(f"{m:.2f}" for m in means)]
        assert all(t.get_position()[1] < ax2.get_ylim()[1] for t in ax2.texts)
        assert (folder / "latency_by_query.png").stat().st_size > 0


def test_run_folder_is_the_one_given_or_the_newest(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stage4.cli import app
    from stage4.errors import ConfigError

    with pytest.raises(ConfigError) as none:
        report.run_folder(None, tmp_path)
    assert str(none.value) == f"no rollout reports under {tmp_path}/: run `stage4 upgrade` first"
    for name in ("20260101-000000", "20260102-000000"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rollout.json").write_text("{}")
    assert report.run_folder(None, tmp_path) == tmp_path / "20260102-000000"
    assert report.run_folder(tmp_path / "20260101-000000", tmp_path) == tmp_path / "20260101-000000"
    with pytest.raises(ConfigError) as bare:
        report.run_folder(tmp_path, tmp_path)
    assert str(bare.value) == f"{tmp_path} is not a run folder (no rollout.json)"
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == f"FAILED: {tmp_path} is not a run folder (no rollout.json)\n"
