"""Reports of a rollout: METRICS_<LABEL>.json per step, REPORT.md and PNG charts.

Everything here is read back from the run's folder (``rollout.json`` and the
METRICS files), so ``stage4 report RUN`` regenerates a report without a database.
The seed reports' figures appear only in the "claimed" column, never as results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stage4.config import redact

# The team's own, never-measured figures (MISSION.md). Printed as claims beside ours.
CLAIMED = {
    "baseline_mean_ms": 73.62,  # claimed, not measured
    "baseline_qps": 214.5,  # claimed, not measured
    "baseline_cache_hit_pct": 89.1,  # claimed, not measured
    "opt1_q5_ms": (38.5, 27.3),  # claimed, not measured
    "final_mean_ms": 46.7,  # claimed, not measured
    "final_qps": 298.3,  # claimed, not measured
    "final_cache_hit_pct": 93.2,  # claimed, not measured
    "rollback_minutes": 5,  # claimed, not measured
}


def write_metrics(folder: Path, label: str, run: Any) -> Path:
    """METRICS_<LABEL>.json: the run as ``bench`` exports it, password-free."""
    path = Path(folder) / f"METRICS_{label.upper()}.json"
    path.write_text(redact(run.to_json()))
    return path


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


def write(folder: Path) -> Path:
    """Regenerate REPORT.md (and charts) from the folder's files."""
    folder = Path(folder)
    rollout, metrics = _load(folder)
    order = ["BASELINE"] + [s["revision"].upper() for s in rollout["steps"]
                            if s["revision"].upper() in metrics]  # fmt: skip
    order = [o for o in dict.fromkeys(order) if o in metrics]
    charts = _charts(folder, order, metrics)
    lines = [f"# stage4 rollout report — {rollout['started']}", ""]
    lines += [f"- database: `{rollout['database']}`", f"- target: `{rollout['target']}`",
              f"- outcome: **{rollout['outcome']}**",
              f"- backup: `{rollout.get('backup') or 'none (--no-backup or empty database)'}`",
              f"- baseline run: {rollout.get('baseline_run_id')}"
              + (" (taken at the start of this rollout)" if rollout.get("baseline_taken_now") else ""),
              f"- options: {', '.join(f'{k}={v}' for k, v in rollout['options'].items())}", ""]  # fmt: skip
    lines += ["## Pre-flight", "", *[f"- {c}" for c in rollout["preflight"]], ""]
    lines += ["## Overall, by step", "",
              "| step | mean ms | p50 | p95 | p99 | QPS | cache hit % | verdict | upgrade s | rollback s |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    steps = {s["revision"].upper(): s for s in rollout["steps"]}
    for label in order:
        o = metrics[label].get("overall", {})
        st = steps.get(label, {})
        lines.append(
            f"| {label} | {_fmt(o.get('mean'))} | {_fmt(o.get('p50'))} | {_fmt(o.get('p95'))} | "
            f"{_fmt(o.get('p99'))} | {_fmt(o.get('qps'), 1)} | {_fmt(o.get('cache_hit_pct'), 1)} | "
            f"{st.get('verdict', 'baseline')} | {_fmt(st.get('upgrade_seconds'))} | "
            f"{_fmt(st.get('rollback_seconds'))} |"
        )
    lines += ["", "## Per query: median latency (ms) by step", ""]
    qids = list(metrics["BASELINE"].get("queries", {})) if "BASELINE" in metrics else []
    lines += ["| query | " + " | ".join(order) + " | last / baseline |",
              "|---|" + "---|" * (len(order) + 1)]  # fmt: skip
    for q in qids:
        meds = [metrics[label]["queries"].get(q, {}).get("p50") for label in order]
        ratio = (meds[-1] / meds[0]) if meds and meds[0] and meds[-1] else None
        title = metrics["BASELINE"]["queries"][q].get("title", "")
        lines.append(f"| {q} {title} | " + " | ".join(_fmt(m) for m in meds)
                     + f" | {_fmt(ratio)}× |")  # fmt: skip
    for name in charts:
        lines += ["", f"![{name}]({name})"]
    lines += ["", "## Decisions", ""]
    for st in rollout["steps"]:
        lines.append(f"### {st['revision']}: {st['verdict']}")
        lines += [f"- {r}" for r in st.get("reasons", [])] or [
            "- every query within the threshold; fingerprints equal"
        ]
        lines += [f"- verified: {v}" for v in st.get("verified", [])]
        lines += [f"- note: {n}" for n in st.get("notes", [])]
        if st.get("restored_exactly") is not None:
            lines.append(f"- rolled back; database restored exactly: {st['restored_exactly']}")
        lines.append("")
    lines += ["## Rollback procedure", "",
              "Each step's `downgrade()` is its rollback. One step: `stage4 downgrade -1` "
              "(or `make downgrade`, or `alembic downgrade -1`).", "",
              "| step | rollback command |", "|---|---|"]  # fmt: skip
    for st in rollout["steps"]:
        rev = st["revision"]
        lines.append(
            f"| {rev} | `alembic downgrade {_previous(rev)}` (= `stage4 downgrade --to {_previous(rev)}`) |"
        )
    lines += ["", "## Measured vs claimed", "",
              "The claimed figures come from the team's earlier reports, which were produced "
              "by a simulator and never measured. They are shown for comparison only.", "",
              "| figure | measured here | claimed |", "|---|---|---|"]  # fmt: skip
    base = metrics.get("BASELINE", {}).get("overall", {})
    last = metrics.get(order[-1], {}).get("overall", {}) if order else {}
    rb = [st.get("rollback_seconds") for st in rollout["steps"] if st.get("rollback_seconds")]
    rows = [
        ("baseline mean latency (ms)", base.get("mean"), CLAIMED["baseline_mean_ms"]),
        ("baseline QPS", base.get("qps"), CLAIMED["baseline_qps"]),
        ("baseline cache hit %", base.get("cache_hit_pct"), CLAIMED["baseline_cache_hit_pct"]),
        (f"mean latency after {order[-1] if order else '–'} (ms)", last.get("mean"), CLAIMED["final_mean_ms"]),
        (f"QPS after {order[-1] if order else '–'}", last.get("qps"), CLAIMED["final_qps"]),
        (f"cache hit % after {order[-1] if order else '–'}", last.get("cache_hit_pct"), CLAIMED["final_cache_hit_pct"]),
        ("longest rollback (s)", max(rb) if rb else None, CLAIMED["rollback_minutes"] * 60),
    ]  # fmt: skip
    lines += [f"| {name} | {_fmt(m)} | {_fmt(c)} (claimed) |" for name, m, c in rows]
    path = folder / "REPORT.md"
    path.write_text(redact("\n".join(lines) + "\n"))
    return path


def _previous(rev: str) -> str:
    from stage4 import migrations

    return migrations.previous(rev)


def _charts(folder: Path, order: list[str], metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Per-query median latency by step, and mean latency by step (PNG, Agg backend)."""
    if not order or "BASELINE" not in metrics:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qids = list(metrics["BASELINE"].get("queries", {}))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(order), 1)
    for i, label in enumerate(order):
        vals = [metrics[label]["queries"].get(q, {}).get("p50") or 0 for q in qids]
        ax.bar([x + i * width for x in range(len(qids))], vals, width, label=label)
    ax.set_xticks([x + width * (len(order) - 1) / 2 for x in range(len(qids))], qids)
    ax.set_ylabel("median latency (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Per-query median latency by step")
    fig.tight_layout()
    fig.savefig(folder / "latency_by_query.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(
        order, [metrics[label].get("overall", {}).get("mean") or 0 for label in order], marker="o"
    )
    ax.set_ylabel("mean latency (ms)")
    ax.set_title("Mean latency over Q1–Q10 by step")
    fig.tight_layout()
    fig.savefig(folder / "mean_latency.png", dpi=100)
    plt.close(fig)
    return ["latency_by_query.png", "mean_latency.png"]
