"""The gated rollout: one revision at a time, each one benchmarked and kept only if it pays.

pre-flight → backup → baseline (measured now; stored if the database has none) → for each
pending revision: upgrade → verify → benchmark → compare (decision rule in
``stats``) → GO, or NO-GO: downgrade that step, prove the database is back
exactly as before (catalog snapshot + data fingerprint), stop with the reasons.
Every decision is recorded in the run's folder (``rollout.json``) and the report, in one
place (``RolloutRun.finish``) however the rollout ends: GO, NO-GO, failure or interrupt.

``judge="target"`` judges the pending steps as one package: each step is still verified
(promises, every row kept, every query's results unchanged) and benchmarked for the
report, but only the target's speed is gated; a NO-GO there, or a broken promise or
changed result anywhere, rolls back every step the rollout applied. It exists because a
revision can pay only with a later one: partitioning (opt1) can slow queries without a
date filter, which read every partition, until opt5's views serve them.

A rollout never ends below the revision it started from: a step it found applied (by a
plain Alembic upgrade, or carried: committed by an earlier rollout that did not judge it) is
judged and reported, but a NO-GO on it stops the rollout without rolling it back, and the
message says how to. A stale read is blamed on the revision that declares it, which may
be one the rollout found applied.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, NoReturn

from stage4.catalog import rpc_access, visibility
from stage4.config import settings
from stage4.errors import ConfigError, GateError, MigrationError, PreflightError, Stage4Error
from stage4.plumbing import interrupts, livewrites, migrations
from stage4.plumbing.db import Session, connect, lend, where
from stage4.plumbing.retry import DEFAULT_RETRIES
from stage4.rollout import judging
from stage4.rollout.record import (
    JUDGE_MODES,
    UNJUDGED,
    GateOptions,
    Phase,
    Progress,
    Rollout,
    RolloutRun,
    Said,
    StepRecord,
    StepStart,
)


def upgrade(
    url: str,
    target: str,
    opts: GateOptions | None = None,
    *,
    phase: Phase | None = None,
    progress: Progress | None = None,
) -> Rollout:
    """Upgrade to ``target`` one revision at a time under the benchmark gate, holding the
    rollout lock (a second rollout is refused at once, naming this one)."""
    from stage4.plumbing import locks

    if opts is not None and opts.judge not in JUDGE_MODES:  # bad input: before connecting
        raise ConfigError(f"judge must be one of {', '.join(JUDGE_MODES)}, not {opts.judge!r}")
    target = migrations.check_target(target)
    opts = opts or GateOptions()
    rollout = Rollout(
        where(url),
        target,
        time.strftime("%Y-%m-%dT%H:%M:%S"),
        {k: str(v) for k, v in asdict(opts).items()},
    )
    run = RolloutRun(url, target, opts, rollout, Said("pre-flight", "starting", phase), progress)
    with locks.rollout_lock(url, f"upgrade --to {target}"), interrupts.sigterm_as_interrupt():
        error: BaseException | None = None
        try:
            _upgrade(run)
            return rollout
        except KeyboardInterrupt as e:
            interrupts.clear()
            error = e  # recorded as such should the rollback below fail too
            error = _interrupted(run, str(run.say))
            raise error from None
        except BaseException as e:
            error = e
            raise
        finally:
            run.finish(error)


def _upgrade(run: RolloutRun) -> None:
    """The phases, in order; each fills ``run.rollout``, which ``upgrade`` then saves and
    reports (``RolloutRun.finish``) however the phases ended."""
    run.s = settings()
    if not _plan(run):
        return
    found = _preflight(run)
    _open_folder(run)
    _backup(run, found)
    if run.todo[0] == migrations.chain()[0] and not _reference_schema(run):
        return
    _baseline(run)
    with migrations.session(run.url):  # one connection for every step and rollback
        for rev in run.todo:
            _step(run, rev)
    interrupts.check()  # one that arrived where it could not be raised: not a GO
    run.rollout.outcome = f"GO: at {migrations.current(run.url)}"


def _plan(run: RolloutRun) -> bool:
    """What this rollout applies or judges; False (and the outcome said) when nothing."""
    run.pending = migrations.steps(run.url, run.target)
    run.carried = _unjudged_before(run.url, run.opts)
    run.todo = run.carried + [rev for rev in run.pending if rev not in run.carried]
    if not run.todo:
        run.rollout.outcome = f"already at {migrations.current(run.url)}: nothing to do"
    return bool(run.todo)


def _preflight(run: RolloutRun):
    """Drift, then the pre-flight checks, each said as it is found (a warning may explain
    a NO-GO later); a failed check stops the rollout before anything is written. Where
    drift refuses, the checks run first, unsaid: a name a pending step creates that an
    object already holds is refused as pre-flight's collision, not as that object's drift."""
    try:
        drifted = _check_drift(run.url, run.opts, run.say)
    except PreflightError:
        _checks(run).raise_for_failures()
        raise
    run.say("pre-flight", "checking the database")
    found = _checks(run)
    run.rollout.preflight = [c.line() for c in found.checks] + drifted
    for line in run.rollout.preflight:
        run.say("pre-flight", line)
    found.raise_for_failures()
    return found


def _checks(run: RolloutRun):
    """``preflight.run`` on the database, read-only and within the lock timeout."""
    from stage4.rollout import preflight

    url, s, opts = run.url, run.s, run.opts
    with connect(url) as conn:
        # read-only, but it must not queue forever behind a lock either
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false)", (opts.lock_timeout or s.lock_timeout,)
        )
        try:
            return preflight.run(conn, s, steps=run.pending,
                                 expect_features=opts.expect_features, workload=opts.workload)  # fmt: skip
        except psycopg_errors().LockNotAvailable as e:
            raise PreflightError(
                f"pre-flight could not read {s.qualified_table} within the lock timeout "
                f"({opts.lock_timeout or s.lock_timeout}): another session holds an exclusive "
                "lock on it; retry when it has finished"
            ) from e


def _open_folder(run: RolloutRun) -> None:
    run.folder = run.opts.reports_dir / time.strftime("%Y%m%d-%H%M%S")
    run.folder.mkdir(parents=True, exist_ok=True)
    run.rollout.folder = str(run.folder)


def _backup(run: RolloutRun, found) -> None:
    """pg_dump before the first step, when asked and the table exists."""
    from stage4.rollout import backup

    if not run.opts.backup or found.facts.get("features") is None:
        return
    run.say("backup", "pg_dump -Fc")
    current = migrations.current(run.url) or "base"
    run.rollout.backup = str(backup.dump(run.url, run.s, run.opts.backup_dir, current))
    run.rollout.restore = backup.restore_command(run.rollout.backup, run.url, run.s.schema)


def _reference_schema(run: RolloutRun) -> bool:
    """Create the reference schema, not gated (there is nothing to compare yet); False when
    it was the whole rollout (the baseline is taken before the first optimisation)."""
    first = migrations.chain()[0]
    run.say(first, "creating the reference schema")
    rec = StepRecord(first)
    _timed_upgrade(
        run.url, rec, run.progress, run.opts.lock_timeout, run.opts.lock_retries, run.say
    )
    rec.verdict = "GO (reference schema, not gated)"
    run.rollout.steps.append(rec)
    _record(run.url, run.s)
    run.todo = run.todo[1:]
    if not run.todo:
        run.rollout.outcome = f"GO: at {first}"
    return bool(run.todo)


def _baseline(run: RolloutRun) -> None:
    """The run every step is judged against: measured now, stored when there was none."""
    from stage4.measure import report, store

    with connect(run.url, autocommit=True) as conn:
        store.ensure(conn, run.s)
        stored = store.load_baseline(conn, run.s)
    run.base = _first_baseline(run) if stored is None else _same_window(run, stored)
    run.previous = run.base
    run.rollout.baseline_run_id = run.base.run_id
    report.write_metrics(run.folder, "BASELINE", run.base)


def _first_baseline(run: RolloutRun):
    """No stored baseline: measure one now and store it."""
    from stage4.measure import bench, store

    run.say("baseline", f"no stored baseline: measuring one at {migrations.current(run.url)}")
    base = bench.run(run.url, label="BASELINE", progress=run.progress, **judging.bench_kw(run.opts))
    if base.environment.get("errors"):  # judged against nothing: fix the file first
        bad = "; ".join(f"{e['file']}: {e['error']}" for e in base.environment["errors"].values())
        raise ConfigError(f"a workload query fails before any step: {bad}")
    with connect(run.url, autocommit=True) as conn:
        store.set_baseline(conn, base.run_id, s=run.s)
    run.rollout.baseline_taken_now = True
    return base


def _step(run: RolloutRun, rev: str) -> None:
    """One step: upgrade (or take over a step left unjudged), judge, keep or roll back."""
    rec, before = _begin_step(run, rev)
    _apply(run, rec)
    judged = not run.package or rev == run.todo[-1]
    try:
        kept, pays = judging.judge(run, rec, before, gated_at=None if judged else run.target)
        judging.explain_step(run.url, rec, run.start_plans)
    except Stage4Error as e:  # the step is applied but could not be judged: undo it
        rec.reasons.append(f"could not be measured: {e}")
        kept = pays = False
    go = kept and (pays or not judged)
    if go or not run.opts.gate:
        _keep(run, rec, go, judged)
    else:
        _reject(run, rec, before)


def _begin_step(run: RolloutRun, rev: str) -> tuple[StepRecord, StepStart]:
    """What the step starts from, and its record (in the rollout from now on)."""
    from stage4.catalog import snapshot

    s = run.s
    with Session(run.url) as db:  # one connection, lent to each part in turn
        with lend(db) as conn:
            taken = snapshot.take(conn, s.bench_schema, s.own_schema)
            rows = judging.rows_hash(conn, s)
            counters = livewrites.counters(conn, s)
        if run.start is None:  # what the rollout starts from
            run.start = taken
            run.start_plans = judging.workload_plans(db, run.rollout.preflight)
        before = StepStart(taken, rows, visibility.at(db, s), rpc_access.at(db, s))
    rec = StepRecord(rev)
    rec.counters = {
        "before": counters,
        "earlier": sum(st.app_writes or 0 for st in run.rollout.steps),
    }
    run.rollout.steps.append(rec)
    return rec, before


def _apply(run: RolloutRun, rec: StepRecord) -> None:
    """Upgrade to the step's revision (or take over one applied by a rollout that did not
    judge it), and record it as applied, not judged. A step that fails was rolled back by
    PostgreSQL; a package rolls back the steps before it too."""
    rev = rec.revision
    try:
        if rev in run.carried:
            run.say(rev, "applied by a rollout that did not judge it: judging it now")
            rec.notes.append(
                "applied by an earlier rollout that was interrupted before judging it: judged now"
            )
        else:
            run.say(rev, "upgrading")
            _timed_upgrade(
                run.url, rec, run.progress, run.opts.lock_timeout, run.opts.lock_retries, run.say
            )
        with interrupts.shielded():
            rec.verdict = UNJUDGED  # committed: `status` names it should we die now
            run.rollout.save()
    except Stage4Error as e:
        rec.verdict = "FAILED (rolled back by PostgreSQL: nothing changed)"
        now = "still at"
        try:
            if run.package and run.applied:  # all or nothing: the package was not judged
                _roll_back(run.url, run.applied, run.opts, run.say)
                now = "the steps before it rolled back, at"
        finally:
            run.rollout.outcome = f"FAILED at {rev}: {now} {migrations.current(run.url)}"
        raise type(e)(_with_revision(e, run.url)) from e
    if rev in run.carried:  # not this rollout's to roll back
        run.applied = run.applied if run.package else []
    else:
        run.applied = [*run.applied, rec] if run.package else [rec]


def _with_revision(e: Exception, url: str) -> str:
    """``e``'s message with the revision the database is at, on its first line (the one
    the terminal shows)."""
    first, *rest = (str(e).strip() or type(e).__name__).splitlines()
    return "\n".join([f"{first.rstrip('.')}; the database is at {migrations.current(url)}", *rest])


def _keep(run: RolloutRun, rec: StepRecord, go: bool, judged: bool) -> None:
    if go:
        rec.verdict = "GO" if judged else f"measured (judged at {run.target})"
    else:
        rec.verdict = "GO (gate disabled with --no-gate)"
    run.previous = rec.run
    _record(run.url, run.s)
    run.rollout.save()


def _reject(run: RolloutRun, rec: StepRecord, before: StepStart) -> NoReturn:
    """NO-GO: roll back what this rollout applied (the step; a package: every step it
    applied), prove the database is back as it was, measure again, and stop with the
    reasons. A step the rollout found applied is kept: it never ends below where it
    started, and the message says how to roll that step back."""
    from stage4.catalog import snapshot

    rev, undone = rec.revision, run.applied
    blamed = rec.blamed or rev
    try:
        _roll_back(run.url, undone, run.opts, run.say)
    except MigrationError as e:
        rec.verdict = "NO-GO"
        run.rollout.outcome = f"NO-GO at {blamed}: {e}"
        raise MigrationError(f"NO-GO at {blamed} ({'; '.join(rec.reasons)}), and {e}") from e
    if undone:
        with connect(run.url) as conn:
            start = run.start if run.package else before.snapshot
            now = snapshot.take(conn, run.s.bench_schema, run.s.own_schema)
            wrote = _app_wrote(conn, run, rec)
        if wrote:
            table = run.s.qualified_table
            start, now = (snapshot.without_app_writes(x, table) for x in (start, now))
            rec.notes.append(
                f"after rollback: {wrote}; its rows and the sequences' values are proved by "
                "the downgrade's row check, not compared with the snapshot"
            )
        differences = snapshot.diff(start, now)
        rec.restored_exactly = not differences
        rec.notes += [f"after rollback: {d}" for d in differences]
    _decide(run, rec, blamed)
    if undone and rec.run is not None:
        reference = run.base if run.package else run.previous
        judging.rebench(run.url, rec, reference, run.opts, run.say, run.progress)
    elif undone:
        rec.notes.append(
            "not measured again after the rollback: the step was refused before its bench, "
            "and the snapshot proves what the rollback restored"
        )
    now_at = migrations.current(run.url)
    done = (
        f"{', '.join(st.revision for st in undone)} rolled back"
        if undone
        else "nothing rolled back"
    )
    run.rollout.outcome = f"NO-GO at {blamed}: {done}; the database is at {now_at}"
    raise GateError(_no_go_message(run, rec, blamed, now_at))


def _decide(run: RolloutRun, rec: StepRecord, blamed: str) -> None:
    """The verdicts of a NO-GO: the steps rolled back, the step judged (kept when the
    rollout found it applied), and the found-applied steps it did not reach (still to be
    judged by the next rollout)."""
    rev, undone = rec.revision, run.applied
    for st in undone:
        if st is not rec:
            st.verdict = f"rolled back with {rev} (NO-GO)"
    if rec in undone:
        rec.verdict = "NO-GO" if blamed == rev else f"rolled back (NO-GO at {blamed})"
    elif blamed == rev:
        rec.verdict = f"NO-GO, kept ({FOUND_APPLIED})"
    else:
        rec.verdict = f"{NOT_REACHED} (the rollout stopped at {blamed}'s NO-GO)"
    _not_reached(run, f"{NOT_REACHED} (the rollout stopped at {blamed}'s NO-GO)")


def _not_reached(run: RolloutRun, verdict: str) -> list[StepRecord]:
    """Records of the found-applied steps the rollout stopped before, so that the next
    one judges them (``status.unjudged``); returns them."""
    seen = {st.revision for st in run.rollout.steps}
    left = [StepRecord(r, verdict=verdict) for r in run.carried if r not in seen]
    run.rollout.steps += left
    return left


FOUND_APPLIED = "applied before this rollout"
NOT_REACHED = f"kept, not judged ({FOUND_APPLIED})"


def _app_wrote(conn, run: RolloutRun, rec: StepRecord) -> str | None:
    """What the app wrote to its table since the compared snapshot was taken, as a clause for
    the report (None: nothing), counted by PostgreSQL's statistics; across a table swap the
    count is unknown and the rows are left to the downgrade's row check."""
    steps = [st for st in run.rollout.steps if st.revision in run.todo] if run.package else [rec]
    since = (steps[0].counters or {}).get("before")
    own = sum(livewrites.own_writes(st.metrics) + _rolled_back(st) for st in steps)
    n = livewrites.settled(conn, run.s, since, own=own) if since else None
    earlier = sum(st.app_writes or 0 for st in steps)
    if n is None:
        return (
            f"the app's writes to {run.s.qualified_table} cannot be counted across the table swap"
        )
    if n or earlier:
        return f"the app wrote {run.s.qualified_table} meanwhile ({n + earlier} rows)"
    return None


