"""Rebuild ``geometrias`` as a yearly range-partitioned table and back, in one transaction.

Why one transaction: a kill at any point (SIGKILL, ``pg_terminate_backend``, a lock
timeout) rolls back to exactly the previous state, and re-running starts clean; a
multi-transaction design leaves shadow tables and triggers behind.

Why readers and writers go on: the copy runs in batches while the old table is only
under ACCESS SHARE. Rows written meanwhile are found by their ``xmin`` (not visible in
the snapshot taken before the copy) and re-copied: once without a lock (catch-up),
then under EXCLUSIVE (writers wait, readers do not) for what changed during the
catch-up. Only the final swap (drop, renames, carry-over) takes ACCESS EXCLUSIVE.

The same ``Rebuild`` runs both ways: plain -> partitioned (opt1 upgrade) and
partitioned -> plain (downgrade, copying from the parent whatever partitions exist,
including those opt4 created later).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stage4.config import Settings
from stage4.ddl import privileges
from stage4.errors import MigrationError
from stage4.plumbing import livewrites

NEW_SUFFIX = "__stage4_new"
Progress = Callable[[str, int, int], None]


def partition_name(s: Settings, year: int | None = None) -> str:
    """``{table}_p{year}``, or ``{table}_default`` (names shared with opt4)."""
    return f"{s.table}_p{year}" if year is not None else f"{s.table}_default"


# The statistics target of each partition's geometry column. A read without a date plans
# every partition, and PostGIS estimates a box's selectivity from each one's N-D histogram
# (about target² cells): at the default 100, 10,000 cells fetched and decoded per partition
# made planning a bbox read at 1M features 1.5 ms of its 2.2; at 50, 0.4 ms, the same plans
# but for one partition of one Q1 set (benchmarks/probes/geometry_statistics.py).
GEOMETRY_STATISTICS = 50


def statistics_sql(s: Settings, partition: str) -> str:
    """``partition``'s geometry statistics target (``GEOMETRY_STATISTICS``)."""
    return (
        f"ALTER TABLE {partition} ALTER COLUMN {s.geometry_column} "
        f"SET STATISTICS {GEOMETRY_STATISTICS}"
    )


def partitions_sql(s: Settings, parent: str, schema: str | None = None) -> list[str]:
    """One partition per year first_year..last_year, [year-01-01, year+1-01-01), and a default,
    in ``schema`` (default: stage4's own schema, out of the API's sight: a partition may live
    in another schema than its parent, and reads through the parent check the parent only),
    each with its geometry statistics target (``GEOMETRY_STATISTICS``)."""
    where = schema or s.own_schema
    out = []
    for y in (*range(s.first_year, s.last_year + 1), None):
        part = f"{where}.{partition_name(s, y)}"
        bounds = "DEFAULT" if y is None else f"FOR VALUES FROM ('{y}-01-01') TO ('{y + 1}-01-01')"
        out += [f"CREATE TABLE {part} PARTITION OF {parent} {bounds}", statistics_sql(s, part)]
    return out


def default_partition_sql(table: str) -> str:
    """SQL for the table's default partition (regclass, NULL if none), in whatever schema
    it lives (an earlier stage4 put partitions in the table's own)."""
    return (
        "(SELECT nullif(partdefid, 0)::regclass FROM pg_partitioned_table "
        f"WHERE partrelid = to_regclass('{table}'))"
    )


# ---------------------------------------------------------------- pre-checks


