"""The gate's statistics: summaries, the per-query decision rule and the GO/NO-GO verdict.

No database: latencies come from seeded lognormal generators, which have the long
right tail real query timings have.
"""

from __future__ import annotations

import numpy as np
import pytest

from stage4.errors import ConfigError
from stage4.measure.stats import (
    FASTER,
    MAX_WIDENING,
    NO_CHANGE,
    SLOWER,
    GateDecision,
    QueryComparison,
    compare_bench,
    compare_query,
    compare_runs,
    control_adjusted,
    control_drift,
    gate_verdict,
    geometric_mean,
    margin_line,
    round_controls,
    speedup_table,
    summarize,
    widening,
)

QUERIES = [f"Q{i}" for i in range(1, 11)]
# Typical medians (ms) of the ten workload queries, from sub-millisecond to a tile.
MEDIANS = dict(zip(QUERIES, [0.4, 3.0, 8.0, 5.0, 19.0, 1.2, 2.5, 12.0, 40.0, 25.0], strict=True))


def run(seed: int, n: int = 60, sigma: float = 0.3, factor: float = 1.0) -> dict[str, list[float]]:
    """One benchmark run: ``n`` latencies per query, every median scaled by ``factor``."""
    rng = np.random.default_rng(seed)
    return {q: list(rng.lognormal(np.log(m * factor), sigma, size=n)) for q, m in MEDIANS.items()}


def comparison(verdict: str = NO_CHANGE, ratio: float = 1.0) -> QueryComparison:
    return QueryComparison(
        baseline_median=5.1,
        candidate_median=5.1 * ratio,
        ratio=ratio,
        ci_low=ratio * 0.9,
        ci_high=ratio * 1.1,
        verdict=verdict,
    )


class TestMachineDrift:
    """The control query says the machine changed speed: margins widen by its own move,
    never narrow, and never so far that a 2x regression passes."""

    def test_widening_follows_the_control_symmetric_and_capped(self) -> None:
        assert widening(1.0) == 1.0
        assert widening(1.2) == pytest.approx(1.2)
        assert widening(1 / 1.2) == pytest.approx(1.2)
        assert widening(3.27) == MAX_WIDENING == 1.5
        assert widening(1 / 4.0) == MAX_WIDENING
        with pytest.raises(ConfigError, match="drift must be a positive ratio"):
            widening(0.0)

    @pytest.mark.parametrize("drift", [1.0, 1.3, 2.0, 4.0, 0.25])
    def test_a_2x_regression_is_slower_however_busy_the_machine(self, drift: float) -> None:
        # A squared widening would make the margin x4.4 at a drift of 2, and an x4.98
        # regression would pass as "no significant change".
        # 20 rounds of round means, as the gate compares (spread of a busy machine)
        base, cand = run(1, n=20, sigma=0.15), run(2, n=20, sigma=0.15, factor=2.0)
        result = compare_runs(base, cand, drift=drift)
        assert {c.verdict for c in result.values()} == {SLOWER}
        assert max(c.margin for c in result.values()) <= 1.10 * 1.5

    def test_control_drift_is_the_ratio_of_medians(self) -> None:
        assert control_drift([2.0, 3.0, 4.0], [6.0, 6.0, 9.0]) == 2.0
        assert control_drift([], [1.0]) == 1.0  # runs stored before the control existed

    def test_a_machine_slowdown_is_not_called_a_regression(self) -> None:
        # Every query 25 % slower because the whole machine was 20 % slower.
        base, cand = run(1, n=200, sigma=0.05), run(2, n=200, sigma=0.05, factor=1.25)
        assert {c.verdict for c in compare_runs(base, cand).values()} == {SLOWER}
        widened = compare_runs(base, cand, drift=1.2)
        assert {c.verdict for c in widened.values()} == {NO_CHANGE}
        assert [c.widened for c in widened.values()] == pytest.approx([1.2] * 10)
        assert [c.margin for c in widened.values()] == pytest.approx([1.32] * 10)

    def test_a_real_regression_is_still_flagged_through_drift(self) -> None:
        base, cand = run(1, n=200, sigma=0.05), run(2, n=200, sigma=0.05, factor=3.0)
        assert {c.verdict for c in compare_runs(base, cand, drift=1.2).values()} == {SLOWER}

    def test_compare_bench_reads_samples_and_control(self) -> None:
        from types import SimpleNamespace

        base = SimpleNamespace(samples=run(1, n=200, sigma=0.05), control=[5.0] * 10)  # x1.2
        cand = SimpleNamespace(samples=run(2, n=200, sigma=0.05, factor=1.15), control=[6.0] * 10)
        result = compare_bench(base, cand)
        assert result == compare_runs(base.samples, cand.samples, drift=1.2)
        assert {c.verdict for c in result.values()} == {NO_CHANGE}


