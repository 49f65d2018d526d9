"""Features per month and category (Q8), kept by each write: an aggregate never stale.

A materialized view of these counts is as old as its last refresh; this table is as
current as the table it counts, like an index (SQL Server's "indexed view" in its
first sense). A trigger on the app's table adds one to the (month, category) of each
row inserted, takes one from the row deleted, and both for an update that moves a row
to another month or category, in the writing transaction. A count that falls to zero
is deleted, so the table holds exactly the rows ``GROUP BY`` gives. Rows without a date
are not counted: no year's counts include them.

What a write pays: one upsert on a table of (months x categories) rows. Writers of
the same month and category queue on its row until they commit, as they would on an
indexed view's.

What the API sees: the table lives in stage4's own schema and follows the views' grant
rule (``matviews.grants_sql``: a role reads a column iff it may read every table column
it reveals; its owner only while the table has row level security on). Nothing writes
it but the trigger (``SECURITY DEFINER``, executable by its owner only).

What bypasses row triggers does not reach it (writes under ``session_replication_role
= replica``, a partition dropped, detached or truncated by hand): opt5's promise compares
it with the table's own counts, so ``stage4 drift`` and the gate name it; stepping back to
opt4 and up again recounts.
"""

from __future__ import annotations

from dataclasses import dataclass

from stage4.config import Settings
from stage4.ddl import literal, sync
from stage4.ddl.matviews import grants_sql, lineage


@dataclass(frozen=True)
class Counts:
    """The counts of ``source`` (the app's table), by ``time_column``'s month and category,
    in ``schema``."""

    schema: str
    table: str  # the app's table name: the counts are named after it
    source: str  # the app's table, qualified
    time_column: str

    @property
    def name(self) -> str:
        return f"{self.table}_mensal"

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def key(self) -> str:
        """The unique constraint (and its index) on (mes, categoria)."""
        return f"{self.name}_key"

    @property
    def sync_function(self) -> str:
        """The trigger function's identity."""
        return f"{self.schema}.{self.name}_sync()"

    @property
    def trigger(self) -> str:
        return f"{self.table}_mensal_sync"

    @property
    def reveals(self) -> dict[str, tuple[str, ...]]:
        """What each column says of the table (``matviews.lineage``): a row exists for a
        month and category that hold features."""
        t = self.time_column
        return lineage({"mes": (t,), "categoria": ("categoria",), "total": ()}, (t, "categoria"))

    def _grouped(self) -> str:
        t = self.time_column
        return (
            f"SELECT date_trunc('month', g.{t})::date AS mes, g.categoria, count(*) AS total "
            f"FROM {self.source} g WHERE g.{t} IS NOT NULL GROUP BY 1, 2"
        )

    def _sync_sql(self) -> str:
        k, d = self.qualified, self.time_column
        match = "mes = m AND categoria IS NOT DISTINCT FROM c"
        return f"""CREATE FUNCTION {self.sync_function} RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  m date;
  c text;
  n bigint;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    TRUNCATE {k};
    RETURN NULL;
  END IF;
  IF TG_OP = 'UPDATE' AND date_trunc('month', OLD.{d}) IS NOT DISTINCT FROM
     date_trunc('month', NEW.{d}) AND OLD.categoria IS NOT DISTINCT FROM NEW.categoria THEN
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' AND OLD.{d} IS NOT NULL THEN
    m := date_trunc('month', OLD.{d})::date;
    c := OLD.categoria;
    UPDATE {k} SET total = total - 1 WHERE {match} RETURNING total INTO n;
    IF n = 0 THEN
      DELETE FROM {k} WHERE {match} AND total = 0;
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' AND NEW.{d} IS NOT NULL THEN
    INSERT INTO {k} AS x (mes, categoria, total)
    VALUES (date_trunc('month', NEW.{d})::date, NEW.categoria, 1)
    ON CONFLICT (mes, categoria) DO UPDATE SET total = x.total + 1;
  END IF;
  RETURN NULL;
END
$fn$"""

    def build_sql(self) -> list[str]:
        """The table, its trigger function and triggers, then the counts, the grants and the
        statistics. ``CREATE TRIGGER`` takes SHARE ROW EXCLUSIVE on the app's table until
        the step commits: no write lands between the count and the trigger (writers wait for
        the count, about half a second at 1M features). Counted with row level
        security off: an error, never a partial count."""
        k, d = self.qualified, self.time_column
        return [
            f"CREATE TABLE {k} (mes date NOT NULL, categoria text, total bigint NOT NULL, "
            f"CONSTRAINT {self.key} UNIQUE NULLS NOT DISTINCT (mes, categoria))",
            self._sync_sql(),
            *sync.triggers_sql(self.source, self.trigger, self.sync_function, f"{d}, categoria"),
            self.rebuild_sql(),
            grants_sql(self.source, k, self.reveals),
            f"ANALYZE {k}",
        ]

    def rebuild_sql(self) -> str:
        """Count the table afresh (row level security off: every row, or an error)."""
        fill = f"INSERT INTO {self.qualified} (mes, categoria, total) {self._grouped()}"
        return f"""DO $count$
DECLARE prior text := current_setting('row_security');
BEGIN
  PERFORM set_config('row_security', 'off', true);
  DELETE FROM {self.qualified};
  EXECUTE {literal(fill)};
  PERFORM set_config('row_security', prior, true);
END
$count$"""

    def drop_sql(self) -> list[str]:
        """Its triggers, the table and its function."""
        return sync.drop_sql(self.source, self.trigger, self.qualified, self.sync_function)

    def kept_sql(self) -> str:
        """SQL boolean: the trigger is there and enabled, and the table holds exactly the
        counts ``GROUP BY`` gives (read by the caller: its own rows under RLS; the table
        aggregated once)."""
        return (
            f"EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = {literal(self.source)}::regclass "
            f"AND tgname = {literal(self.trigger)} AND tgenabled <> 'D') "
            f"AND (WITH t AS MATERIALIZED ({self._grouped()}), "
            f"k AS (SELECT mes, categoria, total FROM {self.qualified}) "
            "SELECT NOT EXISTS (TABLE k EXCEPT TABLE t) AND NOT EXISTS (TABLE t EXCEPT TABLE k))"
        )

    def body(self) -> str:
        """Q8's RPC body on the counts: the baseline's columns, rows and order."""
        return f"""
SELECT m.mes, m.categoria, m.total
FROM {self.qualified} m
WHERE m.mes >= make_date(ano, 1, 1) AND m.mes < make_date(ano + 1, 1, 1)
ORDER BY 1, 2"""


def of(s: Settings, schema: str | None = None) -> Counts:
    """The app table's monthly counts, in stage4's own schema (or ``schema``)."""
    return Counts(schema or s.own_schema, s.table, s.qualified_table, s.time_column)