def blockers(bind, s: Settings) -> list[str]:
    """Objects that would stop (or be silently lost by) dropping the table: one name each."""
    rel = s.qualified_table
    rows = bind.exec_driver_sql(
        """
        SELECT DISTINCT 'view ' || r.ev_class::regclass::text
        FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjid = %(t)s::regclass AND r.ev_class <> %(t)s::regclass
        UNION
        SELECT 'foreign key ' || quote_ident(conname) || ' on ' || conrelid::regclass::text
        FROM pg_constraint WHERE contype = 'f' AND confrelid = %(t)s::regclass
          AND conparentid = 0
        UNION
        SELECT 'function ' || d.objid::regprocedure::text FROM pg_depend d
        WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjid = %(t)s::regclass
        UNION
        SELECT 'constraint ' || quote_ident(conname) || ' (' || contype::text || ') on the table'
        FROM pg_constraint WHERE conrelid = %(t)s::regclass AND contype NOT IN ('p', 'c')
          AND conparentid = 0
        UNION
        SELECT 'unique index ' || i.indexrelid::regclass::text FROM pg_index i
        WHERE i.indrelid = %(t)s::regclass AND i.indisunique AND NOT i.indisprimary
        UNION
        SELECT 'storage parameters ' || array_to_string(reloptions, ',') FROM pg_class
        WHERE oid = %(t)s::regclass AND reloptions IS NOT NULL
        UNION
        SELECT 'replica identity using an index' FROM pg_class
        WHERE oid = %(t)s::regclass AND relreplident = 'i'
        UNION
        SELECT 'inheritance from ' || inhparent::regclass::text FROM pg_inherits
        WHERE inhrelid = %(t)s::regclass
        ORDER BY 1""",
        {"t": rel},
    ).all()
    return [r[0] for r in rows]


def refuse_if_blocked(bind, s: Settings, verb: str) -> None:
    found = blockers(bind, s)
    if found:
        raise MigrationError(
            f"refusing to {verb} {s.qualified_table}: {'; '.join(found)} "
            "depend(s) on it or cannot be carried over. Drop them, run the migration, and "
            "recreate them (nothing was changed)"
        )


def relkind(bind, s: Settings) -> str | None:
    return bind.exec_driver_sql(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%(t)s)",
        {"t": s.qualified_table},
    ).scalar()


# ---------------------------------------------------------------- the rebuild


