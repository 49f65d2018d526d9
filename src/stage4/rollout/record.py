"""What a gated rollout is told and what it records: the user's options, each step's record,
the rollout's record (``rollout.json``), and the run under way that the phases in ``gate``
share (``RolloutRun``), whose ``finish`` saves and reports it however it ends."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stage4.catalog import visibility
from stage4.config import redact
from stage4.plumbing import interrupts
from stage4.plumbing.retry import DEFAULT_RETRIES

if TYPE_CHECKING:
    from stage4.catalog.rpc_access import Calls
    from stage4.config import Settings
    from stage4.measure.metrics import BenchRun

Phase = Callable[[str, str], None]  # (step, phase text)
Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class GateOptions:
    """What the user chose; recorded in the run so a decision can be audited later."""

    threshold: float = 0.10
    confidence: float = 0.95
    min_delta_ms: float = 2.0
    iterations: int | None = None
    concurrency: int | None = None
    duration: float | None = None
    gate: bool = True
    backup: bool = True
    backup_dir: Path = Path("backups")
    reports_dir: Path = Path("reports")
    expect_features: int | None = None
    lock_timeout: str | None = None  # each step's lock_timeout (None: [tool.stage4] lock_timeout)
    judge: str = "each"  # "each": every step against the baseline; "target": only the last
    keep_unjudged: bool = False  # interrupted: keep a committed, unjudged step (else roll back)
    accept_stale: bool = False  # a stale read within its revision's declared budget is GO
    accept_drift: bool = False  # start even when the catalog differs from the revision's record
    lock_retries: int = DEFAULT_RETRIES  # tries again after a lock timeout (retry.py)
    workload: Path | None = None  # the app's own queries (*.sql); None: [tool.stage4] workload


JUDGE_MODES = ("each", "target")
UNJUDGED = "applied, not judged"  # a step's verdict between its commit and its judgement


@dataclass
class StepRecord:
    revision: str
    verdict: str = "pending"  # GO, NO-GO, GO (gate disabled), FAILED
    upgrade_seconds: float | None = None
    rollback_seconds: float | None = None
    run_id: int | None = None
    reasons: list[str] = field(default_factory=list)
    comparisons: dict[str, Any] = field(default_factory=dict)
    vs_previous: dict[str, Any] = field(default_factory=dict)
    # the margins used and what the 2 ms floor excused (``report.margins``), as printed
    margin: str = ""
    verified: list[str] = field(default_factory=list)
    restored_exactly: bool | None = None
    notes: list[str] = field(default_factory=list)
    # qid -> {rewrite name: {sql, same_results, app_ms, rewrite_ms, speedup}}: faster SQL
    # "available if your app adopts it"; in no verdict
    available: dict[str, Any] = field(default_factory=dict)
    # qid -> {fresh, detail[, budget, declared_by, accepted]}: the canary check
    freshness: dict[str, Any] = field(default_factory=dict)
    # qid -> {headline, compact, change, execution_ms}: plans.summarise, after the bench
    plans: dict[str, Any] = field(default_factory=dict)
    # after a NO-GO rollback: {run_id, compared_with, restored, reasons} (``rebench``)
    after_rollback: dict[str, Any] = field(default_factory=dict)
    # the revision a NO-GO found before the bench is blamed on (a stale read that a revision
    # below introduced); None: the step itself, or judged by its bench
    blamed: str | None = None
    rows_checked: int | None = None  # rows the step itself checked, source vs copy
    app_writes: int | None = None  # rows the app wrote while the step ran (None: unknown)
    # rows of the app table stage4 wrote and rolled back while judging the step (canary
    # rows, the benched writes): PostgreSQL counts them as written, so the app's count
    # leaves them out
    own_rows: int = 0
    # not saved: the step's bench run; the app table's write counters (livewrites) by when
    # they were read ("before", "earlier"); what the migration reported (migrations.timed:
    # rows it checked and wrote itself)
    run: BenchRun | None = field(default=None, repr=False, compare=False)
    counters: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    metrics: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Rollout:
    database: str
    target: str
    started: str
    options: dict[str, Any]
    preflight: list[str] = field(default_factory=list)
    backup: str | None = None
    restore: str | None = None  # the shell line that restores the backup (no password)
    baseline_run_id: int | None = None
    baseline_taken_now: bool = False
    stored_baseline_run_id: int | None = None  # when the baseline was re-measured now
    reference_notes: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    folder: str = ""
    outcome: str = "running"
    pid: int = field(default_factory=os.getpid)  # lets `status` tell a dead run from a live one
    host: str = field(default_factory=socket.gethostname)

    def save(self) -> Path:
        path = Path(self.folder) / "rollout.json"
        unsaved = {"run": None, "counters": None, "metrics": {}}
        plain = replace(self, steps=[replace(st, **unsaved) for st in self.steps])
        data = asdict(plain)
        for st in data["steps"]:
            for name in unsaved:
                st.pop(name, None)
        path.write_text(redact(json.dumps(data, indent=2, default=str)))
        return path


class Said:
    """The phase a rollout (or a rollback) is in: told to the caller's ``phase`` callback
    and kept, since an interrupt's message names the phase it arrived in."""

    def __init__(self, step: str, text: str, phase: Phase | None = None) -> None:
        self.step, self.text, self._phase = step, text, phase

    def __call__(self, step: str, text: str) -> None:
        interrupts.check()  # a phase boundary: a swallowed interrupt stops the run here
        self.step, self.text = step, text
        if self._phase:
            self._phase(step, text)

    def __str__(self) -> str:
        return f"{self.step} {self.text}"


