"""baseline.choose and baseline.compare: the library behind `stage4 baseline` and `compare`."""

from __future__ import annotations

import pytest

from stage4 import baseline, bench

FAST = {"iterations": 1, "concurrency": 1, "duration": 1.0}


def test_choose_measures_a_run_only_when_none_is_stored(seeded_url: str) -> None:
    measured: list[int] = []

    def measure():
        run = bench.run(seeded_url, label="BASELINE", **FAST)
        measured.append(run.run_id)
        return run

    first = baseline.choose(seeded_url, None, force=False, workload=None, measure=measure)
    assert measured == [first]
    again = baseline.choose(seeded_url, None, force=False, workload=None, measure=measure)
    assert again == first and measured == [first]  # the latest stored run: nothing measured


def test_a_run_compared_with_itself_is_go_with_the_same_results(seeded_url: str) -> None:
    run = bench.run(seeded_url, label="BASELINE", **FAST)
    chosen = baseline.choose(
        seeded_url, run.run_id, force=False, workload=None, measure=lambda: pytest.fail()
    )
    assert chosen == run.run_id
    c = baseline.compare(seeded_url, None, threshold=0.10, confidence=0.95)
    assert c.base.run_id == c.run.run_id == run.run_id
    assert set(c.same) == set(run.fingerprints) and all(c.same.values())
    assert set(c.queries) == set(run.samples)
    assert c.decision.go, c.decision.reasons
    assert c.ratio_mean == pytest.approx(1.0)
