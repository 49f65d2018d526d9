"""Fill a column for the rows already there, online: short committed batches of heap blocks.

A revision that adds columns kept by a trigger (opt2) must still compute them for the
rows written before the trigger existed. One UPDATE of the whole table would hold a row
lock on every row until it commits (any app write to any row waits for the end) and
retry nothing; a rewrite (a STORED generated column) holds ACCESS EXCLUSIVE as long.
Here each batch is one UPDATE of a range of heap blocks of one leaf relation (a TID
range scan: it reads only those blocks, no index), committed on its own in autocommit.

* Readers never wait: an UPDATE takes ROW EXCLUSIVE on the table, which no reader's
  lock conflicts with.
* A writer waits only when it writes a row of the batch in flight, for at most that
  batch: batches are sized to last about ``target_s`` (the next batch's block count
  follows the last one's speed).
* A batch that meets an app's row lock for longer than ``lock_timeout``, or that
  PostgreSQL picks as a deadlock victim, is tried again (``tries`` times in all).
* Every row gets a new version, which does not fit in its own full page. Appended at
  the end, they would leave each leaf twice its size (a later VACUUM frees the old half
  but cannot give it back: every scan reads it). So the leaf being filled is vacuumed
  between batches, once the blocks updated since its last VACUUM reach ``vacuum_every``
  of it (at least ``vacuum_min_blocks``): the old versions' space goes to the free
  space map, where the next batches' new versions go instead of the end. A leaf grows
  by about the blocks of one such interval. Not after its last batch: the caller's
  VACUUM (ANALYZE) covers it. ``INDEX_CLEANUP on``: the indexes, which get an entry for
  every new version too, reuse the old entries' space as well (they end about a third
  larger, not twice; it costs one pass over the leaf's indexes per VACUUM). ``TRUNCATE
  off``: no ACCESS EXCLUSIVE, so no reader waits. A VACUUM that cannot have its lock
  within ``lock_timeout`` (autovacuum, an app's DDL) is skipped: it only saves space.
* Blocks are taken in physical order, so the new row versions land in the order the
  rows had (in the freed blocks just before the batch, or at the end): the layout a
  previous rewrite chose (opt1 writes each partition in quarters sorted along the
  geometry's curve) is kept, roughly. Batches by id would scatter the rows in id order
  and every bbox query over more pages.
* The block ranges are those the leaves had when the backfill started: new row
  versions, ours and the app's, land in blocks already passed or after them and are
  not visited again (one landing ahead, in space an app's dead rows left, is filled
  already and matches no ``todo``).
* A row the app updated (without touching the columns the trigger watches) into a
  block already passed keeps its NULL: ``catch_up`` updates what is left (a scan of
  each leaf) until nothing is, then ``left`` counts it to prove it.

Between batches (and before each VACUUM) a signal swallowed by a finaliser is raised
again (``interrupts.check``): an interrupted backfill stops at a batch boundary, and the
caller decides what becomes of the rows already filled (opt2 drops its columns).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stage4.errors import MigrationError
from stage4.plumbing import interrupts

log = logging.getLogger(__name__)
# Between batches: frees the heap space of the rows updated (see the module's docstring);
# the TOAST table is left alone: an UPDATE keeps the TOAST values it does not change.
_VACUUM = "VACUUM (INDEX_CLEANUP on, TRUNCATE off, PROCESS_TOAST off) "
Progress = Callable[[str, int, int], None]
# Errors after which the same batch is tried again: nothing of it was committed.
_RETRYABLE = ("LockNotAvailable", "DeadlockDetected", "SerializationFailure")


@dataclass
class Backfill:
    """``UPDATE ONLY leaf SET {set_clause} WHERE {todo}``, by block ranges, on ``conn``
    (a psycopg connection in autocommit, so that each batch commits on its own)."""

    conn: object
    table: str  # qualified; its leaf relations are updated (the table itself when plain)
    set_clause: str
    todo: str  # the rows still to fill
    progress: Progress | None = None
    target_s: float = 0.2
    tries: int = 5
    first_blocks: int = 32
    vacuum_every: float = 0.0625  # share of a leaf updated between its VACUUMs; 0: none
    vacuum_min_blocks: int = 64
    metrics: dict = field(default_factory=dict)

    def _tell(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    def leaves(self) -> list[tuple[str, int]]:
        """(leaf relation, its size in blocks now) for each leaf of the table."""
        return self.conn.execute(
            # pg_partition_tree gives nothing for a plain table, not partitioned nor a partition
            "SELECT c.oid::regclass::text, "
            "(pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint "
            "FROM pg_class c WHERE c.oid IN (SELECT relid FROM pg_partition_tree(%s::regclass) "
            "WHERE isleaf) OR (c.oid = %s::regclass AND c.relkind = 'r') ORDER BY 1",
            (self.table, self.table),
        ).fetchall()

    def run(self) -> int:
        """Every block range of every leaf once; returns the rows updated."""
        leaves = self.leaves()
        total = sum(n for _, n in leaves)
        done = rows = batches = vacuums = 0
        longest = vacuum_s = 0.0
        t0 = time.perf_counter()
        self._tell("backfill", 0, total)
        step = self.first_blocks
        for leaf, blocks in leaves:
            start = since = 0  # blocks updated since the leaf's last VACUUM
            every = blocks
            if self.vacuum_every > 0:
                every = max(1, self.vacuum_min_blocks, int(blocks * self.vacuum_every))
            while start < blocks:
                if since >= every:
                    seconds = self._vacuum(leaf)
                    since = 0
                    if seconds is not None:
                        vacuums, vacuum_s = vacuums + 1, vacuum_s + seconds
                # a batch ends where a VACUUM is due: the leaf grows by one interval only
                end = min(start + step, start + every - since, blocks)
                n, seconds = self._batch(leaf, start, end)
                rows, batches, longest = rows + n, batches + 1, max(longest, seconds)
                done += end - start
                self._tell("backfill", done, total)
                # the next batch lasts about target_s at this batch's speed
                per_block = seconds / (end - start)
                step = max(8, min(16_384, int(self.target_s / max(per_block, 1e-6))))
                start, since = end, since + end - start
        self.metrics.update(
            backfill_rows=rows,
            backfill_batches=batches,
            backfill_longest_batch_s=round(longest, 4),
            backfill_vacuums=vacuums,
            backfill_vacuum_s=round(vacuum_s, 3),
            backfill_s=round(time.perf_counter() - t0, 3),
        )
        return rows

    def _batch(self, leaf: str, start: int, end: int) -> tuple[int, float]:
        """One committed UPDATE of blocks [start, end); (rows, seconds of the try that
        succeeded)."""
        sql = (
            f"UPDATE ONLY {leaf} SET {self.set_clause} WHERE ctid >= '({start},0)'::tid "
            f"AND ctid < '({end},0)'::tid AND {self.todo}"
        )
        return self._retrying(sql)

    def _vacuum(self, leaf: str) -> float | None:
        """VACUUM ``leaf`` so that the next batches reuse the space of the rows updated;
        its seconds, or None when its lock was not to be had (skipped)."""
        import psycopg

        interrupts.check()
        t0 = time.perf_counter()
        try:
            self.conn.execute(_VACUUM + leaf)
        except psycopg.errors.LockNotAvailable as e:
            log.info("backfill: VACUUM %s skipped: %s", leaf, str(e).strip().splitlines()[0])
            return None
        return time.perf_counter() - t0

    def _retrying(self, sql: str) -> tuple[int, float]:
        import psycopg

        for attempt in range(self.tries):
            interrupts.check()
            t0 = time.perf_counter()
            try:
                n = self.conn.execute(sql).rowcount
                return max(n, 0), time.perf_counter() - t0
            except psycopg.Error as e:
                if type(e).__name__ not in _RETRYABLE or attempt == self.tries - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def catch_up(self, passes: int = 5) -> int:
        """Update the rows still to fill (written by the app into blocks already passed),
        until a pass finds none; returns how many it updated."""
        fixed = 0
        for _ in range(passes):
            n = sum(
                self._retrying(f"UPDATE ONLY {leaf} SET {self.set_clause} WHERE {self.todo}")[0]
                for leaf, _ in self.leaves()
            )
            fixed += n
            if n == 0:
                break
        self.metrics["backfill_caught_up_rows"] = fixed
        return fixed

    def left(self) -> int:
        """Rows still to fill, counted in one snapshot (zero once ``catch_up`` is done:
        every row written since the trigger exists was filled by it)."""
        return self.conn.execute(f"SELECT count(*) FROM {self.table} WHERE {self.todo}").fetchone()[
            0
        ]

    def check(self) -> None:
        left = self.left()
        if left:
            raise MigrationError(
                f"{left} row(s) of {self.table} still match {self.todo} after the backfill "
                "(is a trigger disabled, or session_replication_role = replica?)"
            )
