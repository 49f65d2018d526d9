"""An index built while the app writes, on a plain or a partitioned table, and dropped again.

``CREATE INDEX`` holds SHARE on the table for its whole build: every writer waits (seconds
at a million rows). ``CREATE INDEX CONCURRENTLY`` blocks no writer, but PostgreSQL refuses
it on a partitioned table, so there the index is built the documented way: an invalid
index ``ON ONLY`` the parent (catalog only), one index built CONCURRENTLY per partition,
each attached to it; the parent's index turns valid when the last one is attached, and
partitions created later get theirs from it automatically.

Attaching takes ACCESS EXCLUSIVE on the partition's new index, and dropping the index of a
partitioned table (``DROP INDEX CONCURRENTLY`` is refused there) takes it on the table:
both for an instant, but a lock request that waits queues every later query behind it.
So both are requested in short attempts (``short_lock_attempts_sql``), within the
``lock_timeout`` in force: a reader waits one attempt at most.

Every index built here has a comment starting with ``marker``: what ``build`` resumes or
clears after a kill, and how it tells an index of the app that has the same name.
"""

from __future__ import annotations

from dataclasses import dataclass

from stage4.ddl import literal
from stage4.errors import MigrationError

ATTEMPT_MS = 200  # one attempt's wait for a lock
RETRY_FIRST_MS, RETRY_MAX_MS = 50, 1000


def short_lock_attempts_sql(statement: str) -> str:
    """A DO block running ``statement`` in attempts of at most ``ATTEMPT_MS`` lock wait each,
    sleeping in between (50 ms doubling to 1 s, times a random 0.5–1.5), until the
    ``lock_timeout`` in force is spent: then ``lock_not_available``, as one long wait ends.
    Without a lock_timeout it tries until it succeeds."""
    return f"""DO $do$
DECLARE
  saved text := current_setting('lock_timeout');
  budget_ms bigint := (SELECT setting::bigint FROM pg_settings WHERE name = 'lock_timeout');
  deadline timestamptz := CASE WHEN budget_ms > 0
    THEN clock_timestamp() + make_interval(secs => budget_ms / 1000.0) END;
  tries integer := 0;
BEGIN
  LOOP
    PERFORM set_config('lock_timeout', greatest(1, least({ATTEMPT_MS},
      coalesce(ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000), {ATTEMPT_MS})))::integer
      || 'ms', true);
    BEGIN
      EXECUTE {literal(statement)};
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      IF clock_timestamp() >= deadline THEN
        RAISE;
      END IF;
    END;
    tries := tries + 1;
    PERFORM pg_sleep(least(least({RETRY_FIRST_MS} * 2 ^ (tries - 1), {RETRY_MAX_MS}) * (0.5 + random()),
      coalesce(greatest(0, extract(epoch FROM deadline - clock_timestamp()) * 1000), {RETRY_MAX_MS})) / 1000.0);
  END LOOP;
  PERFORM set_config('lock_timeout', saved, true);
END
$do$"""


