"""Latency statistics and the GO/NO-GO decision rule of the benchmark gate.

Pure functions on lists of latencies in milliseconds; no database here.

The decision rule, per query
----------------------------
We compare the *median* latency of the candidate run (after a migration step) with
the median of the baseline run (the state before, see "Machine drift"), as the ratio
``candidate / baseline``, and put a percentile bootstrap confidence interval (95% by
default) around that ratio.

* **slower** when the whole interval lies above ``1 + threshold`` (default: the
  lower bound exceeds 1.10, i.e. we are confident it is at least 10% slower);
* **faster** when the whole interval lies below ``1 / (1 + threshold)`` (the upper
  bound is under 1/1.10 ≈ 0.909; the same margin in log-space, so "twice as slow"
  and "twice as fast" are treated alike);
* otherwise **no significant change**.

The gate says NO-GO when any query is *slower* or returns different results.

The app's writes (W1–W3, ``queries.WRITES``: insert, geometry update, delete, measured in
transactions that roll back) are queries like the others, judged by the same rule with
their own margin and floor (``rule``): with the gate's default options (10 %, 2 ms), slower
when the interval lies above x1.5 (``WRITE_THRESHOLD``) and the median moved by more than
1 ms (``WRITE_MIN_DELTA_MS``). Both follow the options in proportion (five times the
threshold, half the floor), so an option that loosens or tightens the reads' rule moves the
writes' with it, and ``min_delta_ms=0`` is the pure statistical rule for both. A write
costs a fraction of a millisecond and is paid once per edit, not once per map view: a
trigger or an index that adds a few tenths of a millisecond to it is the price of the reads
it buys, not a regression; one that multiplies it by milliseconds is. Every line names a
write with its title ("W1 insert").

Machine drift
-------------
A shared 2-core VM does not keep its speed: a CPU-bound control query
(``bench.CONTROL_SQL``, timed before every query of every round) can take almost twice
as long in one run as in another a few minutes later on the same idle database, and
every query moves with it; with other work running, the speed swings within a run too.
A ratio of raw medians taken across such swings says more about the machine than about
the migration. Three defences, in this order:

1. *Same window.* The gate measures the state it starts from right before the first
   step (``gate``), and each step against the run measured just before it, so the two
   runs of a comparison are minutes apart, not hours.
2. *Each round against its own control.* ``compare_bench`` divides every round's sample
   by the median control time of that round (``control_adjusted``), so a round run while
   the machine was busy counts as what it would have taken at the common speed. The
   interval and the verdict use these samples (``adjusted_ratio``); the medians and
   ``ratio`` stay the measured milliseconds and their ratio, the report's figures. Both
   ratios are printed side by side (``ratio_text``), and every verdict says it judged
   the corrected one (``margin_line``).
3. *A bounded widening* for what the control does not explain (queries do not move
   exactly as the control does): both margins are widened by the square root of the
   run-level drift (``RESIDUAL_SENSITIVITY``), never by more than ``MAX_WIDENING``. The
   cap is the point: a margin of at most 1.10 x 1.5 = 1.65 means a query twice as slow
   is still called slower however busy the machine was. (Widening by the drift squared,
   uncapped, reaches x2-x4 on a busy machine and lets a regression of x5 through as "no
   significant change".)

The three were chosen by replaying rules on the same stored runs of a busy machine
(``benchmarks/verdict_agreement.py``; figures in BENCHMARKS.md, "Verdict agreement").

Runs without per-round controls (stored before the control existed) are compared raw,
with the widening ``max(drift, 1/drift)`` (``DRIFT_SENSITIVITY``), capped alike. Every
comparison records the margin it used (``margin``, ``widened``), and every verdict prints
it, GO included (``margin_line``).

The gate also passes ``min_delta_ms`` (default 2 ms, ``stage4 upgrade --min-delta-ms``):
a change must also move the median by more than that many milliseconds to count.
A 0.6 ms KNN lookup that becomes 1.8 ms on a partitioned table is three times
slower, and no user of a web map behind PostgREST can see it; a 5 ms query that
becomes 12 ms is flagged. The pure statistical rule is ``min_delta_ms=0``. What the
floor excused is never hidden: a query whose interval cleared the margin while its
median moved less than the floor is recorded (``excused``) and named after the margin
of every verdict, GO included ("Q6 x3.06 (+1.46 ms, under the 2 ms floor: not counted)"),
as is every other query whose figures moved beyond the margin (``moved``).

Why this rule
-------------
The benchmarks run on a 2-core shared machine: autovacuum, the page cache and
neighbours make single timings jumpy and skewed, with long tails. The median shrugs
off those outliers where a mean would not; the bootstrap needs no assumption about
the shape of the distribution; and the ratio makes the rule the same for a 0.3 ms
lookup and a 40 ms tile. A confidence interval alone is not enough: with a few
hundred samples it will call a real but harmless 2% drift "significant", and with
ten queries per step some interval will miss 1.0 by chance. The practical-
significance margin (``threshold``) means that two runs of the same code do not
false-alarm, while a regression that matters (a lost index, a plan gone from 5 ms
to 12 ms) still clears the margin by a wide interval and is flagged.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from stage4.errors import ConfigError
from stage4.queries import WRITES, is_write

SLOWER = "slower"
FASTER = "faster"
NO_CHANGE = "no significant change"

# Raw samples: the margin follows the control's own move (see "Machine drift") ...
DRIFT_SENSITIVITY = 1.0
# ... samples adjusted round by round by their control: the square root of that move ...
RESIDUAL_SENSITIVITY = 0.5
# ... up to this factor, so that a 2x regression always clears the margin (1.10 x 1.5).
MAX_WIDENING = 1.5
# Fewer resamples make the 2.5th/97.5th percentiles of the bootstrap mostly noise.
MIN_RESAMPLES = 100
# Resampled indices held in memory at once (int32), so very long runs stay small.
_CHUNK_ELEMENTS = 4_000_000
# The gate's default options (``stage4 upgrade --threshold --min-delta-ms``) ...
THRESHOLD, MIN_DELTA_MS = 0.10, 2.0
# ... and a write's margin and floor at those (see "The decision rule"): x1.5, 1 ms.
WRITE_THRESHOLD, WRITE_MIN_DELTA_MS = 0.50, 1.0


def rule(qid: str, threshold: float = THRESHOLD, min_delta_ms: float = 0.0) -> tuple[float, float]:
    """The (threshold, floor in ms) query ``qid`` is judged by, given the options: the
    options themselves for a read; for a write, the write's, scaled as the options are
    from the gate's defaults."""
    if not is_write(qid):
        return threshold, min_delta_ms
    return (threshold * (WRITE_THRESHOLD / THRESHOLD),
            min_delta_ms * (WRITE_MIN_DELTA_MS / MIN_DELTA_MS))  # fmt: skip


