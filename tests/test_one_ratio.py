"""One ratio per query, printed alike everywhere: the terminal verdict line, REPORT.md and
rollout.json; the corrected ratio beside it where the machine's speed was taken out; and
every query whose figures moved named in the verdict.

No database: runs are ``BenchRun`` objects with per-round control timings, compared by
``stats.compare_bench`` and written as the gate writes them (``Rollout.save``,
``report.write_metrics``, ``report.write``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from stage4.measure import report, stats
from stage4.measure.metrics import BenchRun
from stage4.rollout import gate

QUERIES = [f"Q{i}" for i in range(1, 11)]
MEDIANS = dict(zip(QUERIES, [0.8, 3.0, 8.0, 4.8, 19.0, 0.5, 2.5, 12.0, 40.0, 25.0], strict=True))
ROUNDS = 20
# "Q4 x2.11 raw, x1.45 with the machine's speed taken out (+5.36 ms" and the like
PHRASE = re.compile(
    r"(Q\d+) (?:slower |faster )?x([\d.]+)(?: raw, x([\d.]+) with the machine's speed taken "
    r"out)? \(([+-][\d.]+) ms"
)


def bench_run(label: str, seed: int, busy: float = 1.0, factor=None) -> BenchRun:
    """A run on a machine ``busy`` times slower than the baseline's (the control moves
    with it), each query's time times ``factor[q]`` on top."""
    rng = np.random.default_rng(seed)
    samples = {
        q: [m * busy * (factor or {}).get(q, 1.0) * float(rng.lognormal(0, 0.05))
            for _ in range(ROUNDS)]
        for q, m in MEDIANS.items()
    }  # fmt: skip
    control = [3.0 * busy * float(rng.lognormal(0, 0.02)) for _ in range(ROUNDS * len(QUERIES))]
    return BenchRun(label=label, samples=samples, fingerprints={q: "f" for q in QUERIES},
                    variants={}, control=control, iterations=ROUNDS, run_id=seed,
                    qps=100.0, cache_hit=0.99, concurrency=2, duration=1.0)  # fmt: skip


def rollout_folder(tmp_path: Path, base: BenchRun, run: BenchRun):
    """One step, judged as the gate judges it; its folder written and its report made."""
    comps = stats.compare_bench(base, run, min_delta_ms=2.0)
    decision = stats.gate_verdict(comps)
    rec = gate.StepRecord("opt1", upgrade_seconds=1.0, run_id=run.run_id)
    rec.comparisons = rec.vs_previous = {q: c.to_dict() for q, c in comps.items()}
    rec.reasons, rec.verdict = decision.reasons, "GO" if decision.go else "NO-GO"
    rec.margin = report.margins(rec)
    folder = tmp_path / "run"
    folder.mkdir()
    rollout = gate.Rollout("postgresql://u@h/db", "opt1", "2026-01-01T00:00:00", {"x": "1"})
    rollout.folder, rollout.outcome, rollout.steps = str(folder), rec.verdict, [rec]
    rollout.baseline_run_id = base.run_id
    rollout.save()
    for r in (base, run):
        report.write_metrics(folder, r.label, r)
    report.write(folder)
    saved = json.loads((folder / "rollout.json").read_text())["steps"][0]["comparisons"]
    return comps, rec, saved, (folder / "REPORT.md").read_text()


