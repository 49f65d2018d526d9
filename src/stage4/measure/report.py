"""Reports of a rollout: METRICS_<LABEL>.json per step, REPORT.md and PNG charts.

Everything here is read back from the run's folder (``rollout.json`` and the
METRICS files), so ``stage4 report RUN`` regenerates a report without a database.
The seed reports' figures appear only in the "claimed" column, never as results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stage4 import optimisations
from stage4.config import redact
from stage4.measure import plans

# The team's own, never-measured figures (MISSION.md), printed as claims beside ours: the
# baseline's and the longest rollback here, each optimisation's after it in its unit
# (``CLAIMS``, asked of the registry).
CLAIMED_BASELINE = {
    "mean": 73.62,  # claimed, not measured
    "qps": 214.5,  # claimed, not measured
    "cache_hit_pct": 89.1,  # claimed, not measured
    "Q5": 38.5,  # claimed, not measured
}
CLAIMED_ROLLBACK_MINUTES = 5  # claimed, not measured
# overall figure -> (name, unit) in the claims' table; any other figure is a query's median
OVERALL_FIGURES = {"mean": ("mean latency", " (ms)"), "qps": ("QPS", ""),
                   "cache_hit_pct": ("cache hit %", "")}  # fmt: skip


def write_metrics(folder: Path, label: str, run: Any) -> Path:
    """METRICS_<LABEL>.json: the run as ``bench`` exports it, password-free."""
    path = Path(folder) / f"METRICS_{label.upper()}.json"
    path.write_text(redact(run.to_json()))
    return path


def margins(step: Any) -> str:
    """The margins a step's verdict used, vs the baseline and vs the step before ("" for a
    step that was not compared); ``step`` is a StepRecord or its saved dict."""
    from stage4.measure import stats

    get = step.get if isinstance(step, dict) else lambda k, d=None: getattr(step, k, d)
    vs_base, vs_prev = get("comparisons") or {}, get("vs_previous") or {}
    if not vs_base:
        return ""
    text = stats.margin_line(vs_base, "baseline")
    if vs_prev and vs_prev != vs_base:
        text += f"; {stats.margin_line(vs_prev, 'the step before')}"
    return text


def step_line(step: Any) -> str:
    """One line per step for the terminal: verdict, margins, how long the upgrade took."""
    secs = f"{step.upgrade_seconds:.1f} s" if step.upgrade_seconds is not None else "–"
    margin = margins(step)
    return f"{step.revision}: {step.verdict} ({margin + ', ' if margin else ''}upgrade {secs})"


def _load(folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    rollout = json.loads((folder / "rollout.json").read_text())
    metrics = {}
    for p in sorted(folder.glob("METRICS_*.json")):
        metrics[p.stem.removeprefix("METRICS_")] = json.loads(p.read_text())
    return rollout, metrics


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


ROLLED_BACK = ("NO-GO", "rolled back")


def step_status(step: dict[str, Any] | None) -> str:
    """ "kept", "rolled back" (its own NO-GO, or undone with a package) or "failed"; a
    NO-GO on a step the rollout found applied keeps it ("NO-GO, kept")."""
    verdict = (step or {}).get("verdict", "")
    if verdict.startswith("FAILED"):
        return "failed"
    if verdict.startswith(ROLLED_BACK) and not verdict.startswith("NO-GO, kept"):
        return "rolled back"
    return "kept"


def step_label(label: str, steps: dict[str, dict[str, Any]]) -> str:
    """A run's label as tables and charts show it: rolled-back steps say so."""
    st = steps.get(label)
    if st is None or step_status(st) == "kept":
        return label
    return f"{label} ({'NO-GO, ' if st['verdict'] == 'NO-GO' else ''}{step_status(st)})"


def run_folder(folder: Path | None, reports_dir: Path) -> Path:
    """The run folder to report on: ``folder``, else the newest under ``reports_dir``;
    ConfigError when there is none or it holds no rollout.json."""
    from stage4.errors import ConfigError

    if folder is None:
        found = sorted(reports_dir.glob("*/rollout.json"))
        if not found:
            raise ConfigError(
                f"no rollout reports under {reports_dir}/: run `stage4 upgrade` first"
            )
        folder = found[-1].parent
    if not (folder / "rollout.json").is_file():
        raise ConfigError(f"{folder} is not a run folder (no rollout.json)")
    return folder