def _rolled_back(rec: StepRecord) -> int:
    """Rows stage4 itself wrote to the app table and rolled back while judging ``rec`` (the
    canary rows, the bench's writes), which PostgreSQL counts with the app's."""
    env = rec.run.environment if rec.run is not None else {}
    return rec.own_rows + int(env.get("writes_rolled_back") or 0)


def _check_drift(url: str, opts: GateOptions, say: Phase) -> list[str]:
    """Refuse a database whose catalog drifted from its revision's promise (drift.py),
    unless accepted; returns the accepted differences and the app's own changes (carried,
    never refusing), for the report."""
    from stage4.catalog import drift

    found = drift.check(url)
    own = [f"the app's own, carried: {d}" for d in found.own]
    if not found.drifted:
        return own
    if not opts.accept_drift:
        raise PreflightError(drift.refusal(found))
    # said once, with the pre-flight's findings (``_preflight``)
    return [f"drift accepted (--accept-drift): {d}" for d in found.managed] + own


def _record(url: str, s) -> None:
    """Record what the revision the database has just been upgraded to looks like
    (drift.py; never on the way down: a rollback's state is no revision's promise). The
    step is committed: a failure to record is a warning, never the step's failure."""
    import logging

    import psycopg

    from stage4.catalog import drift

    try:
        drift.record(url, s)
    except (psycopg.Error, Stage4Error) as e:
        logging.getLogger("stage4").warning(
            "could not record the catalog for drift detection: %s", str(e).strip()
        )