def bench(samples: dict[str, list[float]], control: list[float]):
    from types import SimpleNamespace

    return SimpleNamespace(samples=samples, control=control)


class TestControlAdjusted:
    """Each round's samples against that round's control: a busy stretch of rounds is the
    machine, a query that alone doubles is a regression."""

    ROUNDS = 20

    def runs(self, busy: list[float], factor: dict[str, float] | None = None, seed: int = 1):
        rng = np.random.default_rng(seed)
        samples = {
            q: [m * (factor or {}).get(q, 1.0) * b * float(rng.lognormal(0, 0.08)) for b in busy]
            for q, m in MEDIANS.items()
        }
        control = [3.0 * b * float(rng.lognormal(0, 0.03)) for b in busy for _ in MEDIANS]
        return bench(samples, control)

    def test_round_controls_are_the_median_of_each_round(self) -> None:
        run = bench({"Q1": [1.0, 2.0], "Q2": [1.0, 2.0]}, [3.0, 5.0, 4.0, 30.0, 10.0, 20.0])
        assert list(round_controls(run)) == [4.0, 20.0]
        assert round_controls(bench({"Q1": [1.0, 2.0]}, [3.0, 4.0, 5.0])) is None  # uneven
        assert round_controls(bench({"Q1": [1.0]}, [])) is None  # stored before the control
        adjusted = control_adjusted({"Q1": [2.0, 10.0]}, [4.0, 20.0], 4.0)
        assert adjusted == {"Q1": [2.0, 2.0]}

    def test_a_busy_stretch_of_rounds_is_not_a_regression(self) -> None:
        base = self.runs([1.0] * self.ROUNDS)
        cand = self.runs([1.0] * 6 + [1.8] * 14, seed=2)  # the machine busy for 14 rounds
        raw = compare_runs(base.samples, cand.samples)  # what the machine alone does
        assert SLOWER in {c.verdict for c in raw.values()}
        adjusted = compare_bench(base, cand)
        assert {c.verdict for c in adjusted.values()} == {NO_CHANGE}
        assert all(c.adjusted for c in adjusted.values())

    def test_a_2x_regression_on_a_busy_machine_is_slower(self) -> None:
        base = self.runs([1.0] * self.ROUNDS)
        cand = self.runs([1.5] * self.ROUNDS, factor={"Q5": 2.0}, seed=2)
        result = compare_bench(base, cand, min_delta_ms=2.0)
        assert [q for q, c in result.items() if c.verdict != NO_CHANGE] == ["Q5"]
        q5 = result["Q5"]
        # judged on the ratio with the machine's speed taken out: x2, its interval's
        assert q5.verdict == SLOWER and q5.adjusted_ratio == pytest.approx(2.0, rel=0.1)
        assert q5.judged_ratio == q5.adjusted_ratio and q5.ci_low < 2.0 < q5.ci_high
        # the medians reported are the measured ones (the report's tables show them), and
        # the ratio beside them is theirs: x2 on a machine 1.5 times slower, x3
        assert q5.baseline_median == pytest.approx(float(np.median(base.samples["Q5"])))
        assert q5.candidate_median == pytest.approx(float(np.median(cand.samples["Q5"])))
        assert q5.ratio == q5.candidate_median / q5.baseline_median
        assert q5.ratio == pytest.approx(3.0, rel=0.1)
        assert q5.widened == pytest.approx(1.5**0.5, rel=0.05)  # the drift's square root
        decision = gate_verdict(result)
        assert (
            f"x{q5.ratio:.2f} raw, x{q5.adjusted_ratio:.2f} with the machine's speed taken "
            f"out: judged on x{q5.adjusted_ratio:.2f}, 95% CI" in decision.reasons[0]
        )

    def test_what_the_floor_excused_is_recorded_and_named(self) -> None:
        # Q1 (0.4 ms) three times slower moves its median by 0.8 ms: under the 2 ms floor,
        # not counted, and named; Q5 (19 ms) twice as slow is counted.
        base = self.runs([1.0] * self.ROUNDS)
        cand = self.runs([1.0] * self.ROUNDS, factor={"Q1": 3.0, "Q5": 2.0}, seed=2)
        result = compare_bench(base, cand, min_delta_ms=2.0)
        assert result["Q1"].verdict == NO_CHANGE and result["Q1"].excused == SLOWER
        assert result["Q5"].verdict == SLOWER and result["Q5"].excused is None
        assert [q for q, c in result.items() if c.excused] == ["Q1"]
        assert result["Q1"].to_dict()["min_delta_ms"] == 2.0
        q1 = result["Q1"]
        q5 = result["Q5"]
        assert margin_line(result, "baseline").endswith(
            " vs baseline, judged on the ratios with the machine's speed taken out; "
            f"Q1 x{q1.ratio:.2f} raw, x{q1.adjusted_ratio:.2f} with the machine's speed "
            f"taken out (+{q1.candidate_median - q1.baseline_median:.2f} ms, "
            "under the 2 ms floor: not counted); "
            f"Q5 slower x{q5.ratio:.2f} raw, x{q5.adjusted_ratio:.2f} with the machine's "
            f"speed taken out (+{q5.candidate_median - q5.baseline_median:.2f} ms)"
        )
        assert 2.7 < q1.ratio < 3.3
        # with no floor the same comparison counts Q1, and nothing is excused
        strict = compare_bench(base, cand)
        assert strict["Q1"].verdict == SLOWER
        assert "floor" not in margin_line(strict)


