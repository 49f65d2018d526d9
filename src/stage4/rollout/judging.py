"""Judging one applied step: its promises (verify, who can see what, every row kept), its
results' freshness, its benchmark against the baseline and the step before, and what is
said beside it (plans, rewrites the app could adopt). ``gate`` decides what to do with it.
"""

from __future__ import annotations

from typing import Any

from stage4.catalog import rpc_access, visibility
from stage4.errors import Stage4Error
from stage4.plumbing import livewrites, migrations
from stage4.plumbing.db import Session, lend
from stage4.rollout.record import GateOptions, RolloutRun, StepRecord, StepStart


def judge(
    rollout_run: RolloutRun, rec: StepRecord, before: StepStart, gated_at: str | None = None
) -> tuple[bool, bool]:
    """Verify, benchmark and compare one applied step; fill ``rec``.

    Returns (promises kept, workload pays). ``gated_at``: the workload of this step is
    only recorded, the package is judged at that revision (its reasons say so). A broken
    promise or a refused stale read is found first and, under the gate, ends the judgement
    there: the bench is skipped and ``rec.blamed`` names the revision at fault.

    Every check opens nothing of its own: one session is lent to each in turn."""
    with Session(rollout_run.url) as db:
        return _judge(rollout_run, rec, before, gated_at, db)


def _judge(
    r: RolloutRun, rec: StepRecord, before: StepStart, gated_at: str | None, db: Session
) -> tuple[bool, bool]:
    from stage4.measure import bench, report, stats

    url, s, opts, say, folder = r.url, r.s, r.opts, r.say, r.folder
    base, previous, progress = r.base, r.previous, r.progress
    broken = _promises(r, rec, before, db)
    say(rec.revision, "checking results are fresh (canary rows, rolled back)")
    stale, stale_by = _freshness(db, s, rec, opts)
    if (broken or stale) and opts.gate:  # NO-GO already: the bench would not change it
        rec.reasons = [f"promise broken: {b}" for b in broken] + stale
        rec.blamed = blame(rec, bool(broken), stale_by)
        rec.notes.append("not benchmarked: refused before the bench (promises and freshness "
                         "are checked first)")  # fmt: skip
        return False, False
    say(rec.revision, "benchmarking")
    run = bench.run(url, label=rec.revision.upper(), progress=progress, **bench_kw(opts))
    rec.run_id, rec.run = run.run_id, run
    # SQL the app would have to adopt: reported, never judged (the app contract)
    rec.available = run.environment.get("available_rewrites", {})
    report.write_metrics(folder, rec.revision.upper(), run)
    kw = {"threshold": opts.threshold, "confidence": opts.confidence,
          "min_delta_ms": opts.min_delta_ms}  # fmt: skip
    failed = _failed(run, rec.revision)
    vs_base = stats.compare_bench(_without(base, failed), run, **kw)
    vs_prev = stats.compare_bench(_without(previous, failed), run, **kw)
    same = {q: run.fingerprints.get(q) == fp for q, fp in base.fingerprints.items()
            if q not in failed}  # fmt: skip
    same, changed = _moved_with_app_writes(same, run, rec, db, s)
    results = stats.gate_verdict({}, same)  # the app's answers: gated at every step
    decision = stats.gate_verdict(vs_base)
    rec.comparisons = {q: c.to_dict() for q, c in vs_base.items()}
    rec.vs_previous = {q: c.to_dict() for q, c in vs_prev.items()}
    rec.margin = report.margins(rec)
    workload, pays = list(decision.reasons), decision.go
    if previous is not base and opts.judge == "each":  # a step must not undo the one before
        step_back = stats.gate_verdict(vs_prev)
        workload += [f"vs {previous.label}: {r}" for r in step_back.reasons]
        pays = pays and step_back.go
    if gated_at:
        workload = [f"not gated ({gated_at} is): {r}" for r in workload]
    loaded = livewrites.differs(base.environment.get("load"), run.environment.get("load"))
    rec.reasons = (
        ([f"load: {loaded}"] if loaded else [])
        + [f"promise broken: {b}" for b in broken]
        + list(failed.values())
    )
    rec.reasons += results.reasons + changed + stale + workload
    unjudged = sorted(set(run.samples) - set(base.samples))
    if unjudged:
        rec.notes.append(f"measured, not judged (not in the baseline run {base.run_id}): "
                         f"{', '.join(unjudged)}; store a baseline with the same --workload")  # fmt: skip
    return not broken and not failed and results.go and not changed and not stale, pays