def row(text: str, qid: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| {qid} "))
    return [c.strip() for c in line.strip("|").split("|")]


def named(line: str) -> dict[str, tuple[str, str | None, float]]:
    """qid -> (raw ratio, corrected ratio, delta ms) of each query a verdict line names."""
    return {m[1]: (m[2], m[3], float(m[4])) for m in PHRASE.finditer(line)}


class TestOneRatioEverywhere:
    def test_verdict_line_report_row_and_json_agree_on_a_busy_machine(self, tmp_path) -> None:
        # the machine 1.6 times slower while the step was measured; Q5 twice as slow on
        # top: raw x3.2, x2 once the machine's speed is taken out
        base = bench_run("BASELINE", 1)
        opt1 = bench_run("OPT1", 2, busy=1.6, factor={"Q5": 2.0, "Q2": 0.5})
        comps, rec, saved, text = rollout_folder(tmp_path, base, opt1)
        line = report.step_line(rec)
        assert line.startswith("opt1: NO-GO (margin x")
        assert "judged on the ratios with the machine's speed taken out" in line
        said = named(line)
        assert "Q5" in said and said["Q5"][2] > 0
        # the last step kept is the baseline here: judged, the table compares nothing
        for qid, c in comps.items():
            j = saved[qid]
            assert j["ratio"] == pytest.approx(j["candidate_median"] / j["baseline_median"])
            assert (j["ratio"] > 1) == (j["candidate_median"] > j["baseline_median"])
            assert j["adjusted_ratio"] == pytest.approx(c.adjusted_ratio)
            if qid in said:
                raw, corrected, delta = said[qid]
                assert raw == f"{j['ratio']:.2f}" and corrected == f"{j['adjusted_ratio']:.2f}"
                assert delta == pytest.approx(j["candidate_median"] - j["baseline_median"],
                                              abs=0.006)  # fmt: skip
        reason = next(r for r in rec.reasons if r.startswith("Q5 slower"))
        q5 = saved["Q5"]
        assert f"x{q5['ratio']:.2f} raw, x{q5['adjusted_ratio']:.2f} with the machine's " in reason
        assert f"judged on x{q5['adjusted_ratio']:.2f}, 95% CI" in reason
        assert f"- {rec.margin}" in text and f"- {reason}" in text

    def test_a_kept_step_shows_the_same_ratios_in_its_row(self, tmp_path) -> None:
        # the machine twice as slow, nothing else: every raw ratio near x2, judged x1, GO,
        # and every query named (its medians moved beyond the margin), none counted
        base = bench_run("BASELINE", 1)
        opt1 = bench_run("OPT1", 2, busy=2.0)
        _, rec, saved, text = rollout_folder(tmp_path, base, opt1)
        assert rec.verdict == "GO", rec.reasons
        line = report.step_line(rec)
        said = named(line)
        header = row(text, "query")
        assert header[-2:] == [
            "OPT1 / baseline",
            "OPT1 / baseline, with the machine's speed taken out",
        ]
        for qid in QUERIES:
            j, cells = saved[qid], row(text, qid)
            assert cells[-2] == f"{j['ratio']:.2f}×"  # the same ratio, the same rounding
            assert cells[-1] == f"{j['adjusted_ratio']:.2f}×"
            assert cells[1:3] == [f"{j['baseline_median']:.2f}", f"{j['candidate_median']:.2f}"]
            moved = abs(j["candidate_median"] - j["baseline_median"]) > 2.0
            # beyond the floor: named, with the same figures as the row and the JSON
            assert (qid in said) == moved or j["excused"] is not None, (qid, line)
            if qid in said:
                assert said[qid][:2] == (f"{j['ratio']:.2f}", f"{j['adjusted_ratio']:.2f}")
                assert (float(said[qid][0]) > 1) == (said[qid][2] > 0)
        assert "Q9 x" in line and "not counted: its 95% CI" in line

    def test_a_raw_ratio_and_its_delta_never_disagree(self) -> None:
        # the machine faster during the candidate run: the corrected ratio says slower,
        # the measured medians say faster; each is printed as what it is
        base = bench_run("BASELINE", 1)
        cand = bench_run("OPT1", 2, busy=0.5, factor={"Q9": 1.8})
        q9 = stats.compare_bench(base, cand, min_delta_ms=2.0)["Q9"]
        assert q9.ratio < 1 < q9.adjusted_ratio
        phrase = next(p for p in stats.moved({"Q9": q9}))
        raw, corrected, delta = named(phrase)["Q9"]
        assert float(raw) < 1 and delta < 0 and float(corrected) > 1
        assert phrase.startswith("Q9 slower x0.")  # the verdict judged the corrected one


class TestFasterIsNotExcused:
    def test_a_faster_query_under_the_floor_is_faster_not_excused(self) -> None:
        faster = stats.compare_query([1.5] * 5, [0.5] * 5, min_delta_ms=2.0)
        slower = stats.compare_query([0.71] * 5, [2.17] * 5, min_delta_ms=2.0)
        line = stats.margin_line({"Q1": faster, "Q6": slower})
        assert "Q1 faster x0.33 (-1.00 ms)" in line
        assert "Q6 x3.06 (+1.46 ms, under the 2 ms floor: not counted)" in line
        assert line.count("not counted") == 1