class TestSummarize:
    def test_known_values(self) -> None:
        s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
        assert s == {
            "n": 5.0,
            "mean": 3.0,
            "p50": 3.0,
            "p95": pytest.approx(4.8),
            "p99": pytest.approx(4.96),
            "min": 1.0,
            "max": 5.0,
            "stdev": pytest.approx(1.5811388),
        }

    def test_single_sample_has_zero_spread(self) -> None:
        s = summarize([7.5])
        assert (s["p50"], s["p99"], s["stdev"]) == (7.5, 7.5, 0.0)

    def test_empty_is_refused(self) -> None:
        with pytest.raises(ConfigError, match=r"^latencies has no samples; need at least one$"):
            summarize([])


class TestDecisionRule:
    def test_identical_distributions_do_not_false_alarm(self) -> None:
        clean = 0
        for rep in range(20):
            result = compare_runs(run(2 * rep), run(2 * rep + 1), seed=rep)
            clean += all(c.verdict == NO_CHANGE for c in result.values())
        assert clean >= 19

    @pytest.mark.parametrize(("factor", "verdict"), [(2.0, SLOWER), (0.5, FASTER)])
    def test_large_shift_is_always_flagged(self, factor: float, verdict: str) -> None:
        for rep in range(20):
            result = compare_runs(run(2 * rep), run(2 * rep + 1, factor=factor), seed=rep)
            assert {c.verdict for c in result.values()} == {verdict}
            for c in result.values():
                assert c.ci_low <= c.ratio <= c.ci_high

    def test_fifteen_percent_with_low_noise_is_detected(self) -> None:
        result = compare_runs(run(1, n=200, sigma=0.05), run(2, n=200, sigma=0.05, factor=1.15))
        assert {c.verdict for c in result.values()} == {SLOWER}

    def test_fifteen_percent_in_heavy_noise_is_not_claimed(self) -> None:
        # Too few, too noisy samples to be sure it clears the 10% margin: no verdict.
        c = compare_query(run(1, n=20, sigma=0.8)["Q5"], run(2, n=20, sigma=0.8, factor=1.15)["Q5"])
        assert c.verdict == NO_CHANGE
        assert c.ci_low < 1.10 < c.ci_high

    def test_margin_is_symmetric_in_log_space(self) -> None:
        base = run(1, n=200, sigma=0.05)["Q3"]
        up = compare_query(base, [x * 1.05 for x in base])
        down = compare_query(base, [x / 1.05 for x in base])
        assert up.verdict == down.verdict == NO_CHANGE
        assert compare_query(base, [x / 1.2 for x in base]).verdict == FASTER

    def test_medians_and_ratio(self) -> None:
        c = compare_query([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 100.0])
        assert (c.baseline_median, c.candidate_median, c.ratio) == (2.0, 5.0, 2.5)

    def test_same_seed_gives_same_interval(self) -> None:
        base, cand = run(1)["Q4"], run(2)["Q4"]
        first = compare_query(base, cand, seed=7)
        assert compare_query(base, cand, seed=7) == first
        assert compare_query(base, cand, seed=8).ci_low != first.ci_low

    def test_query_interval_does_not_depend_on_other_queries(self) -> None:
        base, cand = run(1), run(2)
        alone = compare_runs({"Q4": base["Q4"]}, {"Q4": cand["Q4"]})
        assert alone["Q4"] == compare_runs(base, cand)["Q4"]

    def test_to_dict(self) -> None:
        assert comparison(SLOWER, 2.0).to_dict() == {
            "baseline_median": 5.1,
            "candidate_median": 10.2,
            "ratio": 2.0,
            "ci_low": 1.8,
            "ci_high": 2.2,
            "verdict": "slower",
            "confidence": 0.95,
            "threshold": 0.10,
            "widened": 1.0,
            "adjusted": False,
            "min_delta_ms": 0.0,
            "excused": None,
            "adjusted_ratio": None,
            "margin": pytest.approx(1.10),
        }