def _promises(run: RolloutRun, rec: StepRecord, before: StepStart, db: Session) -> list[str]:
    """The step's promises (verify.py), who can see what (no API role reads or writes more
    than before the step) and every row kept; returns what is broken."""
    from stage4.catalog import verify

    run.say(rec.revision, "verifying")
    rec.verified, broken = verify.revision(db, run.s, rec.revision)
    checked, widened = visibility.check(db, run.s, before.reach)
    rec.verified += checked
    broken += widened
    if before.calls is not None:  # no API role can no longer call an RPC it called
        checked, lost = rpc_access.check(db, run.s, before.calls)
        rec.verified += checked
        broken += lost
    with lend(db) as conn:
        content = rows_hash(conn, run.s)
        broken += rows_kept(conn, run.s, rec, content != before.rows)
    return broken


def _failed(run, revision: str) -> dict[str, str]:
    """qid -> NO-GO reason for each query of the app's own workload that errors now."""
    return {q: f"{q} fails after {revision} ({e['file']}): {e['error']}"
            for q, e in run.environment.get("errors", {}).items()}  # fmt: skip


def _without(run, qids):
    """``run`` without the queries ``qids`` (failed now: named apart, not compared)."""
    if not any(q in run.samples for q in qids):
        return run
    from types import SimpleNamespace

    return SimpleNamespace(samples={q: v for q, v in run.samples.items() if q not in qids},
                           control=getattr(run, "control", []))  # fmt: skip


def _freshness(db: Session, s, rec: StepRecord, opts: GateOptions) -> tuple[list[str], list[str]]:
    """The canary check of every query (``stage4.measure.freshness``), in ``rec.freshness``.

    A stale read is judged against the budget of the revision that declares it among all
    those applied now (a carried step is judged with the later ones above it) and blamed on
    that revision; one no revision declares is blamed on the step. Returns the NO-GO
    reasons (a stale read without a budget, or one not accepted) and whom each blames."""
    from stage4.measure import freshness, workload

    with lend(db) as conn:
        anchors = workload.sample_anchors(conn, s, freshness.CANARY_SEED)
        conn.commit()
        checked = freshness.check(conn, s, anchors)
    rec.own_rows += sum(r.rows for r in checked.values())
    budgets = freshness.declared(freshness.applied(migrations.current(db)))
    reasons, blamed = [], []
    for qid, r in checked.items():
        entry = r.to_dict()
        if r.fresh is None:
            rec.notes.append(f"{qid} freshness {r.detail}")
        elif not r.fresh:
            rev, budget = budgets.get(qid, (None, None))
            entry.update(
                budget=budget, declared_by=rev, accepted=bool(budget and opts.accept_stale)
            )
            if entry["accepted"]:
                rec.notes.append(f"{qid} stale, accepted (--accept-stale): {r.detail}; "
                                 f"staleness budget declared by {rev}: {budget}")  # fmt: skip
            elif budget:
                reasons.append(f"{qid} stale: {r.detail}; {rev} declares a staleness budget "
                               f"({budget}): pass --accept-stale to accept it")  # fmt: skip
            else:
                reasons.append(f"{qid} stale: {r.detail}; no revision declares a staleness "
                               "budget for it")  # fmt: skip
            if not entry["accepted"]:
                blamed.append(rev or rec.revision)
        rec.freshness[qid] = entry
    return reasons, blamed


def blame(rec: StepRecord, broken: bool, stale_by: list[str]) -> str:
    """The revision a NO-GO found before the bench is blamed on: the step itself when it
    broke a promise or introduced a refused stale read, else the lowest revision that did."""
    if broken or not stale_by or rec.revision in stale_by:
        return rec.revision
    chain = migrations.chain()
    return min(stale_by, key=chain.index)


def bench_kw(opts: GateOptions) -> dict[str, Any]:
    kw = {k: getattr(opts, k) for k in ("iterations", "concurrency", "duration")
          if getattr(opts, k) is not None}  # fmt: skip
    if opts.workload is not None:
        kw["workload_dir"] = opts.workload
    return kw


def rows_kept(conn, s, rec: StepRecord, hash_moved: bool) -> list[str]:
    """ "Every row kept", where it can be said exactly. A step that moved the rows checked
    them itself (source vs copy, in its transaction, writers stopped). Otherwise the content
    hash before and after the step: exact when nobody else wrote meanwhile; when the app did,
    a moved hash is its writes (no step but a rebuild moves a row), said as a note."""
    metrics = rec.metrics
    rec.rows_checked = metrics.get("rows_checked")
    before = (rec.counters or {}).get("before")
    own = livewrites.own_writes(metrics)  # the step's own (opt2's backfill), not the app's
    n = livewrites.writes_between(before, livewrites.counters(conn, s), own)
    if n == 0 and hash_moved and rec.rows_checked is None:  # not counted yet? (~1 s lag)
        n = livewrites.settled(conn, s, before, own=own)
    rec.app_writes = n if n is not None else metrics.get("rows_written_meanwhile")
    if rec.rows_checked is not None:
        rec.verified.append(f"every row kept: {rec.rows_checked} rows checked source vs copy "
                            "in the step's transaction, writers stopped")  # fmt: skip
        return []
    if not hash_moved:
        return []
    if n:
        rec.notes.append(f"the content hash moved with {n} rows the app wrote meanwhile; "
                         f"{rec.revision} moves no row")  # fmt: skip
        return []
    return ["every row kept as it was (content hash of the reference columns)"]