def name(qid: str) -> str:
    """How a line names a query: its id, and a write's title ("W1 insert")."""
    return f"{qid} {WRITES[qid]}" if is_write(qid) else qid


def summarize(latencies_ms: Sequence[float]) -> dict[str, float]:
    """Describe one query's latencies (ms) for the report: n, mean, percentiles, spread.

    Percentiles use linear interpolation (numpy's default); ``stdev`` is the sample
    standard deviation (0.0 for a single sample).
    """
    x = _as_samples(latencies_ms, "latencies")
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {
        "n": float(x.size),
        "mean": float(x.mean()),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "min": float(x.min()),
        "max": float(x.max()),
        "stdev": float(x.std(ddof=1)) if x.size > 1 else 0.0,
    }


CORRECTED = "with the machine's speed taken out"


def ratio(baseline_ms: float, candidate_ms: float) -> float:
    """The one ratio of a query: candidate median / baseline median, as measured (ms).
    Above 1 exactly when the candidate's median is the larger: its sign is the delta's."""
    return float(candidate_ms) / float(baseline_ms)


@dataclass(frozen=True)
class QueryComparison:
    """One query, baseline vs candidate: medians (ms), their ratio, the interval of the
    ratio judged, the verdict.

    ``ratio`` is always ``ratio(baseline_median, candidate_median)``; ``adjusted_ratio``
    is the same on control-adjusted samples (``compare_bench``; None when the runs have no
    per-round control), and the interval ``ci_low``–``ci_high`` is then its interval."""

    baseline_median: float
    candidate_median: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str
    confidence: float = 0.95
    threshold: float = 0.10
    widened: float = 1.0  # margin factor for machine drift (1.0: none)
    adjusted: bool = False  # ratio and interval on control-adjusted samples (compare_bench)
    min_delta_ms: float = 0.0  # the floor: a median must move by more to count
    # what the interval said (slower/faster) when the floor alone made it "no significant
    # change"; named beside every verdict (``margin_line``), never hidden
    excused: str | None = None
    adjusted_ratio: float | None = None  # the ratio with the machine's speed taken out

    @property
    def margin(self) -> float:
        """The ratio the interval had to clear: ``(1 + threshold) * widened``."""
        return (1.0 + self.threshold) * self.widened

    @property
    def judged_ratio(self) -> float:
        """The ratio the verdict judged, whose interval ``ci_low``–``ci_high`` is."""
        return self.ratio if self.adjusted_ratio is None else self.adjusted_ratio

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "margin": self.margin}


