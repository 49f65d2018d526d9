"""opt2's upgrade on a live database, as the steps its revision runs one after the other.

1. ``resume_or_refuse``: columns and trigger left by an upgrade killed during its backfill
   (``leftover_sql``) are resumed; columns of the same names without the trigger are
   someone else's, and the upgrade refuses before changing anything.
2. ``add_catalog``: part 1, in the step's transaction (catalog only, milliseconds under
   ACCESS EXCLUSIVE).
3. ``backfill``: entering Alembic's ``autocommit_block`` commits part 1; from then on every
   statement commits on its own: the batches (``stage4.ddl.backfill``), the catch-up, the
   count proving no row is left, the marker on the trigger, VACUUM (ANALYZE). When it
   stops (an error, SIGINT/SIGTERM) the downgrade's statements drop part 1 again, so the
   database is back at opt1 exactly; when that fails too, the one-line error says what is
   left and that ``alembic upgrade opt2`` resumes.
4. ``report``: the lock figures and the backfill's into ``config.attributes["metrics"]``,
   one line in the log.

Offline (``--sql``), ``render`` writes part 1 and the backfill as one UPDATE instead.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from stage4.config import Settings
from stage4.ddl import backfill
from stage4.errors import MigrationError
from stage4.optimisations import gis_columns
from stage4.plumbing import interrupts

log = logging.getLogger("alembic.runtime.migration")
# config.attributes keys that size the backfill's batches and space its VACUUMs
_SIZING = ("target_s", "first_blocks", "vacuum_every", "vacuum_min_blocks")


def catalog_sql(s: Settings) -> list[str]:
    """Part 1: columns, comments, storage, column grants (who reads ``geom`` column by
    column reads them too), function, trigger."""
    return [
        gis_columns.add_columns_sql(s),
        *gis_columns.comments(s),
        gis_columns.set_storage_sql(s),
        gis_columns.column_grants_sql(s),
        gis_columns.function_sql(s),
        gis_columns.trigger_sql(s),
    ]


def vacuum_sql(s: Settings) -> str:
    """The new columns' statistics, and the old row versions the backfill left."""
    return f"VACUUM (ANALYZE) {s.qualified_table} ({', '.join(gis_columns.derived(s))})"


def render(op, s: Settings) -> None:
    """Offline: part 1, then (outside any transaction block) the backfill as the one
    UPDATE it amounts to, the marker and the VACUUM."""
    for sql in catalog_sql(s):
        op.execute(sql)
    with op.get_context().autocommit_block():
        op.execute(
            "-- online: filled in batches of heap blocks per partition, each committed on its\n"
            "-- own (any write of a derived column makes the trigger compute all five), then\n"
            "-- the rows the app moved meanwhile, then a check that none is left\n"
            f"UPDATE {s.qualified_table} SET {gis_columns.backfill_set(s)} "
            f"WHERE {gis_columns.backfill_todo(s)}"
        )
        op.execute(gis_columns.filled_sql(s))
        op.execute(vacuum_sql(s))


