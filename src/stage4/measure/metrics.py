"""A benchmark run as data (``BenchRun``) and its export, ``METRICS_<LABEL>.json``.

Fields of METRICS_<LABEL>.json (all latencies in milliseconds, client-side)::

    label           run label (BASELINE, OPT1 …)
    run_id          id in <bench_schema>.runs (null if the run was not stored)
    revision        Alembic revision of the database when measured
    started_at      ISO timestamp; seconds: wall time of the whole run
    options         iterations (rounds), sets (parameter sets per query), control_ms
                    (median of a CPU-bound control query timed before every query: how
                    loaded the machine was; diagnostic only), concurrency, duration (s) of the throughput phase, seed
    overall         n, mean, p50, p95, p99, min, max, stdev over every execution of the
                    reads (Q1–Q10 and the app's files; the writes are not in it);
                    qps (throughput phase: queries per second over `concurrency`
                    connections), cache_hit_pct (shared-buffer hits / block requests on
                    the app schema's tables and indexes during the timed phases),
                    cache_hit_db_pct (the same for the whole database)
    queries         per query id: kind ("read", or "write": W1–W3, the app's insert,
                    geometry update and delete, each in a transaction rolled back;
                    judged by their own margin and floor), title, variant (the SQL
                    used: "base" or a revision's variant), fingerprint (hash of its
                    ordered results on fixed parameters; a write's: rows affected and
                    the row read back before the rollback), n, mean, p50, p95, p99,
                    min, max, stdev of single executions (raw ms); round_median (its
                    median over the rounds: the figure whose ratio, ``stats.ratio``,
                    every verdict line, REPORT.md and rollout.json print); samples
                    (per round, the mean over the `sets` parameter sets: what the gate
                    compares);
                    executions (every single latency, raw, in execution order)
    environment     PostgreSQL and PostGIS versions, row count, server settings, git sha,
                    machine, parameter-sequence digest, throughput tool,
                    writes_rolled_back (rows the writes wrote, rolled back: taken off
                    load.app_writes)

Report and gate read this file; keep the field names stable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stage4.config import redact
from stage4.measure import stats
from stage4.queries import is_write


@dataclass
class BenchRun:
    """One measured run of the workload."""

    label: str
    samples: dict[str, list[float]]
    fingerprints: dict[str, str]
    variants: dict[str, str]
    executions: dict[str, list[float]] = field(default_factory=dict)
    sets: int = 1
    control: list[float] = field(default_factory=list)
    run_id: int | None = None
    revision: str | None = None
    qps: float | None = None
    cache_hit: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    seconds: float | None = None
    iterations: int = 0
    concurrency: int = 0
    duration: float = 0.0

    def _latencies(self) -> dict[str, list[float]]:
        return self.executions or self.samples

    def _reads(self) -> dict[str, list[float]]:
        return {q: v for q, v in self._latencies().items() if not is_write(q)}

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """Per-query latency statistics of single executions (``stats.summarize``)."""
        return {q: stats.summarize(v) for q, v in self._latencies().items() if v}

    @property
    def overall(self) -> dict[str, float]:
        """Statistics over every execution of the reads, plus qps and cache-hit percentages."""
        every = [ms for v in self._reads().values() for ms in v]
        out: dict[str, Any] = stats.summarize(every) if every else {}
        db_hit = self.environment.get("cache_hit_db")
        out["qps"] = self.qps
        out["cache_hit_pct"] = None if self.cache_hit is None else 100.0 * self.cache_hit
        out["cache_hit_db_pct"] = None if db_hit is None else 100.0 * db_hit
        return out

    @property
    def mean(self) -> float:
        return self.overall["mean"]

    @property
    def p50(self) -> float:
        return self.overall["p50"]

    @property
    def p95(self) -> float:
        return self.overall["p95"]

    @property
    def p99(self) -> float:
        return self.overall["p99"]

    def to_dict(self) -> dict[str, Any]:
        from stage4.measure.workload import title

        summary = self.summary
        return {
            "label": self.label,
            "run_id": self.run_id,
            "revision": self.revision,
            "started_at": self.started_at,
            "seconds": self.seconds,
            "options": {
                "iterations": self.iterations,
                "sets": self.sets,
                "concurrency": self.concurrency,
                "duration": self.duration,
                "seed": self.environment.get("seed"),
                "control_ms": self.environment.get("control_ms"),
            },
            "overall": self.overall,
            "queries": {
                q: {
                    "kind": "write" if is_write(q) else "read",
                    "title": title(q),
                    "variant": self.variants.get(q, "base"),
                    "fingerprint": self.fingerprints.get(q),
                    **summary.get(q, {}),
                    "round_median": float(np.median(v)),
                    "samples": v,
                    "executions": self.executions.get(q, []),
                }
                for q, v in self.samples.items()
            },
            "environment": self.environment,
        }

    def to_json(self) -> str:
        return redact(json.dumps(self.to_dict(), indent=2, default=str))


def round_samples(executions: dict[str, list[float]], sets: int) -> dict[str, list[float]]:
    """The gate's samples: per round, each query's mean over its ``sets`` executions."""
    rounds = min((len(v) // sets for v in executions.values()), default=0)
    return {
        q: [sum(v[i * sets : (i + 1) * sets]) / sets for i in range(rounds)]
        for q, v in executions.items()
    }


def export(run: BenchRun, folder: Path | str) -> Path:
    """Write METRICS_<LABEL>.json into ``folder`` (created if needed); return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"METRICS_{run.label.upper()}.json"
    path.write_text(run.to_json())
    return path