def _same_window(run: RolloutRun, stored):
    """The run the first step is judged against: the database as it is now, measured now.

    A stored baseline may be hours old and the machine's speed has moved since (see
    ``stats``, "Machine drift"); judging a step against it judges the machine. The stored
    run stays the user's record (its id is kept in the rollout); a query whose results
    differ from it is named, since the data or an earlier step changed them.
    """
    from stage4.measure import bench

    url, rollout, say = run.url, run.rollout, run.say
    taken = (stored.started_at or "")[:19].replace("T", " ") or "an earlier run"
    say(
        "baseline",
        f"measuring {migrations.current(url)} now (the stored baseline, run "
        f"{stored.run_id}, is from {taken})",
    )
    now = bench.run(url, label="BASELINE", progress=run.progress, **judging.bench_kw(run.opts))
    rollout.stored_baseline_run_id = stored.run_id
    rollout.reference_notes.append(
        f"re-measured at the start of this rollout as run {now.run_id}, in the same window as "
        f"the steps; the stored baseline is run {stored.run_id} ({taken})"
    )
    changed = [q for q, fp in stored.fingerprints.items() if now.fingerprints.get(q) != fp]
    if changed:
        rollout.reference_notes.append(
            f"results of {', '.join(changed)} differ from the stored baseline's (data or an "
            "earlier step changed them): each step is checked against today's results"
        )
    return now