@dataclass(frozen=True)
class GateDecision:
    """GO or NO-GO for one migration step, with one line per offending query."""

    go: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        verdict = "GO" if self.go else "NO-GO"
        return {"go": self.go, "verdict": verdict, "reasons": list(self.reasons)}


def compare_query(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    threshold: float = 0.10,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    min_delta_ms: float = 0.0,
    drift: float = 1.0,
) -> QueryComparison:
    """Apply the module's decision rule to one query's baseline and candidate latencies.

    ``drift``: the control query's median ratio between the two runs (1.0: unknown or
    unchanged); see "Machine drift".
    """
    _check_options(threshold, confidence, resamples)
    base = _as_samples(baseline, "baseline")
    cand = _as_samples(candidate, "candidate")

    rng = np.random.default_rng(seed)
    ratios = _bootstrap_medians(cand, resamples, rng) / _bootstrap_medians(base, resamples, rng)
    alpha = 1.0 - confidence
    ci_low, ci_high = np.percentile(ratios, [100 * alpha / 2, 100 * (1 - alpha / 2)])

    base_median = float(np.median(base))
    cand_median = float(np.median(cand))
    if min_delta_ms < 0:
        raise ConfigError(f"min_delta_ms must be >= 0, got {min_delta_ms}")
    moved = abs(cand_median - base_median) > min_delta_ms
    widened = widening(drift)
    margin = (1.0 + threshold) * widened
    if ci_low > margin:
        beyond = SLOWER
    elif ci_high < 1.0 / margin:
        beyond = FASTER
    else:
        beyond = NO_CHANGE
    verdict = beyond if moved else NO_CHANGE
    return QueryComparison(
        baseline_median=base_median,
        candidate_median=cand_median,
        ratio=ratio(base_median, cand_median),
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        verdict=verdict,
        confidence=confidence,
        threshold=threshold,
        widened=widened,
        min_delta_ms=min_delta_ms,
        excused=None if beyond == verdict else beyond,
    )


def widening(drift: float) -> float:
    """The margin factor for a control ratio ``drift``: symmetric in log-space, from 1 to
    ``MAX_WIDENING``."""
    if not (drift > 0 and math.isfinite(drift)):
        raise ConfigError(f"drift must be a positive ratio, got {drift!r}")
    return min(MAX_WIDENING, math.exp(DRIFT_SENSITIVITY * abs(math.log(drift))))


def margin_line(comparisons: Mapping[str, Any], against: str = "") -> str:
    """The margin a set of comparisons used and the ratio it judged, for a verdict line (GO
    or NO-GO), then every query whose figures moved (``moved``). ``against``: what was
    compared with ("baseline"), said after the margin.

    Accepts ``QueryComparison`` objects or their ``to_dict()`` (as saved in rollout.json).
    The widening is the same for every query of one comparison (one control per run).
    """
    if not comparisons:
        return "no query compared"
    reads = [c for q, c in comparisons.items() if not is_write(q)]
    c = figures(reads[0] if reads else next(iter(comparisons.values())))
    threshold, widened = float(c["threshold"]), float(c.get("widened", 1.0))
    margin = (1.0 + threshold) * widened
    drifted = round(widened, 2) > 1.0  # x1.00 printed is no drift
    why = (f"{threshold:.0%} threshold x{widened:.2f} for machine drift"
           if drifted else f"{threshold:.0%} threshold, no machine drift")  # fmt: skip
    line = f"margin x{margin:.2f} ({why})" + (f" vs {against}" if against else "")
    if c["adjusted_ratio"] is not None:
        line += f", judged on the ratios {CORRECTED}"
    written = [figures(w) for q, w in comparisons.items() if is_write(q)]
    if written and reads:
        w = written[0]
        m = (1.0 + float(w["threshold"])) * float(w.get("widened", 1.0))
        line += f"; writes: margin x{m:.2f}, floor {float(w.get('min_delta_ms', 0.0)):g} ms"
    return "; ".join([line, *moved(comparisons)])