def write(folder: Path) -> Path:
    """Regenerate REPORT.md (and charts) from the folder's files.

    Every latency figure of a query is the statistic the gate judges: the median of its
    per-round samples (``round_median`` in METRICS, ``*_median`` in rollout.json), so a
    table and a decision line can never disagree.
    """
    folder = Path(folder)
    rollout, metrics = _load(folder)
    steps = {s["revision"].upper(): s for s in rollout["steps"]}
    order = ["BASELINE"] + [label for label in steps if label in metrics]
    order = [o for o in dict.fromkeys(order) if o in metrics]
    lines = [f"# stage4 rollout report — {rollout['started']}", ""]
    lines += _header(rollout)
    lines += ["## Pre-flight", "", *[f"- {c}" for c in rollout["preflight"]], ""]
    if "BASELINE" not in metrics:  # e.g. `upgrade --to schema`: nothing was measured
        lines += [
            "## Nothing was judged",
            "",
            "No workload was measured in this rollout: the reference schema is not "
            "gated, and the baseline is measured before the first optimisation "
            f"(`stage4 upgrade --to {optimisations.revisions()[0]}`).",
            "",
        ]
        lines += _decisions(rollout) + _rollback_procedure(rollout)
        return _save(folder, lines)
    charts = _charts(folder, order, metrics, steps)
    lines += _overall(order, metrics, steps) + _per_query(order, metrics, steps)
    for name in charts:
        lines += ["", f"![{name}]({name})"]
    lines += ["", *_decisions(rollout), *_rollback_procedure(rollout)]
    lines += _claims(rollout, metrics, steps)
    return _save(folder, lines)


