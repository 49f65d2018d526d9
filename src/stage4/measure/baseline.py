"""The baseline: which stored run it is, and how another run compares with it.

``stage4 baseline`` and ``stage4 compare`` are these two functions; the gate takes
and judges against its own baseline (``gate``, ``judging``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stage4.config import settings
from stage4.measure import stats, store
from stage4.measure.metrics import BenchRun
from stage4.measure.workload import require_measured
from stage4.plumbing import locks
from stage4.plumbing.db import connect


def choose(
    url: str,
    run_id: int | None,
    *,
    force: bool,
    workload: Path | None,
    measure: Callable[[], BenchRun],
) -> int:
    """Store run ``run_id`` as the baseline, else the latest run, else one ``measure()``
    takes now; returns its id. The run must hold every query of the ``workload`` folder.
    Refuses to replace a baseline unless ``force``; one rollout or baseline at a time."""
    with locks.rollout_lock(url, "baseline"):
        with connect(url, autocommit=True) as conn:
            store.ensure(conn, settings())
            chosen = run_id or store.latest_run_id(conn)
        if chosen is None:
            chosen = measure().run_id
        with connect(url, autocommit=True) as conn:
            require_measured(store.load_run(conn, chosen), workload, f"run {chosen}")
            store.set_baseline(conn, chosen, force=force)
    return chosen


@dataclass
class Comparison:
    """A run against the baseline: per query, the comparison and whether its results
    are the same; ``decision`` is GO or NO-GO with its reasons."""

    base: BenchRun
    run: BenchRun
    queries: dict[str, stats.QueryComparison]
    same: dict[str, bool]
    decision: stats.GateDecision

    @property
    def ratio_mean(self) -> float:
        """The geometric mean of the per-query ratios."""
        return stats.geometric_mean([c.ratio for c in self.queries.values()])


def compare(
    url: str,
    run_id: int | None,
    *,
    threshold: float,
    confidence: float,
    workload: Path | None = None,
) -> Comparison:
    """Run ``run_id`` (default: the latest) against the baseline, both holding every
    query of the ``workload`` folder."""
    with connect(url, autocommit=True) as conn:
        base, run = store.baseline_and_run(conn, run_id)
    require_measured(base, workload, f"the baseline (run {base.run_id})")
    require_measured(run, workload, f"run {run.run_id}")
    queries = stats.compare_bench(base, run, threshold=threshold, confidence=confidence)
    same = {q: run.fingerprints.get(q) == fp for q, fp in base.fingerprints.items()}
    return Comparison(base, run, queries, same, stats.gate_verdict(queries, same))