def figures(comp: Any) -> dict[str, Any]:
    """A comparison (object or saved dict) as a dict whose ``ratio`` is ``ratio()`` of its
    medians and whose ``adjusted_ratio`` is the corrected one or None. A saved comparison
    that kept one ratio only held the adjusted one there when ``adjusted``."""
    d = dict(comp) if isinstance(comp, Mapping) else comp.to_dict()
    adjusted = d.get("adjusted_ratio")
    if adjusted is None and "adjusted_ratio" not in d and d.get("adjusted"):
        adjusted = d.get("ratio")
    d["ratio"] = ratio(d["baseline_median"], d["candidate_median"])
    d["adjusted_ratio"] = None if adjusted is None else float(adjusted)
    return d


def ratio_text(comp: Any) -> str:
    """How every line prints a query's ratio: "x2.11", or where the machine's speed was
    taken out "x2.11 raw, x1.45 with the machine's speed taken out"."""
    d = figures(comp)
    text = f"x{d['ratio']:.2f}"
    if d["adjusted_ratio"] is not None:
        text += f" raw, x{d['adjusted_ratio']:.2f} {CORRECTED}"
    return text


def moved(comparisons: Mapping[str, Any]) -> list[str]:
    """One phrase per query whose figures moved beyond the rule, in order:

    * counted: "Q4 slower x2.11 (+5.36 ms)", "Q2 faster x0.40 (-3.10 ms)";
    * a slowdown the floor excused: "Q6 x3.06 (+1.46 ms, under the 2 ms floor: not
      counted)"; a speed-up under the floor is just "faster";
    * a ratio (raw or corrected) beyond the margin with the median moved by more than the
      floor, whose interval did not clear the margin: named with that interval.

    The floor and the interval keep changes out of the verdict; this keeps them in sight.
    """
    out = []
    for qid, comp in comparisons.items():
        d = figures(comp)
        delta = float(d["candidate_median"]) - float(d["baseline_median"])
        floor = float(d.get("min_delta_ms", 0.0))
        figs = f"{ratio_text(d)} ({delta:+.2f} ms"
        # a file without the floor recorded: an interval that cleared was excused by it
        excused = d.get("excused") or (_cleared(d) if d["verdict"] == NO_CHANGE else None)
        who = name(qid)
        if d["verdict"] in (SLOWER, FASTER):
            out.append(f"{who} {d['verdict']} {figs})")
        elif excused == SLOWER:
            under = f"the {floor:g} ms floor" if "min_delta_ms" in d else "the floor"
            out.append(f"{who} {figs}, under {under}: not counted)")
        elif excused == FASTER:
            out.append(f"{who} faster {figs})")
        elif abs(delta) > floor and _beyond(d):
            conf = float(d.get("confidence", 0.95))
            interval = f"its {conf:.0%} CI x{d['ci_low']:.2f}–x{d['ci_high']:.2f}"
            kept = "not counted" if delta > 0 else "no significant change"
            out.append(f"{who} {figs}, {kept}: {interval} does not clear the margin)")
    return out


def _cleared(d: Mapping[str, Any]) -> str | None:
    """SLOWER or FASTER when the interval cleared the margin that way, else None."""
    margin = (1.0 + float(d["threshold"])) * float(d.get("widened", 1.0))
    if float(d["ci_low"]) > margin:
        return SLOWER
    return FASTER if float(d["ci_high"]) < 1.0 / margin else None


def _beyond(d: Mapping[str, Any]) -> bool:
    """Whether the raw or the corrected ratio lies beyond the margin, either way."""
    margin = (1.0 + float(d["threshold"])) * float(d.get("widened", 1.0))
    ratios = [d["ratio"]] + ([d["adjusted_ratio"]] if d["adjusted_ratio"] is not None else [])
    return any(r > margin or r < 1.0 / margin for r in ratios)