CONFIDENCE = "confidence must be strictly between 0 and 1 (e.g. 0.95), got"


class TestBadInput:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"threshold": 0}, "threshold must be > 0 (e.g. 0.10 for 10%), got 0"),
            ({"threshold": -0.1}, "threshold must be > 0 (e.g. 0.10 for 10%), got -0.1"),
            ({"confidence": 1.0}, f"{CONFIDENCE} 1.0"),
            ({"confidence": 0}, f"{CONFIDENCE} 0"),
            ({"confidence": 95}, f"{CONFIDENCE} 95"),
            ({"resamples": 10}, "resamples must be at least 100, got 10"),
        ],
    )
    def test_bad_options(self, kwargs: dict[str, float], message: str) -> None:
        with pytest.raises(ConfigError) as e:
            compare_query([1.0], [1.0], **kwargs)
        assert str(e.value) == message

    @pytest.mark.parametrize(
        ("baseline", "candidate", "message"),
        [
            ([], [1.0], "baseline has no samples; need at least one"),
            ([1.0], [], "candidate has no samples; need at least one"),
            (
                [1.0],
                [2.0, 0.0, -1.0],
                "candidate has 2 value(s) that are not finite and > 0 (first: 0.0); "
                "latencies in ms must be positive numbers",
            ),
            (
                [float("nan")],
                [1.0],
                "baseline has 1 value(s) that are not finite and > 0 (first: nan); "
                "latencies in ms must be positive numbers",
            ),
        ],
    )
    def test_bad_samples(self, baseline: list[float], candidate: list[float], message: str) -> None:
        with pytest.raises(ConfigError) as e:
            compare_query(baseline, candidate)
        assert str(e.value) == message

    def test_bad_samples_in_a_run_name_the_query(self) -> None:
        with pytest.raises(ConfigError) as e:
            compare_runs({"Q1": [1.0], "Q2": [1.0]}, {"Q1": [1.0], "Q2": []})
        assert str(e.value) == "Q2: candidate has no samples; need at least one"

    def test_query_missing_from_candidate(self) -> None:
        with pytest.raises(ConfigError) as e:
            compare_runs({"Q1": [1.0], "Q4": [1.0], "Q5": [1.0]}, {"Q1": [1.0]})
        assert str(e.value) == (
            "candidate run has no latencies for Q4, Q5; "
            "measure every baseline query before comparing"
        )

    def test_query_without_baseline_is_left_out(self) -> None:
        assert list(compare_runs({"Q1": [1.0]}, {"Q1": [1.0], "Q11": [1.0]})) == ["Q1"]


