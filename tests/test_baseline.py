"""baseline.choose and baseline.compare: the library behind `stage4 baseline` and `compare`."""

from __future__ import annotations

import pytest

from stage4.measure import baseline, bench

FAST = {"iterations": 1, "concurrency": 1, "duration": 1.0}


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_two_stored_runs_print_one_ratio_per_query(seeded_url: str) -> None:
    """`stage4 compare`'s table, the comparison and the database's own baseline_comparison
    view give each query the same ratio (its medians'), its sign the delta's."""
    import re

    import numpy as np
    import psycopg
    from typer.testing import CliRunner

    from stage4.cli import app
    from stage4.config import settings
    from stage4.measure import stats

    base = bench.run(seeded_url, label="BASELINE", **{**FAST, "iterations": 3})
    baseline.choose(seeded_url, base.run_id, force=True, workload=None, measure=pytest.fail)
    run = bench.run(seeded_url, label="AGAIN", **{**FAST, "iterations": 3})
    c = baseline.compare(seeded_url, run.run_id, threshold=0.10, confidence=0.95)
    out = CliRunner().invoke(app, ["--database-url", seeded_url, "compare", str(run.run_id)])
    assert out.exit_code in (0, 3), out.output
    with psycopg.connect(seeded_url) as conn:
        view = dict(
            conn.execute(
                f"SELECT query_id, ratio FROM {settings().bench_schema}.baseline_comparison "
                "WHERE run_id = %s",
                (run.run_id,),
            ).fetchall()
        )
    for q, comp in c.queries.items():
        b, a = float(np.median(base.samples[q])), float(np.median(run.samples[q]))
        assert comp.ratio == stats.ratio(b, a) == pytest.approx(a / b)
        assert (comp.ratio > 1) == (a > b)
        assert f"{view[q]:.2f}" == f"{comp.ratio:.2f}", q
        cells = next(line for line in out.output.splitlines() if re.match(rf"\W*{q}\W", line))
        assert f"x{comp.ratio:.2f}" in cells, cells
        if comp.adjusted_ratio is not None:
            assert f"x{comp.adjusted_ratio:.2f}" in cells, cells