def control_drift(baseline_control: Sequence[float], candidate_control: Sequence[float]) -> float:
    """Ratio of the control query's medians (candidate / baseline); 1.0 when either run
    has no control timings (runs stored before the control existed)."""
    if len(baseline_control) == 0 or len(candidate_control) == 0:
        return 1.0
    base = _as_samples(baseline_control, "baseline control")
    cand = _as_samples(candidate_control, "candidate control")
    return float(np.median(cand) / np.median(base))


def compare_bench(baseline: Any, candidate: Any, **kw: Any) -> dict[str, QueryComparison]:
    """``compare_runs`` on two benchmark runs (``samples`` and ``control`` attributes): the
    one entry point of the gate, ``stage4 compare`` and the benchmark scripts.

    When both runs carry their control timings round by round, each round's samples are
    divided by that round's control (``control_adjusted``) before the ratio and its
    interval are computed; the medians reported stay the measured ones (milliseconds, as
    in the report's tables). The margin is still widened by what is left of the drift
    (``RESIDUAL_SENSITIVITY``). Runs without per-round controls fall back to the raw
    samples and the full widening.
    """
    drift = control_drift(getattr(baseline, "control", []), getattr(candidate, "control", []))
    base_ctrl = round_controls(baseline)
    cand_ctrl = round_controls(candidate)
    if base_ctrl is None or cand_ctrl is None:
        return compare_runs(baseline.samples, candidate.samples, drift=drift, **kw)
    scale = float(np.median(np.concatenate([base_ctrl, cand_ctrl])))
    adjusted = compare_runs(
        control_adjusted(baseline.samples, base_ctrl, scale),
        control_adjusted(candidate.samples, cand_ctrl, scale),
        drift=drift**RESIDUAL_SENSITIVITY,
        **{k: v for k, v in kw.items() if k != "min_delta_ms"},
    )
    out = {}
    for qid, c in adjusted.items():
        _, min_delta = rule(qid, kw.get("threshold", THRESHOLD), kw.get("min_delta_ms", 0.0))
        b = float(np.median(baseline.samples[qid]))
        a = float(np.median(candidate.samples[qid]))
        verdict = c.verdict if abs(a - b) > min_delta else NO_CHANGE
        excused = None if verdict == c.verdict else c.verdict
        out[qid] = replace(c, baseline_median=b, candidate_median=a, ratio=ratio(b, a),
                           adjusted_ratio=c.ratio, verdict=verdict, adjusted=True,
                           min_delta_ms=min_delta, excused=excused)  # fmt: skip
    return out