class TestGateVerdict:
    def test_go_when_nothing_is_slower(self) -> None:
        decision = gate_verdict({"Q1": comparison(), "Q2": comparison(FASTER, 0.5)})
        assert decision == GateDecision(go=True, reasons=[])
        assert decision.to_dict() == {"go": True, "verdict": "GO", "reasons": []}

    def test_no_go_names_the_slower_query_with_figures(self) -> None:
        slow = QueryComparison(5.1, 12.3, 12.3 / 5.1, 2.2, 2.65, SLOWER)
        decision = gate_verdict({"Q1": comparison(), "Q5": slow})
        assert decision.go is False
        assert decision.reasons == [
            "Q5 slower: median 12.30 ms vs baseline 5.10 ms (+7.20 ms, x2.41, 95% CI "
            "x2.20–x2.65, margin x1.10)"
        ]
        assert decision.to_dict()["verdict"] == "NO-GO"

    def test_the_margin_is_printed_with_every_verdict(self) -> None:
        widened = QueryComparison(1.0, 1.3, 1.3, 1.2, 1.4, NO_CHANGE, widened=1.25)
        assert margin_line({"Q1": widened}) == (
            "margin x1.38 (10% threshold x1.25 for machine drift)"
        )
        assert margin_line({"Q1": widened.to_dict()}) == margin_line({"Q1": widened})
        assert margin_line({"Q1": comparison()}) == "margin x1.10 (10% threshold, no machine drift)"
        assert margin_line({}) == "no query compared"

    def test_a_go_names_each_query_the_floor_excused(self) -> None:
        # the demo's opt1 at 20k: Q6 and Q9 three and two times slower by under 2 ms
        q6 = compare_query([0.71] * 5, [2.17] * 5, min_delta_ms=2.0)
        q9 = compare_query([1.03] * 5, [2.25] * 5, min_delta_ms=2.0)
        q5 = compare_query([5.0] * 5, [5.1] * 5, min_delta_ms=2.0)
        faster = compare_query([1.5] * 5, [0.5] * 5, min_delta_ms=2.0)
        assert [c.verdict for c in (q6, q9, q5, faster)] == [NO_CHANGE] * 4
        assert [c.excused for c in (q6, q9, q5, faster)] == [SLOWER, SLOWER, None, FASTER]
        comps = {"Q5": q5, "Q6": q6, "Q9": q9, "Q1": faster}
        assert gate_verdict(comps).go
        assert margin_line(comps) == (
            "margin x1.10 (10% threshold, no machine drift); "
            "Q6 x3.06 (+1.46 ms, under the 2 ms floor: not counted); "
            "Q9 x2.18 (+1.22 ms, under the 2 ms floor: not counted); "
            "Q1 faster x0.33 (-1.00 ms)"
        )
        # as saved in rollout.json, the same line
        assert margin_line({q: c.to_dict() for q, c in comps.items()}) == margin_line(comps)
        # a floor of 0: the same changes count, nothing is excused
        assert compare_query([0.71] * 5, [2.17] * 5).verdict == SLOWER
        assert compare_query([0.71] * 5, [2.17] * 5).excused is None
        # a comparison saved without its floor: still named, the floor unnamed
        old = {k: v for k, v in q6.to_dict().items() if k not in ("excused", "min_delta_ms")}
        assert margin_line({"Q6": old}) == (
            "margin x1.10 (10% threshold, no machine drift); "
            "Q6 x3.06 (+1.46 ms, under the floor: not counted)"
        )

    def test_no_go_on_changed_result_even_when_faster(self) -> None:
        decision = gate_verdict(
            {"Q3": comparison(), "Q4": comparison(FASTER, 0.3)},
            fingerprints_ok={"Q3": True, "Q4": False},
        )
        assert decision == GateDecision(
            go=False, reasons=["Q4 result changed: fingerprint differs from baseline"]
        )

    def test_fingerprint_without_timing_still_counts(self) -> None:
        decision = gate_verdict({"Q1": comparison()}, fingerprints_ok={"Q9": False})
        assert decision.reasons == ["Q9 result changed: fingerprint differs from baseline"]

    def test_end_to_end_regression_is_no_go(self) -> None:
        base, cand = run(1), run(2)
        cand["Q5"] = [x * 2 for x in cand["Q5"]]
        decision = gate_verdict(compare_runs(base, cand))
        assert not decision.go
        assert len(decision.reasons) == 1
        assert decision.reasons[0].startswith("Q5 slower: median ")


class TestHelpers:
    def test_geometric_mean_of_ratios(self) -> None:
        assert geometric_mean([2.0, 0.5]) == pytest.approx(1.0)
        assert geometric_mean([1.0, 4.0, 16.0]) == pytest.approx(4.0)

    def test_geometric_mean_refuses_non_positive(self) -> None:
        with pytest.raises(ConfigError) as e:
            geometric_mean([1.0, 0.0])
        assert str(e.value) == (
            "values has 1 value(s) that are not finite and > 0 (first: 0.0); "
            "ratios must be positive numbers"
        )

    def test_speedup_table(self) -> None:
        rows = speedup_table({"Q1": comparison(FASTER, 0.5), "Q2": comparison()})
        assert [(r["query"], r["verdict"], r["change_pct"]) for r in rows] == [
            ("Q1", FASTER, -50.0),
            ("Q2", NO_CHANGE, 0.0),
        ]