def _unjudged_before(url: str, opts: GateOptions) -> list[str]:
    """Steps the last rollout on this database committed but never judged (it was killed,
    or interrupted with --keep-unjudged), still applied: the next rollout judges them. None
    of its steps can be running: we hold the rollout lock."""
    from stage4.rollout import status

    prior = status.last_rollout(opts.reports_dir, where(url))
    return status.unjudged(prior, migrations.current(url)) if prior else []


def _interrupted(run: RolloutRun, during: str) -> interrupts.Interrupted:
    """SIGINT/SIGTERM arrived ``during`` a phase: the statement in flight was cancelled and
    rolled back by PostgreSQL; steps this rollout committed but did not judge are rolled
    back (default) or kept and recorded as unjudged (--keep-unjudged); steps it found
    applied stay as they were. Sets the outcome (``upgrade`` saves it) and returns the
    Interrupted to raise."""
    from stage4.rollout import status

    url, rollout, opts, say = run.url, run.rollout, run.opts, run.say
    now = migrations.current(url)
    unjudged = status.unjudged(_verdicts(rollout), now)
    found = [st for st in rollout.steps if st.revision in unjudged and st.revision in run.carried]
    for st in found:
        st.verdict = NOT_REACHED
    open_ = [st for st in rollout.steps if st.revision in unjudged and st not in found]
    names = ", ".join(st.revision for st in open_)
    if not open_:
        done = ""
    elif opts.keep_unjudged:
        for st in open_:
            st.verdict = "unjudged (kept with --keep-unjudged)"
        done = f"{names} kept, not judged (--keep-unjudged): the next `stage4 upgrade` judges it"
    else:
        try:
            _roll_back(url, open_, opts, say, "interrupted before it was judged")
            for st in open_:
                st.verdict = "rolled back (interrupted before it was judged)"
            done = f"{names} rolled back (not judged)"
        except (KeyboardInterrupt, Stage4Error) as e:
            why = "interrupted again" if isinstance(e, KeyboardInterrupt) else str(e)
            left = status.unjudged(_verdicts(rollout), migrations.current(url))
            for st in open_:
                if st.revision in left:
                    st.verdict = "unjudged (its rollback was interrupted)"
            done = (
                f"rolling back {names} stopped ({why}): {', '.join(left) or 'nothing'} left "
                "applied, not judged; the next `stage4 upgrade` judges it, `stage4 "
                "downgrade` removes it"
            )
    found += _not_reached(run, NOT_REACHED)
    if found:
        kept = f"{', '.join(st.revision for st in found)} {NOT_REACHED}"
        done = f"{done}; {kept}" if done else kept
    done = done or "nothing unjudged was left applied"
    with interrupts.shielded():
        message = (
            f"interrupted during {during}: {done}; the database is at {migrations.current(url)}"
        )
        rollout.outcome = message
    return interrupts.Interrupted(message)


