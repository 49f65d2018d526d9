"""Materialized views with their indexes, as data: create, drop, refresh, grants (opt3, opt5).

Every view has a unique index so ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` works
(readers are never blocked by a refresh). A materialized view has no row level
security: whoever may SELECT it sees every row it holds, whatever the policies of
the tables it was built from. ``copy_select_grants_sql`` only copies the
SELECT grants a source table already has (nobody gains access to a row they could
not already SELECT without policies), and callers that serve RLS-protected data must
join back to the table so its policies filter the result (see opt3).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MatView:
    """One materialized view: ``query`` plus ``indexes`` (name -> ``USING … (…)`` tail)."""

    schema: str
    name: str
    query: str
    unique: tuple[str, str]  # (index name, column list) — needed by REFRESH CONCURRENTLY
    indexes: dict[str, str] = field(default_factory=dict)
    comment: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def create_sql(self) -> list[str]:
        """CREATE … WITH DATA, the unique index, the other indexes, the comment."""
        out = [
            f"CREATE MATERIALIZED VIEW {self.qualified} AS\n{self.query.strip()}\nWITH DATA",
            f"CREATE UNIQUE INDEX {self.unique[0]} ON {self.qualified} ({self.unique[1]})",
        ]
        out += [f"CREATE INDEX {n} ON {self.qualified} {tail}" for n, tail in self.indexes.items()]
        if self.comment is not None:
            out.append(f"COMMENT ON MATERIALIZED VIEW {self.qualified} IS {quote(self.comment)}")
        return out

    def drop_sql(self) -> str:
        """Drops the view and its indexes (never CASCADE: a dependent object is an error)."""
        return f"DROP MATERIALIZED VIEW IF EXISTS {self.qualified}"

    def refresh_sql(self, concurrently: bool = True) -> str:
        how = " CONCURRENTLY" if concurrently else ""
        return f"REFRESH MATERIALIZED VIEW{how} {self.qualified}"

    def exists_sql(self) -> str:
        return f"SELECT to_regclass('{self.qualified}') IS NOT NULL"


def quote(text: str) -> str:
    """A SQL string literal (dollar quoting would break on ``$`` in function bodies)."""
    return "'" + text.replace("'", "''") + "'"


def grants_sql(source_table: str, view: str) -> str:
    """The one grant rule for a materialized view built from ``source_table`` (opt3, opt5).

    First everything the view received at creation is revoked from everyone but its owner
    (Supabase's default privileges grant ALL on every new relation in ``public`` to anon,
    authenticated and service_role). Then, only while the table has row level security
    disabled, the view gets the table's table-level SELECT grants (grant option included):
    a role that reads every row of the table reads nothing new in a copy of it. With RLS
    on, the view stays its owner's: it would show every row to whoever may SELECT it.
    One DO block, so offline ``--sql`` renders the same statement.
    """
    who = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END"
    return f"""DO $acl$
DECLARE r record;
BEGIN
  FOR r IN SELECT DISTINCT {who} AS who FROM pg_class c,
             aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
           WHERE c.oid = '{view}'::regclass AND a.grantee <> c.relowner LOOP
    EXECUTE format('REVOKE ALL ON {view} FROM %s', r.who);
  END LOOP;
  IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = '{source_table}'::regclass) THEN
    FOR r IN SELECT {who} AS who, a.is_grantable FROM pg_class c,
               aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
             WHERE c.oid = '{source_table}'::regclass AND a.privilege_type = 'SELECT'
               AND a.grantee <> (SELECT relowner FROM pg_class WHERE oid = '{view}'::regclass)
    LOOP
      EXECUTE format('GRANT SELECT ON {view} TO %s%s', r.who,
                     CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
  END IF;
END
$acl$"""


def rls_enabled(bind, table: str) -> bool:
    """Has ``table`` row level security enabled (SQLAlchemy connection)?"""
    return bool(bind.exec_driver_sql(
        f"SELECT relrowsecurity FROM pg_class WHERE oid = '{table}'::regclass"
    ).scalar())  # fmt: skip


def comment_sql(qualified: str) -> str:
    """The comment of a relation (None when absent or the relation is missing)."""
    return (
        f"SELECT obj_description(to_regclass('{qualified}'), 'pg_class') "
        f"WHERE to_regclass('{qualified}') IS NOT NULL"
    )


def refresh(conn, view: MatView, concurrently: bool = True) -> None:
    """Refresh now (psycopg connection; CONCURRENTLY must run outside a transaction block)."""
    conn.execute(view.refresh_sql(concurrently))
