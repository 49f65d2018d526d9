"""benchmarks/scale.py's section and targets, from a stored result (no database involved:
these check the arithmetic and the labels, the figures come from the run itself).

What they pin: the headline mean and geomean are Q1–Q10's, a workload file counts in
its own target (none slower than ×2); a rewrite the app would have to adopt is listed apart and counts
in no target; a read the canary check found stale is labelled where its speedup is shown;
a re-render keeps the hand-written diagnosis of the misses."""

from __future__ import annotations

from benchmarks import scale

from stage4.measure.workload import TITLES


def _summary(ms: dict[str, float], qps: float, rewrites: dict | None = None) -> dict:
    return {
        "median_ms": dict(ms),
        "mean_ms": dict(ms),
        "set_median_ms": {q: [v] * 4 for q, v in ms.items()},
        "overall_mean_ms": sum(ms.values()) / len(ms),
        "qps": qps,
        "control_ms": 4.0,
        "fingerprints": {q: "same" for q in ms},
        "runs": 2,
        "contract": {q: "RPC" if q in {"Q4", "Q8", "Q10"} else "SQL" for q in ms},
        "workload_files": {"app_by_id": "benchmarks/workload/app_by_id.sql"},
        "errors": {},
        "available_rewrites": rewrites or {},
    }


def _result() -> dict:
    a = {q: 10.0 for q in TITLES} | {"app_by_id": 0.2}
    # every Q 5x faster but Q8 (100x, served stale from a view); the file slower
    b = {q: 2.0 for q in TITLES} | {"Q8": 0.1, "app_by_id": 0.5}
    rewrite = {"Q2": {"gis_columns": {"sql": "SELECT 1", "same_results": True,
                                      "app_ms": 2.0, "rewrite_ms": 0.02, "speedup": 100.0}}}  # fmt: skip
    fresh = {q: {"fresh": True, "declared": None} for q in TITLES}
    stale = fresh | {"Q8": {"fresh": False, "declared": ["opt5", "up to 5 minutes"]}}
    return {
        "features": 1000,
        "home": "/tmp/x",
        "load_average_start": [1.0, 0.5, 0.25],
        "finished_at": "2026-01-01 00:00 UTC",
        "workload": "benchmarks/workload",
        "bench": {"schema": _summary(a, 10), "opt5": _summary(b, 30, rewrite)},
        "freshness": {"schema": fresh, "opt5": stale},
        "migrations": {},
        "ab": {
            "schema": _summary(a, 10),
            "opt5": _summary(b, 30, rewrite),
            "order": "A B A B ",
            "pairs": [{"verdicts": {q: "faster" for q in a}}] * 2,
        },
    }


def _targets(result: dict) -> dict[str, tuple[str, bool | None]]:
    return {name: (figure, ok) for name, figure, ok in scale.targets(result)}


def test_the_headline_mean_and_geomean_are_q1_to_q10s_and_a_file_twice_slower_fails():
    t = _targets(_result())
    fresh = "; the fresh reads alone (Q1, Q2, Q3, Q4, Q5, Q6, Q7, Q9, Q10): mean ×5.00, geomean ×5.00 by median"
    assert t["mean latency Q1–Q10 ≥ 3× lower"] == ("×5.52 (10.00 → 1.81 ms)" + fresh, True)
    geo = t["geometric mean of Q1–Q10's speedups ≥ 2×"]
    assert geo == ("×6.75 by median, ×6.75 by mean" + fresh, True)
    reads = t["no app read (Q1–Q10, R1–R3) slower than ×1.2 unless by less than 0.5 ms (median)"]
    assert reads == ("none; worst Q1 ×5.00 (10.00 → 2.00 ms)", True)
    assert t["no write slower than ×1.5 unless by less than 1 ms (median)"] == (
        "none measured",
        True,
    )
    own = t["the user's own SQL (app_by_id) none slower than ×2"]
    assert own == ("slower: app_by_id ×0.40 (0.20 → 0.50 ms)", False)


def test_a_rewrite_is_listed_as_available_and_counts_in_no_target():
    result = _result()
    without = _result()
    for side in ("opt5",):
        without["ab"][side]["available_rewrites"] = {}
        without["bench"][side]["available_rewrites"] = {}
    assert scale.targets(result) == scale.targets(without)
    text = scale.markdown(result, "cmd")
    assert "**Available if your app adopts it**" in text
    assert "| Q2 | gis_columns | yes | 2.00 | 0.02 | ×100.00 |" in text
    assert "variant" not in text


def test_a_stale_read_is_labelled_with_its_budget_and_an_undeclared_one_fails():
    result = _result()
    text = scale.markdown(result, "cmd")
    assert "| ×100.00 (stale, declared by opt5) |" in text  # the per-revision speedup of Q8
    assert "| opt5 | Q8 | up to 5 minutes (declared by opt5) |" in text
    name = "results fresh, or stale within a declared budget"
    assert _targets(result)[name] == ("stale: Q8 (declared by opt5: up to 5 minutes)", True)
    result["freshness"]["opt5"]["Q8"]["declared"] = None
    assert _targets(result)[name] == ("stale: Q8 (undeclared)", False)


def test_a_re_render_keeps_the_hand_written_diagnosis(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# B\n\n{scale.SECTION}\n\nold figures\n\n{scale.NOTES}\n\nwhy Q6 is slower\n"
                   "\n## Next\n\nkept\n")  # fmt: skip
    scale.write_markdown(scale.markdown(_result(), "cmd"), doc)
    text = doc.read_text()
    assert "old figures" not in text
    assert text.count(scale.NOTES) == 1 and "why Q6 is slower" in text
    assert text.index("why Q6 is slower") < text.index("## Next") and text.endswith("kept\n")