@dataclass(frozen=True)
class OnlineIndex:
    """Index ``name`` (in the table's schema) on ``table`` (schema-qualified), ``using``
    e.g. ``gin ((expression))``."""

    table: str
    name: str
    using: str
    marker: str

    @property
    def schema(self) -> str:
        return self.table.split(".", 1)[0]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def create_sql(self) -> str:
        """The plain statement (offline ``--sql``, the scale benchmark's reference): it
        recurses to partitions, holding SHARE on each until its transaction ends."""
        return f"CREATE INDEX {self.name} ON {self.table} USING {self.using}"

    def comment_sql(self, qualified: str | None = None) -> str:
        return f"COMMENT ON INDEX {qualified or self.qualified} IS {literal(self.marker)}"

    def drop_sql(self) -> str:
        """Drop it (and with it every partition's index attached to it), in short attempts."""
        return short_lock_attempts_sql(f"DROP INDEX IF EXISTS {self.qualified}")

    def leaf_index(self, schema: str, leaf: str) -> tuple[str, str]:
        """(name, qualified name) of partition ``schema.leaf``'s index: the partition's name,
        then the index's suffix after the table's name, within 63 bytes; an index lives in
        its table's schema."""
        suffix = self.name.removeprefix(self.table.split(".", 1)[1])
        name = leaf[: 63 - len(suffix)] + suffix
        return name, f"{schema}.{name}"

    # ------------------------------------------------------------------ online (autocommit)

    def build(self, conn) -> None:
        """Build it on ``conn`` (psycopg, autocommit) without blocking writers; resumes what
        an earlier build killed outright left (indexes carrying ``marker``)."""
        state = self._state(conn, self.qualified)
        if state is not None and not state.ours:
            raise MigrationError(
                f"{self.table} already has an index named {self.name} that stage4 did not "
                "create: rename or drop it first"
            )
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = %s::regclass", (self.table,)
        ).fetchone()[0]
        if kind != "p":
            if state is not None and state.valid:
                return
            if state is not None:  # an invalid leftover of a killed build
                conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {self.qualified}")
            conn.execute(
                f"CREATE INDEX CONCURRENTLY {self.name} ON {self.table} USING {self.using}"
            )
            conn.execute(self.comment_sql())
            return
        if state is None:
            conn.execute(f"CREATE INDEX {self.name} ON ONLY {self.table} USING {self.using}")
            conn.execute(self.comment_sql())
        # a partition created meanwhile gets its index from the parent's: one more pass
        for _ in range(3):
            todo = self._partitions(conn, unattached=True)
            if not todo:
                break
            for schema, leaf, leaf_kind in todo:
                if leaf_kind != "r":
                    raise MigrationError(
                        f"{schema}.{leaf} is itself partitioned: {self.name} is built on one "
                        "level of partitions only"
                    )
                self._build_leaf(conn, schema, leaf)
        if not self._state(conn, self.qualified).valid:
            raise MigrationError(f"{self.qualified} is not valid: a partition lacks its index")

    def _build_leaf(self, conn, schema: str, leaf: str) -> None:
        name, qualified = self.leaf_index(schema, leaf)
        state = self._state(conn, qualified)
        if state is not None and state.valid and not state.ours:
            raise MigrationError(
                f"{schema}.{leaf} already has an index named {name} that stage4 did not "
                "create: rename or drop it first"
            )
        if state is not None:  # a leftover of a killed build: rebuilt, never trusted
            conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}")
        conn.execute(f"CREATE INDEX CONCURRENTLY {name} ON {schema}.{leaf} USING {self.using}")
        conn.execute(self.comment_sql(qualified))
        conn.execute(
            short_lock_attempts_sql(f"ALTER INDEX {self.qualified} ATTACH PARTITION {qualified}")
        )

    def undo(self, conn) -> None:
        """Drop what ``build`` made (on ``conn``, autocommit): the parent's index with every
        attached one, then the partitions' indexes it built and had not attached (or a
        killed build left invalid); an index of the same name that is not ours stays."""
        state = self._state(conn, self.qualified)
        if state is not None and state.ours:
            conn.execute(self.drop_sql())
        for schema, leaf, _ in self._partitions(conn):
            qualified = self.leaf_index(schema, leaf)[1]
            state = self._state(conn, qualified)
            if state is not None and (state.ours or not state.valid):
                conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}")

    def _state(self, conn, qualified: str) -> _State | None:
        """Validity and ownership (its comment starts with the marker) of an index; None
        when there is none of that name."""
        row = conn.execute(
            "SELECT i.indisvalid, "
            "coalesce(position(%s IN obj_description(i.indexrelid, 'pg_class')) = 1, false) "
            "FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
            (self.marker, qualified),
        ).fetchone()
        return None if row is None else _State(*row)

    def _partitions(self, conn, unattached: bool = False) -> list[tuple[str, str, str]]:
        """The table's partitions (quoted schema, quoted name, relkind); ``unattached``:
        only those without an index attached to the parent's."""
        only = (
            "AND NOT EXISTS (SELECT 1 FROM pg_inherits a "
            "JOIN pg_index x ON x.indexrelid = a.inhrelid "
            "WHERE a.inhparent = to_regclass(%(i)s) AND x.indrelid = c.oid)"
            if unattached
            else ""
        )
        return conn.execute(
            "SELECT quote_ident(n.nspname), quote_ident(c.relname), c.relkind "
            "FROM pg_inherits p JOIN pg_class c ON c.oid = p.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE p.inhparent = %(t)s::regclass {only} ORDER BY 1, 2",
            {"t": self.table, "i": self.qualified},
        ).fetchall()


@dataclass(frozen=True)
class _State:
    valid: bool
    ours: bool  # carries the marker