def _verdicts(rollout: Rollout) -> dict[str, Any]:
    return {"steps": [{"revision": st.revision, "verdict": st.verdict} for st in rollout.steps]}


def _roll_back(
    url: str, steps: list[StepRecord], opts: GateOptions, say: Phase, why: str = "NO-GO"
) -> None:
    """Downgrade ``steps`` (applied in this order) newest first, timing each one. A step
    that cannot be rolled back (a lock held too long) stops it with what to run next."""
    for st in reversed(steps):
        say(st.revision, f"{why}: rolling back")
        try:
            prev = migrations.previous(st.revision)
            st.rollback_seconds, settled = _retrying(
                lambda: migrations.timed(
                    migrations.downgrade,
                    url,
                    prev,  # noqa: B023
                    **_lock_kw(opts.lock_timeout),
                ),
                url,
                st.revision,
                f"rollback to {prev}",
                opts.lock_retries,
                st.notes,
                say,
            )
        except Stage4Error as e:
            back_to = migrations.previous(steps[0].revision)
            raise MigrationError(
                f"rolling back stopped at {migrations.current(url)}: {e}; finish it with: "
                f"stage4 downgrade --to {back_to}"
            ) from e
        st.notes += [f"rollback: {n}" for n in settled_notes(settled)]


def psycopg_errors():
    import psycopg.errors

    return psycopg.errors