def _moved_with_app_writes(
    same: dict[str, bool], run, rec: StepRecord, db: Session, s
) -> tuple[dict[str, bool], list[str]]:
    """Results that differ from the baseline's while the app wrote rows between the two runs:
    compared where the rows cannot move (``stage4.measure.fingerprints``). An RPC is run beside its
    base SQL in one snapshot: the same answer is the app's writes (a note), another is a
    changed result (a NO-GO reason, returned). The app's own SQL is sent unchanged, on rows
    the step keeps (checked apart): its moved answer is the app's writes (a note).

    Returns ``same`` with the differences so explained marked equal, and the reasons."""
    from stage4.measure import fingerprints

    differ = [q for q, ok in same.items() if not ok]
    if not differ:
        return same, []
    # Counted only while this rollout ran, and never across the canary check (its rows,
    # rolled back, count as inserts): a quiet database keeps the strict comparison.
    during = (run.environment.get("load") or {}).get("app_writes")
    wrote = sum(n or 0 for n in ((rec.counters or {}).get("earlier"), rec.app_writes, during))
    if not wrote:
        return same, []
    out, reasons = dict(same), []
    checked = fingerprints.compare_rpcs(db, s, differ)
    moved = [q for q in differ if q not in checked]
    out.update(dict.fromkeys(moved, True))
    for qid, c in checked.items():
        stale = (rec.freshness.get(qid) or {}).get("fresh") is False
        out[qid] = True
        if c.same:
            rec.notes.append(
                f"{qid} compared in one snapshot with its base SQL (revision "
                f"schema's body): same results ({c.detail}); its answer moved "
                f"since the baseline run with the {wrote} rows the app wrote"
            )
        elif c.same is None or stale:
            why = c.detail if c.same is None else "differs: the stale read named above"
            rec.notes.append(f"{qid} in one snapshot with its base SQL: {why}")
        else:
            reasons.append(
                f"{qid} result changed: in one snapshot the RPC returns other rows "
                f"than its base SQL (revision schema's body; {c.detail})"
            )
    if moved:
        rec.notes.append(
            f"results of {', '.join(moved)} moved with the {wrote} rows the app "
            "wrote since the baseline run: SQL the app sends unchanged, on rows "
            "the step keeps"
        )
    return out, reasons


def rows_hash(conn, s) -> str | None:
    """Content hash of the table's reference columns (None when absent): equal before and
    after a step means no row was lost, added or altered, whatever the layout."""
    from stage4.plumbing.seed import content_hash

    if conn.execute("SELECT to_regclass(%s)", (s.qualified_table,)).fetchone()[0] is None:
        return None
    return content_hash(conn, s)


def rebench(url: str, rec: StepRecord, reference, opts: GateOptions, say, progress) -> None:
    """After a NO-GO rollback, a short bench: are the figures of the revision we are back
    at (``reference``'s run) back, by the rule that judged the step? Recorded either way."""
    from stage4.measure import bench, stats

    say(rec.revision, "rolled back: measuring again to confirm the figures are back")
    try:
        run = bench.run(url, label="AFTER_ROLLBACK", progress=progress, **bench_kw(opts))
    except Stage4Error as e:
        rec.after_rollback = {"error": str(e).strip().splitlines()[0]}
        return
    comps = stats.compare_bench(reference, run, threshold=opts.threshold,
                                confidence=opts.confidence, min_delta_ms=opts.min_delta_ms)  # fmt: skip
    decision = stats.gate_verdict(comps)
    rec.after_rollback = {
        "run_id": run.run_id,
        "compared_with": f"run {reference.run_id} ({reference.label})",
        "restored": decision.go,
        "reasons": list(decision.reasons),
    }


def workload_plans(db: str | Session, notes: list[str]) -> dict[str, Any]:
    """Each query's plan now (plans.py); informative only: a failure is a note."""
    import psycopg

    from stage4.measure import plans

    try:
        return plans.of_workload(db)
    except (psycopg.Error, Stage4Error) as e:
        notes.append(f"query plans not taken: {str(e).strip().splitlines()[0]}")
        return {}


def explain_step(url: str, rec: StepRecord, start_plans: dict[str, Any]) -> None:
    """The step's plans (after its bench), their change since the rollout's start, and
    that change beside each query the step made slower."""
    from stage4.measure import plans

    rec.plans = plans.summarise(workload_plans(url, rec.notes), start_plans)
    for qid, p in rec.plans.items():
        if p["change"] and any(r.startswith(f"{qid} slower") for r in rec.reasons):
            rec.reasons.append(f"{qid} plan changed: {p['change']}")