@dataclass
class RolloutRun:
    """One rollout under way: what every phase reads (where, what, how the user chose) and
    what the phases hand on to each other. ``finish`` is the one place the rollout is saved
    and reported, whatever ended it."""

    url: str
    target: str
    opts: GateOptions
    rollout: Rollout
    say: Said
    progress: Progress | None = None
    s: Settings | None = None  # the settings, read when the rollout starts
    folder: Path | None = None  # the run's folder, made once pre-flight has passed
    pending: list[str] = field(default_factory=list)  # revisions Alembic has yet to apply
    carried: list[str] = field(default_factory=list)  # applied by a rollout that did not judge
    todo: list[str] = field(default_factory=list)  # carried + pending, in order
    base: BenchRun | None = None  # the run every step is judged against
    previous: BenchRun | None = None  # the last kept step's run (the baseline before the first)
    # what a NO-GO rolls back: steps this rollout applied itself, never one it found applied
    # (carried), so no rollout ends below the revision it started from
    applied: list[StepRecord] = field(default_factory=list)
    start: dict[str, Any] | None = None  # the catalog snapshot the rollout started from
    start_plans: dict[str, Any] = field(default_factory=dict)  # each query's plan then

    @property
    def package(self) -> bool:
        """The pending steps are judged as one package (``judge="target"``)."""
        return self.opts.judge == "target"

    def finish(self, error: BaseException | None = None) -> None:
        """Save ``rollout.json`` and write the report, once a run folder exists. An error
        that left no outcome (a backup or baseline that failed) is recorded as the outcome;
        recording it never hides the error itself."""
        from stage4.measure import report

        if self.folder is None:
            return
        with interrupts.shielded():
            try:
                if error is not None and self.rollout.outcome == "running":
                    self.rollout.outcome = f"FAILED during {self.say.step}: {_first_line(error)}"
                self.rollout.save()
                report.write(self.folder)
            except Exception:
                if error is None:
                    raise


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@dataclass(frozen=True)
class StepStart:
    """The database as a step found it: what its judgement and its rollback compare with."""

    snapshot: dict[str, Any]  # snapshot.take
    rows: str | None
    reach: visibility.Reach
    calls: Calls | None = None  # which API role calls which RPC
