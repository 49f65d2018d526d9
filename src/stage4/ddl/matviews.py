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


def copy_select_grants_sql(source_table: str, view: MatView) -> str:
    """GRANT SELECT on ``view`` to every role (or PUBLIC) holding table-level SELECT on
    ``source_table``: one DO block, so offline ``--sql`` renders the same statement."""
    return f"""DO $do$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                  ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee
           FROM pg_class c, aclexplode(c.relacl) a
           WHERE c.oid = '{source_table}'::regclass AND a.privilege_type = 'SELECT'
             AND a.grantee <> c.relowner
  LOOP
    EXECUTE 'GRANT SELECT ON {view.qualified} TO ' || r.grantee;
  END LOOP;
END
$do$"""


def comment_sql(qualified: str) -> str:
    """The comment of a relation (None when absent or the relation is missing)."""
    return (
        f"SELECT obj_description(to_regclass('{qualified}'), 'pg_class') "
        f"WHERE to_regclass('{qualified}') IS NOT NULL"
    )


def refresh(conn, view: MatView, concurrently: bool = True) -> None:
    """Refresh now (psycopg connection; CONCURRENTLY must run outside a transaction block)."""
    conn.execute(view.refresh_sql(concurrently))