def _overall(order: list[str], metrics, steps) -> list[str]:
    """The table of every measured step: latency over every execution, QPS, cache hit."""
    lines = [
        "## Overall, by step",
        "",
        "Mean and percentiles over every single execution of Q1–Q10; QPS from the "
        "throughput phase.",
        "",
        "| step | mean ms | p50 | p95 | p99 | QPS | cache hit % | verdict | upgrade s | rollback s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in order:
        o = metrics[label].get("overall", {})
        st = steps.get(label, {})
        lines.append(
            f"| {step_label(label, steps)} | {_fmt(o.get('mean'))} | {_fmt(o.get('p50'))} | "
            f"{_fmt(o.get('p95'))} | {_fmt(o.get('p99'))} | {_fmt(o.get('qps'), 1)} | "
            f"{_fmt(o.get('cache_hit_pct'), 1)} | {st.get('verdict', 'baseline')} | "
            f"{_fmt(st.get('upgrade_seconds'))} | {_fmt(st.get('rollback_seconds'))} |"
        )
    return lines


def _per_query(order: list[str], metrics, steps) -> list[str]:
    """The table the gate judges: each query's median by step, the last kept vs baseline."""
    from stage4.measure import stats

    kept = [label for label in order if step_status(steps.get(label)) == "kept"]
    last = kept[-1]
    # the gate's own comparison of that step with the baseline, for the corrected ratio
    judged = {
        q: stats.figures(c) for q, c in (steps.get(last) or {}).get("comparisons", {}).items()
    }
    corrected = any(c["adjusted_ratio"] is not None for c in judged.values())
    extra = f" {last} / baseline, {stats.CORRECTED} |" if corrected else ""
    lines = [
        "",
        "## Per query: median latency (ms) by step",
        "",
        "The figure the gate judges: per round, the query's mean over its parameter "
        "sets; here the median over the rounds. Rows marked *write* are the app's "
        "writes, each in a transaction rolled back, judged by their own margin and "
        f"floor (x{1 + stats.WRITE_THRESHOLD:g} and {stats.WRITE_MIN_DELTA_MS:g} ms at the "
        "default options; see the decisions). Steps marked rolled back are not in "
        f"the database any more; the last column{'s compare' if corrected else ' compares'} "
        f"{last}, the last step kept, with the baseline"
        + (
            ": as measured, then as the gate judged it, each round divided by the "
            "control query's time in that round."
            if corrected
            else "."
        ),
        "",
        "| query | "
        + " | ".join(step_label(o, steps) for o in order)
        + f" | {last} / baseline |{extra}",
        "|---|" + "---|" * (len(order) + 1 + corrected),
    ]
    for q in metrics["BASELINE"].get("queries", {}):
        meds = [query_median(metrics[label], q) for label in order]
        a, b = query_median(metrics["BASELINE"], q), query_median(metrics[last], q)
        ratio = stats.ratio(a, b) if a and b else None
        entry = metrics["BASELINE"]["queries"][q]
        title = entry.get("title", "") + (" *write*" if entry.get("kind") == "write" else "")
        row = f"| {q} {title} | " + " | ".join(_fmt(m) for m in meds) + f" | {_fmt(ratio)}× |"
        if corrected:
            adj = (judged.get(q) or {}).get("adjusted_ratio")
            row += f" {_fmt(adj)}× |" if adj is not None else " – |"
        lines.append(row)
    return lines


def query_median(run: dict[str, Any], q: str) -> float | None:
    """The gate's figure for one query of one METRICS run (older files: its p50)."""
    entry = run.get("queries", {}).get(q, {})
    return entry.get("round_median", entry.get("p50"))


def _header(rollout: dict[str, Any]) -> list[str]:
    base = f"- baseline run: {rollout.get('baseline_run_id') or 'none (nothing measured)'}"
    if rollout.get("baseline_taken_now"):
        base += " (taken at the start of this rollout)"
    lines = [
        f"- database: `{rollout['database']}`",
        f"- target: `{rollout['target']}`",
        f"- outcome: **{rollout['outcome']}**",
        f"- backup: `{rollout.get('backup') or 'none (--no-backup or empty database)'}`",
        base,
    ]
    lines += [f"  - {n}" for n in rollout.get("reference_notes", [])]
    opts = ", ".join(f"{k}={v}" for k, v in rollout["options"].items())
    return [*lines, f"- options: {opts}", ""]


def _decisions(rollout: dict[str, Any]) -> list[str]:
    lines = ["## Decisions", ""]
    for st in rollout["steps"]:
        lines.append(f"### {st['revision']}: {st['verdict']}")
        if margins(st):
            lines.append(f"- {margins(st)}")
        reasons = st.get("reasons", [])
        lines += [f"- {r}" for r in reasons]
        if not reasons and st.get("comparisons") and st["verdict"] == "GO":
            lines.append("- no query slower beyond the margin; results unchanged")
        lines += [f"- verified: {v}" for v in st.get("verified", [])]
        lines += [f"- note: {n}" for n in st.get("notes", [])]
        lines += plans.report_lines(st.get("plans", {}))
        lines += _after_rollback(st.get("after_rollback") or {})
        if st.get("restored_exactly") is not None:
            lines.append(f"- rolled back; database restored exactly: {st['restored_exactly']}")
        lines.append("")
    return lines


def _rollback_procedure(rollout: dict[str, Any]) -> list[str]:
    lines = [
        "## Rollback procedure",
        "",
        "Each step's `downgrade()` is its rollback. One step: `stage4 downgrade -1` "
        "(or `make downgrade`, or `alembic downgrade -1`).",
        "",
        "| step | rollback command |",
        "|---|---|",
    ]
    for st in rollout["steps"]:
        back = _previous(st["revision"])
        lines.append(
            f"| {st['revision']} | `alembic downgrade {back}` (= `stage4 downgrade --to {back}`) |"
        )
    return [*lines, ""]


def _claims(rollout, metrics, steps) -> list[str]:
    """Each claim beside what this rollout measured at the claim's own step."""
    lines = [
        "## Measured vs claimed",
        "",
        "The claimed figures come from the team's earlier reports, which were produced "
        "by a simulator and never measured. They are shown for comparison only, each "
        "beside this rollout's measurement at the same step (– when this rollout did "
        "not measure that step, or rolled it back).",
        "",
        "| figure | measured here | claimed |",
        "|---|---|---|",
    ]
    base = metrics["BASELINE"]
    rows = [
        (f"baseline {name}{unit}", base.get("overall", {}).get(fig), CLAIMED_BASELINE[fig])
        for fig, (name, unit) in OVERALL_FIGURES.items()
    ]
    for rev, claimed in optimisations.claims():
        label = rev.upper()
        kept = step_status(steps.get(label)) == "kept"
        run = metrics.get(label) if kept else None
        for fig, value in claimed.items():
            if fig in OVERALL_FIGURES:
                name, unit = OVERALL_FIGURES[fig]
                measured = (run or {}).get("overall", {}).get(fig)
                rows.append((f"{name} after {rev}{unit}", measured, value))
                continue
            if fig in CLAIMED_BASELINE:
                rows.append((f"{fig} at the baseline (ms)", query_median(base, fig),
                             CLAIMED_BASELINE[fig]))  # fmt: skip
            rows.append((f"{fig} after {rev} (ms)", run and query_median(run, fig), value))
    rb = [st.get("rollback_seconds") for st in rollout["steps"] if st.get("rollback_seconds")]
    rows.append(("longest rollback (s)", max(rb) if rb else None, CLAIMED_ROLLBACK_MINUTES * 60))
    return lines + [f"| {name} | {_fmt(m)} | {_fmt(c)} (claimed) |" for name, m, c in rows]


def _save(folder: Path, lines: list[str]) -> Path:
    path = folder / "REPORT.md"
    path.write_text(redact("\n".join(lines).rstrip() + "\n"))
    return path


def _after_rollback(ab: dict[str, Any]) -> list[str]:
    """The re-bench after a NO-GO rollback: the figures back, or what is still off."""
    if not ab:
        return []
    if "error" in ab:
        return [f"- after the rollback, the re-bench failed: {ab['error']}"]
    head = f"- after the rollback, re-bench run {ab['run_id']} vs {ab['compared_with']}: "
    if ab["restored"]:
        return [head + "the figures are back (no query slower, by the gate's rule)"]
    return [head + "NOT back:", *(f"  - {r}" for r in ab["reasons"])]


def _previous(rev: str) -> str:
    from stage4.plumbing import migrations

    return migrations.previous(rev)


def _charts(
    folder: Path, order: list[str], metrics: dict[str, dict[str, Any]], steps: dict[str, Any]
) -> list[str]:
    """Save the two figures as PNG; their file names, in the report's order."""
    import matplotlib.pyplot as plt

    names = ["latency_by_query.png", "mean_latency.png"]
    for fig, name in zip(figures(order, metrics, steps), names, strict=True):
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
    return names


def figures(order: list[str], metrics: dict[str, dict[str, Any]], steps: dict[str, Any]):
    """Per-query latency by step (log axis) and mean latency by step (bars, linear axis).

    Rolled-back steps are hatched and named so (in the legend, or inside their bar); each
    axis says its scale, and the linear one starts at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    qids = list(metrics["BASELINE"].get("queries", {}))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(order), 1)
    for i, label in enumerate(order):
        back = step_status(steps.get(label)) != "kept"
        vals = [query_median(metrics[label], q) or 0 for q in qids]
        ax.bar(
            [x + i * width for x in range(len(qids))],
            vals,
            width,
            label=step_label(label, steps),
            hatch="//" if back else None,
            edgecolor="black" if back else None,
            alpha=0.5 if back else 1.0,
        )
    ax.set_xticks([x + width * (len(order) - 1) / 2 for x in range(len(qids))], qids)
    ax.set_ylabel("median of round means (ms, log scale)")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 20, not 2 x 10^1
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.legend(fontsize=8)
    ax.set_title("Per-query latency by step (hatched: rolled back)")
    fig.tight_layout()
    fig2, ax = plt.subplots(figsize=(6, 3.5))
    means = [metrics[label].get("overall", {}).get("mean") or 0 for label in order]
    back = [step_status(steps.get(label)) != "kept" for label in order]
    bars = ax.bar(
        order,
        means,
        color=["tab:red" if b else "tab:blue" for b in back],
        alpha=0.85,
    )
    for bar, label, was_back in zip(bars, order, back, strict=True):
        if was_back:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
            bar.set_edgecolor("black")
            # inside a tall bar, above a short one's value: within the axes, clear of the title
            tall = bar.get_height() >= 0.3 * max(means)
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                bar.get_height() / 2 if tall else bar.get_height() + 0.1 * max(means),
                step_label(label, steps).removeprefix(label).strip(" ()"),
                ha="center",
                va="center" if tall else "bottom",
                fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
            )
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.set_ylim(0, max([*means, 1e-9]) * 1.18)  # from 0, room for the values on top
    ax.set_yscale("linear")
    ax.set_ylabel("mean latency (ms, linear scale)")
    ax.set_title("Mean latency over Q1–Q10 by step (hatched red: rolled back)")
    fig2.tight_layout()
    return fig, fig2