@dataclass
class Upgrade:
    """One online upgrade to opt2 on ``op``'s connection. ``undo`` is the downgrade's
    statements (catalog only): what drops part 1 when the backfill stops."""

    op: Any  # alembic.op
    s: Settings
    attrs: dict  # context.config.attributes: progress, backfill sizing, metrics
    undo: list[str]
    resumed: bool = False
    held: float = 0.0  # seconds part 1 held ACCESS EXCLUSIVE (until its commit)
    left: str = ""  # what is left when the undo failed too
    filler: backfill.Backfill | None = None
    _t0: float = field(default=0.0, repr=False)

    def resume_or_refuse(self) -> None:
        """Resume an upgrade killed during its backfill; refuse columns it did not create."""
        s, bind = self.s, self.op.get_bind()
        self.resumed = bool(bind.exec_driver_sql(gis_columns.leftover_sql(s)).scalar())
        self._t0 = time.perf_counter()
        if self.resumed:
            log.info("opt2: columns and trigger found from an upgrade that was stopped: resuming")
            return
        clash = [r[0] for r in bind.exec_driver_sql(gis_columns.existing_columns_sql(s))]
        if clash:
            raise MigrationError(
                f"{s.qualified_table} already has column(s) {', '.join(clash)}: "
                "rename or drop them before opt2 (it will not adopt columns it did not create)"
            )

    def add_catalog(self) -> None:
        """Part 1, in the step's transaction; already committed when resumed."""
        if not self.resumed:
            for sql in catalog_sql(self.s):
                self.op.execute(sql)

    def backfill(self) -> None:
        """Part 2, each statement committed on its own; undone when it stops."""
        try:
            with self.op.get_context().autocommit_block():  # commits part 1
                self.held = 0.0 if self.resumed else time.perf_counter() - self._t0
                raw = self.op.get_bind().connection.driver_connection  # psycopg, in autocommit
                self.filler = self._filler(raw)
                self._fill_or_undo(raw)
        except Exception as e:
            # a lost connection also fails Alembic's commit on leaving the block, whose
            # error would hide where the database stands
            if self.left and not isinstance(e, MigrationError):
                raise MigrationError(self.left) from e
            raise

    def report(self) -> None:
        """The lock figures (readers wait for part 1 only; writers for part 1 or one batch)
        beside the backfill's, into ``metrics``, and one line in the log."""
        m = self.filler.metrics
        m["readers_blocked_s"] = round(self.held, 4)
        m["writers_blocked_s"] = round(max(self.held, m.get("backfill_longest_batch_s", 0.0)), 4)
        metrics = self.attrs.get("metrics")
        if isinstance(metrics, dict):
            metrics.update(m)
        log.info(
            "opt2: ACCESS EXCLUSIVE %.3f s, %s rows filled in %s batches (longest %.3f s)",
            self.held,
            m.get("backfill_rows"),
            m.get("backfill_batches"),
            m.get("backfill_longest_batch_s", 0.0),
        )

    def _filler(self, raw) -> backfill.Backfill:
        s, attrs = self.s, self.attrs
        return backfill.Backfill(
            raw,
            s.qualified_table,
            gis_columns.backfill_set(s),
            gis_columns.backfill_todo(s),
            progress=attrs.get("progress"),
            **{k: attrs[f"backfill_{k}"] for k in _SIZING if f"backfill_{k}" in attrs},
        )

    def _fill_or_undo(self, raw) -> None:
        """Fill; when that stops, drop part 1 and say so in one line (an interrupt stays one)."""
        try:
            _fill(raw, self.s, self.filler)
        except BaseException as e:
            self.left = _undo(raw, self.s, self.undo, e)
            if isinstance(e, Exception):
                raise MigrationError(self.left or _rolled_back(e)) from e
            raise


def _fill(raw, s: Settings, filler: backfill.Backfill) -> None:
    """Backfill, catch up, prove it, mark it, then VACUUM (ANALYZE). ``row_security`` is off
    meanwhile: a policy that would hide rows from us is then an error, never a partial fill."""
    prior = raw.execute("SELECT current_setting('row_security')").fetchone()[0]
    raw.execute("SET row_security = off")
    try:
        filler.run()
        filler.catch_up()
        filler.check()
        raw.execute(gis_columns.filled_sql(s))
    finally:
        with contextlib.suppress(psycopg.Error):
            raw.execute("SELECT set_config('row_security', %s, false)", (prior,))
    _vacuum(raw, s, filler)


def _vacuum(raw, s: Settings, filler: backfill.Backfill) -> None:
    """The old row versions: blocks nobody; the step is complete without it, so a failure
    is a warning (autovacuum does it later)."""
    t0 = time.perf_counter()
    if filler.progress:
        filler.progress("VACUUM (ANALYZE) after the backfill", 0, 1)
    try:
        raw.execute(vacuum_sql(s))
        filler.metrics["vacuum_s"] = round(time.perf_counter() - t0, 3)
    except psycopg.Error as e:
        log.warning(
            "opt2: VACUUM (ANALYZE) after the backfill failed (autovacuum will do it): %s",
            str(e).strip().splitlines()[0],
        )
    if filler.progress:
        filler.progress("VACUUM (ANALYZE) after the backfill", 1, 1)


def _undo(raw, s: Settings, statements: list[str], error: BaseException) -> str:
    """The backfill stopped: drop what part 1 committed (one transaction, catalog only),
    signals held off meanwhile. Returns the line saying what is left when that failed too
    (a lost connection, a lock never granted), else ''."""
    try:
        with interrupts.shielded(), raw.transaction():
            for sql in statements:
                raw.execute(sql)
    except psycopg.Error as e:
        message = (
            f"upgrade to opt2 stopped during its backfill ({_why(error)}) and dropping its "
            f"columns failed ({_why(e)}): {s.qualified_table} is at opt1 with opt2's columns "
            "and trigger; `alembic upgrade opt2` resumes the backfill"
        )
        log.warning("%s", message)
        return message
    return ""


def _why(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _rolled_back(error: BaseException) -> str:
    return (
        "upgrade to opt2 failed during its backfill and was rolled back (its columns and "
        f"trigger dropped): {_why(error)}"
    )