def _lock_kw(lock_timeout: str | None) -> dict[str, str]:
    return {} if lock_timeout is None else {"lock_timeout": lock_timeout}


def _retrying(
    call, url: str, step: str, what: str, retries: int, notes=None, say: Phase | None = None
):
    """``call()`` (one timed step), tried again after a lock timeout (retry.py); only the
    try that succeeded is timed."""
    from stage4.plumbing import retry

    tell = None if say is None else (lambda line: say(step, line))
    return retry.on_lock_timeout(call, url=url, what=what, retries=retries, notes=notes, say=tell)


def _timed_upgrade(
    url: str,
    rec: StepRecord,
    progress: Progress | None,
    lock_timeout: str | None = None,
    lock_retries: int = DEFAULT_RETRIES,
    say: Phase | None = None,
) -> None:
    """Apply one revision, recording its duration, its metrics and its notes."""
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    rec.metrics = metrics
    rec.upgrade_seconds, settled = _retrying(
        lambda: migrations.timed(
            migrations.upgrade,
            url,
            rec.revision,
            progress=progress,
            metrics=metrics,
            notes=notes,
            **_lock_kw(lock_timeout),
        ),
        url,
        rec.revision,
        f"upgrade to {rec.revision}",
        lock_retries,
        rec.notes,
        say,
    )
    rec.notes += [f"{k}: {v}" for k, v in metrics.items()] + notes + settled_notes(settled)


def settled_notes(settled: dict[str, float]) -> list[str]:
    """What ``migrations.settle`` did after a step, timed apart from the step."""
    return [
        f"then VACUUM (ANALYZE) {rel}: {sec:.1f} s (not counted in the step's time)"
        for rel, sec in settled.items()
    ]