@dataclass
class Rebuild:
    """One table swap: ``partitioned`` says which shape the new table has."""

    s: Settings
    bind: object  # SQLAlchemy Connection, or None offline
    execute: Callable[[str], None]
    partitioned: bool
    progress: Progress | None = None
    batch_rows: int = 50_000
    metrics: dict = field(default_factory=dict)
    # (name, ``USING …`` tail) of indexes the new table gets beside the old table's, and
    # names of the old table's indexes it does not get (what the step adds, what undoes it)
    extra_indexes: tuple[tuple[str, str], ...] = ()
    left_out: tuple[str, ...] = ()
    # run by ``swap`` under its ACCESS EXCLUSIVE lock, before the old table is read and
    # dropped: what depends on the old table and is not carried over (opt1's downgrade
    # drops its nearest-features copy, whose policy names the table)
    before_swap: tuple[str, ...] = ()

    @property
    def old(self) -> str:
        return self.s.qualified_table

    @property
    def new(self) -> str:
        return f"{self.s.schema}.{self.s.table}{NEW_SUFFIX}"

    def _scalar(self, sql: str, **params):
        return self.bind.exec_driver_sql(sql, params).scalar()

    def _tell(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    # -- shape ---------------------------------------------------------------

    def pk(self) -> tuple[str, list[str]]:
        """Name and columns of the old table's primary key (offline: the contract's)."""
        if self.bind is None:
            cols = ["id"] if self.partitioned else ["id", self.s.time_column]
            return f"{self.s.table}_pkey", cols
        row = self.bind.exec_driver_sql(
            """SELECT conname, ARRAY(SELECT quote_ident(a.attname) FROM unnest(conkey)
                      WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = conrelid
                      AND a.attnum = k.n ORDER BY k.o)
               FROM pg_constraint WHERE conrelid = %(t)s::regclass AND contype = 'p'""",
            {"t": self.old},
        ).first()
        if row is None:
            raise MigrationError(f"{self.old} has no primary key: add one before opt1")
        return row[0], list(row[1])

    def indexes(self) -> list[tuple[str, str]]:
        """(name, ``USING ...`` tail) of the old table's non-PK indexes, kept by name."""
        if self.bind is None:
            from stage4.ddl.table import baseline_indexes, geometrias_table

            out = []
            for ix in baseline_indexes(self.s, geometrias_table(self.s)):
                col = next(iter(ix.columns)).name
                method = ix.dialect_options["postgresql"]["using"] or "btree"
                out.append((ix.name, f"USING {method} ({col})"))
            return out
        rows = self.bind.exec_driver_sql(
            """SELECT quote_ident(c.relname), pg_get_indexdef(i.indexrelid)
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE i.indrelid = %(t)s::regclass AND NOT i.indisprimary ORDER BY c.relname""",
            {"t": self.old},
        ).all()
        return [(name, re.sub(r"^.*? ON (ONLY )?\S+ (USING .*)$", r"\2", d)) for name, d in rows]

    def columns(self) -> list[str]:
        """Stored, non-generated columns in table order (what the copy moves)."""
        if self.bind is None:
            from stage4.ddl.table import geometrias_table

            return [c.name for c in geometrias_table(self.s).columns]
        return list(
            self.bind.exec_driver_sql(
                """SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %(t)s::regclass
                   AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum""",
                {"t": self.old},
            ).scalars()
        )

    def sequence(self) -> str | None:
        if self.bind is None:
            return f"{self.s.schema}.{self.s.table}_id_seq"
        return self._scalar("SELECT pg_get_serial_sequence(%(t)s, 'id')", t=self.old)

    # -- steps ---------------------------------------------------------------

    def create(self) -> None:
        """The new table, same columns/defaults/identity/storage; partitions when partitioned."""
        pk_name, pk_cols = self.pk()
        if self.partitioned and self.s.time_column not in pk_cols:
            pk_cols = [*pk_cols, self.s.time_column]
        if not self.partitioned:
            pk_cols = [c for c in pk_cols if c != self.s.time_column]
        self.pk_name = pk_name
        like = (
            "INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED INCLUDING STORAGE "
            "INCLUDING COMPRESSION INCLUDING CONSTRAINTS"
        )
        tail = f" PARTITION BY RANGE ({self.s.time_column})" if self.partitioned else ""
        self.pk_cols = pk_cols
        self.execute(f"CREATE TABLE {self.new} (LIKE {self.old} {like}){tail}")
        if self.partitioned:
            for sql in partitions_sql(self.s, self.new):
                self.execute(sql)

    def copy(self) -> None:
        """In batches (``batches``) under ACCESS SHARE on the old table; progress after each."""
        cols = ", ".join(self.columns())
        insert = (
            f"INSERT INTO {self.new} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {self.old}"
        )
        if self.bind is None:
            self.execute(
                "-- online: copied in batches (quarters up, id ranges down), then the rows\n"
                "-- written meanwhile (xmin not visible in the snapshot taken before the copy)\n"
                "-- are re-copied\n" + insert
            )
            return
        # Our xid first: age(xmin) below is measured from it for the whole transaction.
        self.xid = int(self._scalar("SELECT pg_current_xact_id()::text"))
        self.snap0 = self._scalar("SELECT pg_current_snapshot()::text")
        batches, total = self.batches()
        done = 0
        self._tell("copy", 0, total)
        for where, params in batches:
            n = self.bind.exec_driver_sql(f"{insert} WHERE {where}", params).rowcount
            done += max(n, 0)
            self._tell("copy", min(done, total), total)

    def batches(self) -> tuple[list[tuple[str, dict]], int]:
        """(WHERE … [ORDER BY …], params) of each copy batch, and the row count.

        Downgrade: id ranges of ``batch_rows``. Upgrade: one batch per calendar quarter of
        the time column, written in the geometry's b-tree order (a Hilbert curve in
        PostGIS 3): a free CLUSTER, since every row is rewritten anyway. Each partition
        then holds 4 runs of spatially sorted rows (batches by id would give one run per
        batch), so a quarter + bbox query (Q5) reads one run, a few times fewer heap pages
        than in id order, and a bbox-only query 4 runs.
        A quarter over ``batch_rows`` is split into id ranges (each still sorted).

        The quarters of a year are written in the order 2, 4, 1, 3 so that the time
        column's correlation statistic stays near 0 (0.006 instead of 0.94): in calendar
        order the planner reads Q5 by a date index scan that filters every row of the
        quarter, slower than the BitmapAnd of the two indexes.
        Without an index on the time column each quarter would be a full scan: id ranges.
        """
        if self.partitioned and self._time_indexed():
            return self._quarter_batches()
        lo, hi, total = self.bind.exec_driver_sql(
            f"SELECT min(id), max(id), count(*) FROM {self.old}"
        ).first()
        if lo is None:
            return [], 0
        step = self.batch_rows
        ranges = [
            ("id >= %(a)s AND id < %(b)s", {"a": a, "b": a + step}) for a in range(lo, hi + 1, step)
        ]
        return ranges, total

    def _time_indexed(self) -> bool:
        sql = """SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a
                   ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = %(t)s::regclass AND a.attname = %(c)s)"""
        return bool(self._scalar(sql, t=self.old, c=self.s.time_column))

    def _quarter_batches(self) -> tuple[list[tuple[str, dict]], int]:
        d, g = self.s.time_column, self.s.geometry_column
        typ = self._scalar(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %(t)s::regclass AND attname = %(c)s",
            t=self.old,
            c=d,
        )
        rows = self.bind.exec_driver_sql(
            f"SELECT date_trunc('quarter', {d})::{typ}, "
            f"(date_trunc('quarter', {d}) + interval '3 months')::{typ}, "
            f"min(id), max(id), count(*) FROM {self.old} GROUP BY 1, 2"
        ).all()
        order = {1: 2, 4: 0, 7: 3, 10: 1}  # months starting quarters 2, 4, 1, 3 come first
        rows.sort(key=lambda r: (r[0] is None, r[0] and (r[0].year, order[r[0].month])))
        out = []
        for q0, q1, lo, hi, n in rows:
            when = (
                (f"{d} >= %(q0)s AND {d} < %(q1)s", {"q0": q0, "q1": q1})
                if q0 is not None
                else (f"{d} IS NULL", {})
            )
            parts = -(-n // self.batch_rows)
            step = -(-(hi - lo + 1) // parts)
            for a in range(lo, hi + 1, step):
                ids = "" if parts == 1 else f" AND id >= {a} AND id < {a + step}"
                out.append((f"{when[0]}{ids} ORDER BY {g}", when[1]))
        return out, sum(r[4] for r in rows)

    def build_indexes(self) -> None:
        """The primary key and the old table's indexes (temporary names), after the copy."""
        # The primary key too is built after the copy (one sort instead of a b-tree
        # insert per row: the copy ran ~2x the bare INSERT…SELECT with it in place).
        self.execute(
            f"ALTER TABLE {self.new} ADD CONSTRAINT {self.s.table}{NEW_SUFFIX}_pkey "
            f"PRIMARY KEY ({', '.join(self.pk_cols)})"
        )
        self.index_names = []
        kept = [(n, tail) for n, tail in self.indexes() if n not in self.left_out]
        for name, tail in [*kept, *self.extra_indexes]:
            temp = _temp_index_name(name)
            self.index_names.append((temp, name))
            self.execute(f"CREATE INDEX {temp} ON {self.new} {tail}")

    def _delta(self, snapshot: str, deletions: bool, keep: bool = False) -> tuple[int, int]:
        """Re-copy rows changed since ``snapshot``; drop copied rows deleted since.

        (rows inserted, rows deleted) in the copy; with ``keep`` the changed rows' ids stay
        in ``stage4_delta`` (until commit) for ``check_delta``."""
        cols = ", ".join(self.columns())
        changed = (
            f"NOT pg_visible_in_snapshot(({self.xid} - age(xmin)::bigint)::text::xid8, "
            f"'{snapshot}'::pg_snapshot)"
        )
        b = self.bind
        b.exec_driver_sql(
            f"CREATE TEMP TABLE stage4_delta ON COMMIT DROP AS SELECT {cols} FROM {self.old} "
            f"WHERE {changed}"
        )
        # Its size, for the planner: a few changed rows are then looked up by id in the copy
        # instead of joined with a scan of it (under the lock, writers wait for this).
        b.exec_driver_sql("ANALYZE stage4_delta")
        gone = b.exec_driver_sql(
            f"DELETE FROM {self.new} n USING stage4_delta d WHERE n.id = d.id"
        ).rowcount
        n = b.exec_driver_sql(
            f"INSERT INTO {self.new} ({cols}) OVERRIDING SYSTEM VALUE "
            f"SELECT {cols} FROM stage4_delta"
        ).rowcount
        if not keep:
            b.exec_driver_sql("DROP TABLE stage4_delta")
        if deletions:
            gone += b.exec_driver_sql(
                f"DELETE FROM {self.new} n WHERE NOT EXISTS "
                f"(SELECT 1 FROM {self.old} o WHERE o.id = n.id)"
            ).rowcount
        return n, gone

    def catch_up(self) -> None:
        """Writes during the copy, re-copied without blocking anyone; then block writers.

        The writer block starts at ``LOCK ... IN EXCLUSIVE MODE`` (writers queue behind
        it, readers do not) and lasts until commit.

        "Every row kept" is checked exactly, in two parts so that writers wait only for
        the small one: before the lock, every row of the source not written since
        ``snap1`` is in the copy (and identical, if written since the copy began); under
        the lock, the rows written since ``snap1`` (the ones re-copied there) are compared
        by id, PostgreSQL's own count of this transaction's writes to the copy shows it
        changed by nothing but those re-copies and the removal of rows deleted meanwhile,
        and both tables have as many rows. Any doubt runs the full comparison, which
        names the ids.

        Under the lock the work follows the rows written, not the table: one pass over the
        source for the rows written since ``snap1`` and one count of it; the copy's count
        follows from its count before the lock and this transaction's writes to it; the
        changed rows are looked up by id. Only rows deleted meanwhile cost one anti-join
        of both tables (nothing else names a deleted row).
        """
        if self.bind is None:
            self.execute(f"LOCK TABLE {self.old} IN EXCLUSIVE MODE")
            return
        cols = self.columns()
        snap1 = self._scalar("SELECT pg_current_snapshot()::text")
        n, _ = self._delta(self.snap0, deletions=True)
        livewrites.check_copy(
            self.bind, self.old, self.new, cols, self.snap0, self.xid, stable_since=snap1
        )
        # The copy's row count, taken here (a scan writers need not wait for): under the
        # lock it follows from PostgreSQL's count of this transaction's writes to the copy.
        copied = self._scalar(f"SELECT count(*) FROM {self.new}")
        before = livewrites.copy_writes(self.bind, self.new)
        self._tell("catch-up", n, n)
        self.t_writers = time.perf_counter()
        self.execute(f"LOCK TABLE {self.old} IN EXCLUSIVE MODE")
        # Under the lock: one pass over the source for the rows written since snap1, one
        # count of it; the rest is proportional to those rows.
        m, gone = self._delta(snap1, deletions=False, keep=True)
        n += m
        want = self._scalar(f"SELECT count(*) FROM {self.old}")
        have = copied + m - gone
        extra = have - want
        if extra > 0:  # rows deleted during the catch-up: only then pay for the anti-join
            d = self.bind.exec_driver_sql(
                f"DELETE FROM {self.new} n WHERE NOT EXISTS "
                f"(SELECT 1 FROM {self.old} o WHERE o.id = n.id)"
            ).rowcount
            gone, have = gone + d, have - d
        expected = (before[0] + m, before[1], before[2] + gone)
        wrong = livewrites.check_delta(self.bind, self.old, self.new, cols, "stage4_delta")
        if have != want or wrong or livewrites.copy_writes(self.bind, self.new) != expected:
            # the full comparison names the ids; a doubt it cannot explain still rolls back
            livewrites.check_copy(self.bind, self.old, self.new, cols, None, self.xid)
            raise MigrationError(
                f"copy of {self.old} has {have} rows, the table {want}, and it changed "
                "between the two parts of the check: rolled back"
            )
        self.bind.exec_driver_sql("DROP TABLE stage4_delta")
        self.metrics["rows_checked"] = want
        self.metrics["rows_written_meanwhile"] = n + max(extra or 0, 0)  # by the app, re-copied
        self._tell("catch-up", want, want)

    def swap(self) -> None:
        """ACCESS EXCLUSIVE (readers wait from here), then drop old, rename, carry over."""
        offline = self.bind is None
        t_readers = time.perf_counter()
        self.execute(f"LOCK TABLE {self.old} IN ACCESS EXCLUSIVE MODE")
        for sql in self.before_swap:
            self.execute(sql)
        seq = self.sequence()
        new_seq = f"{self.s.schema}.{self.s.table}{NEW_SUFFIX}_id_seq"
        self.execute(f"SELECT setval('{new_seq}', last_value, is_called) FROM {seq}")
        carry = None if offline else privileges.capture(self.bind, self.old, seq)
        if carry is not None:  # an index left out takes its comment with it
            carry.comments = [c for c in carry.comments
                              if not (c[0] == "INDEX" and c[1] in self.left_out)]  # fmt: skip
        pubs = [] if offline else privileges.publications_of(self.bind, self.old)
        self.execute(f"DROP TABLE {self.old}")
        self.execute(f"ALTER TABLE {self.new} RENAME TO {self.s.table}")
        self.execute(f"ALTER SEQUENCE {new_seq} RENAME TO {seq.split('.', 1)[1]}")
        self.execute(
            f"ALTER TABLE {self.old} RENAME CONSTRAINT {self.s.table}{NEW_SUFFIX}_pkey "
            f"TO {getattr(self, 'pk_name', self.s.table + '_pkey')}"
        )
        for temp, name in self.index_names:
            self.execute(f"ALTER INDEX {self.s.schema}.{temp} RENAME TO {name}")
        if offline:
            self.execute(privileges.OFFLINE_NOTE)
        else:
            for sql in privileges.replay(carry, self.bind, self.old, seq):
                self.execute(sql)
            for part in self._partitions():
                self.execute(f"ALTER TABLE {part} OWNER TO {carry.owner}")
                if carry.replica_identity == "f":
                    self.execute(f"ALTER TABLE {part} REPLICA IDENTITY FULL")
            self.publications = pubs
        if self.partitioned:  # rows are reached through the parent, where grants and RLS apply
            self.execute(privileges.partitions_owner_only_sql(self.old))
        now = time.perf_counter()
        if not offline:
            self.metrics["writers_blocked_s"] = round(now - self.t_writers, 4)
            self.metrics["readers_blocked_s"] = round(now - t_readers, 4)
        self._tell("swap", 1, 1)

    def _partitions(self) -> list[str]:
        return list(
            self.bind.exec_driver_sql(
                "SELECT inhrelid::regclass::text FROM pg_inherits "
                "WHERE inhparent = %(t)s::regclass ORDER BY 1",
                {"t": self.old},
            ).scalars()
        )


# ---------------------------------------------------------------- publications


def publications_up(r: Rebuild, memo_prefix: str) -> None:
    """Publications of a partitioned table must publish via the root (Supabase realtime
    reads changes as ``public.geometrias``, not its partitions): set it, and remember on
    the default partition's comment (``memo_prefix`` + their names: the step's own memo,
    declared by its unit) which ones were false, for the downgrade."""
    if r.bind is None:
        r.execute(
            "-- online: every publication that publishes the table gets\n"
            "-- publish_via_partition_root = true; the ones that had false are listed in\n"
            f"-- COMMENT ON TABLE {r.s.own_schema}.{partition_name(r.s)} for the downgrade"
        )
        return
    flipped = [name for name, via_root in r.publications if not via_root]
    for sql in privileges.via_root_sql(flipped, True):
        r.execute(sql)
    if flipped:
        memo = (memo_prefix + ", ".join(flipped)).replace("'", "''")
        r.execute(f"COMMENT ON TABLE {r.s.own_schema}.{partition_name(r.s)} IS '{memo}'")


def publications_down(r: Rebuild, memo_prefix: str) -> list[str]:
    """The publications the upgrade flipped (read from its memo, ``publications_up``'s
    ``memo_prefix``, before the partitions go)."""
    if r.bind is None:
        r.execute(
            "-- online: publications listed in the default partition's comment get\n"
            "-- publish_via_partition_root = false again"
        )
        return []
    memo = r.bind.exec_driver_sql(
        f"SELECT obj_description({default_partition_sql(r.old)}, 'pg_class')"
    ).scalar()
    if not memo or not memo.startswith(memo_prefix):
        return []
    return [n.strip() for n in memo[len(memo_prefix) :].split(",") if n.strip()]


def _temp_index_name(name: str) -> str:
    bare = name.strip('"')
    temp = f"{bare[: 63 - len(NEW_SUFFIX)]}{NEW_SUFFIX}"
    return f'"{temp}"' if name.startswith('"') else temp