def round_controls(run: Any) -> np.ndarray | None:
    """The median control time of each round of ``run`` (None when the run does not have
    the same number of control timings in every round, e.g. runs stored before it did)."""
    control = list(getattr(run, "control", []) or [])
    samples = getattr(run, "samples", {}) or {}
    rounds = min((len(v) for v in samples.values()), default=0)
    if rounds == 0 or len(control) == 0 or len(control) % rounds:
        return None
    per_round = np.asarray(control, dtype=float).reshape(rounds, len(control) // rounds)
    if not np.all(np.isfinite(per_round) & (per_round > 0)):
        return None
    return np.median(per_round, axis=1)


def control_adjusted(
    samples: Mapping[str, Sequence[float]], controls: Sequence[float], scale: float
) -> dict[str, list[float]]:
    """Each round's sample divided by that round's control time, times ``scale``: what the
    query would have taken had the machine run at the speed ``scale`` says."""
    c = np.asarray(controls, dtype=float)
    return {q: list(np.asarray(v, dtype=float)[: c.size] / c[: len(v)] * scale)
            for q, v in samples.items()}  # fmt: skip


def compare_runs(
    baseline: Mapping[str, Sequence[float]],
    candidate: Mapping[str, Sequence[float]],
    *,
    threshold: float = 0.10,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    min_delta_ms: float = 0.0,
    drift: float = 1.0,
) -> dict[str, QueryComparison]:
    """Compare every baseline query with the candidate run, in the baseline's order.

    A query the candidate lacks is an error: the gate must not pass a step because a
    query stopped being measured. Queries only the candidate has (no baseline yet)
    are left out. Each query draws its own seed from ``seed`` and its id, so its
    interval does not depend on which other queries ran, and is judged by its own
    ``rule`` (``threshold`` and ``min_delta_ms`` are the reads').
    """
    _check_options(threshold, confidence, resamples)
    missing = [qid for qid in baseline if qid not in candidate]
    if missing:
        raise ConfigError(
            f"candidate run has no latencies for {', '.join(missing)}; "
            "measure every baseline query before comparing"
        )
    result: dict[str, QueryComparison] = {}
    for qid, base in baseline.items():
        t, floor = rule(qid, threshold, min_delta_ms)
        try:
            result[qid] = compare_query(
                base,
                candidate[qid],
                threshold=t,
                confidence=confidence,
                resamples=resamples,
                seed=_query_seed(seed, qid),
                min_delta_ms=floor,
                drift=drift,
            )
        except ConfigError as e:
            raise ConfigError(f"{qid}: {e}") from e
    return result


def gate_verdict(
    comparisons: Mapping[str, QueryComparison],
    fingerprints_ok: Mapping[str, bool] | None = None,
) -> GateDecision:
    """GO unless a query is *slower* or its result fingerprint differs from the baseline.

    A changed result is a NO-GO however fast the query became: the app's answers
    must not change.
    """
    fingerprints_ok = fingerprints_ok or {}
    reasons: list[str] = []
    for qid in [*comparisons, *(q for q in fingerprints_ok if q not in comparisons)]:
        if fingerprints_ok.get(qid) is False:
            reasons.append(f"{name(qid)} result changed: fingerprint differs from baseline")
        c = comparisons.get(qid)
        if c is not None and c.verdict == SLOWER:
            judged = "" if c.adjusted_ratio is None else f": judged on x{c.adjusted_ratio:.2f}"
            reasons.append(
                f"{name(qid)} slower: median {c.candidate_median:.2f} ms vs baseline "
                f"{c.baseline_median:.2f} ms ({c.candidate_median - c.baseline_median:+.2f} "
                f"ms, {ratio_text(c)}{judged}, {c.confidence:.0%} CI "
                f"x{c.ci_low:.2f}–x{c.ci_high:.2f}, margin x{c.margin:.2f})"
            )
    return GateDecision(go=not reasons, reasons=reasons)


def geometric_mean(values: Sequence[float]) -> float:
    """The mean of ratios: x2 on one query and x0.5 on another average to x1, not x1.25."""
    x = _as_samples(values, "values", unit="ratios")
    return float(np.exp(np.log(x).mean()))


def speedup_table(comparisons: Mapping[str, QueryComparison]) -> list[dict[str, Any]]:
    """One row per query for the report; ``change_pct`` is negative when faster."""
    return [
        {"query": qid, **c.to_dict(), "change_pct": 100.0 * (c.ratio - 1.0)}
        for qid, c in comparisons.items()
    ]


def _as_samples(values: Sequence[float], name: str, unit: str = "latencies in ms") -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ConfigError(f"{name} has no samples; need at least one")
    bad = x[~np.isfinite(x) | (x <= 0)]
    if bad.size:
        raise ConfigError(
            f"{name} has {bad.size} value(s) that are not finite and > 0 "
            f"(first: {float(bad[0])!r}); {unit} must be positive numbers"
        )
    return x


def _check_options(threshold: float, confidence: float, resamples: int) -> None:
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ConfigError(f"threshold must be > 0 (e.g. 0.10 for 10%), got {threshold!r}")
    if not 0 < confidence < 1:
        raise ConfigError(
            f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}"
        )
    if resamples < MIN_RESAMPLES:
        raise ConfigError(f"resamples must be at least {MIN_RESAMPLES}, got {resamples!r}")


def _bootstrap_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``resamples`` resamples of ``x`` with replacement, a block at a time.

    With ``x`` sorted, the k-th smallest resampled index points at the k-th smallest
    resampled value, so partitioning small integer indices replaces ``np.median`` on
    floats (about 4x faster, same numbers).
    """
    xs = np.sort(x)
    n = xs.size
    lo, hi = (n - 1) // 2, n // 2
    step = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(resamples)
    for start in range(0, resamples, step):
        stop = min(start + step, resamples)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)
        idx.partition([lo, hi], axis=1)
        out[start:stop] = (xs[idx[:, lo]] + xs[idx[:, hi]]) / 2
    return out


def _query_seed(seed: int, qid: str) -> int:
    # crc32, not hash(): str hashes are salted per process and would break replay.
    return int(np.random.SeedSequence([seed, zlib.crc32(qid.encode())]).generate_state(1)[0])