def _no_go_message(run: RolloutRun, rec: StepRecord, blamed: str, now_at: str | None) -> str:
    """One line: the revision at fault and why, what was rolled back (or kept, and how to
    roll it back), where the database is, and the report."""
    undone, rev, target = run.applied, rec.revision, run.todo[-1]
    reasons = (
        "; ".join(r for r in rec.reasons if not r.startswith("not gated")) or "no reason recorded"
    )
    parts = [f"NO-GO at {blamed}: {reasons}."]
    if undone:
        state = (
            "the database is back exactly as before"
            if rec.restored_exactly
            else "the state before it was not recorded"
            if rec.restored_exactly is None
            else "WARNING: the rollback left differences (see report)"
        )
        names = " … ".join(dict.fromkeys([undone[0].revision, undone[-1].revision]))
        verb = "was" if len(undone) == 1 else "were"
        seconds = sum(st.rollback_seconds or 0.0 for st in undone)
        parts.append(f"{names} {verb} rolled back in {seconds:.1f} s; {state}.")
    if blamed not in run.pending:  # found applied: judged, never rolled back by us
        above = f" (which rolls back {blamed} … {now_at})" if now_at != blamed else ""
        parts.append(
            f"{blamed} was {FOUND_APPLIED} and is kept: to roll it back: stage4 downgrade "
            f"--to {migrations.previous(blamed)}{above}."
        )
    if run.opts.judge == "each" and blamed == rev and rev != target and undone:
        parts.append(
            f"{rev} was judged on its own; to judge {rev} … {target} as one package: "
            f"stage4 upgrade --to {target} --judge target."
        )
    said = " ".join(parts).rstrip(".")
    return f"{said}; the database is at {now_at}. Report: {run.folder / 'REPORT.md'}"


@dataclass
class RollbackStep:
    revision: str
    seconds: float  # the step itself; what settle did after it is in ``settled``
    verified: list[str]
    settled: dict[str, float] = field(default_factory=dict)


def downgrade(
    url: str,
    target: str,
    *,
    lock_timeout: str | None = None,
    phase: Phase | None = None,
    lock_retries: int = DEFAULT_RETRIES,
) -> list[RollbackStep]:
    """Roll back one revision at a time to ``target``, checking after each step that every
    row is still there and that the revision we are back at keeps its promises; under the
    rollout lock, as ``upgrade``."""
    from stage4.plumbing import locks

    say = Said("downgrade", "starting", phase)
    with locks.rollout_lock(url, f"downgrade --to {target}"), interrupts.sigterm_as_interrupt():
        try:
            target = migrations.downgrade_target(url, to=target)  # again, under the lock
            return _downgrade(url, target, say, lock_timeout, lock_retries)
        except KeyboardInterrupt:
            interrupts.clear()
            now = migrations.current(url)
            rest = (
                f"; `stage4 downgrade --to {target}` finishes the rollback" if now != target else ""
            )
            raise interrupts.Interrupted(
                f"interrupted during {say}: a step not yet committed was rolled "
                f"back by PostgreSQL; the database is at {now}{rest}"
            ) from None


def _downgrade(
    url: str, target: str, say: Phase, lock_timeout: str | None, lock_retries: int
) -> list[RollbackStep]:
    from stage4.catalog import verify

    s = settings()
    done = []
    with migrations.session(url):  # one connection for every step
        for rev in migrations.down_steps(url, target):
            back_to = migrations.previous(rev)
            with connect(url) as conn:
                rows_before = judging.rows_hash(conn, s)
                counters = livewrites.counters(conn, s)
            say(rev, f"rolling back to {back_to}")
            metrics: dict[str, Any] = {}
            step = partial(
                migrations.timed,
                migrations.downgrade,
                url,
                back_to,
                metrics=metrics,
                **_lock_kw(lock_timeout),
            )
            seconds, settled = _retrying(
                step, url, rev, f"rollback to {back_to}", lock_retries, say=say
            )
            kept, broken = verify.revision(url, s, back_to) if back_to != "base" else ([], [])
            rec = StepRecord(rev, counters={"before": counters}, metrics=metrics)
            with connect(url) as conn:
                moved = back_to != "base" and judging.rows_hash(conn, s) != rows_before
                broken += judging.rows_kept(conn, s, rec, moved)
            kept += [v for v in rec.verified if v.startswith("every row kept")]
            if broken:
                raise MigrationError(
                    f"rollback of {rev} committed but the check failed: {'; '.join(broken)}; "
                    f"restore from the backup taken before the upgrade if rows are missing"
                )
            done.append(RollbackStep(rev, seconds, kept, settled))
    return done
