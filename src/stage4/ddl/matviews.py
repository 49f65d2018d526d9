"""Materialized views with their indexes, as data: create, drop, refresh, grants, refresh job.

Every view has a unique index so ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` works
(readers are never blocked by a refresh). A materialized view has no row level
security: whoever may SELECT it sees every row it holds, whatever the policies of
the tables it was built from. ``grants_sql`` is the one grant rule every view follows:
the source table's SELECT grants only while that table has row level security off
(nobody gains access to a row they could not already SELECT), its owner only otherwise;
callers that serve RLS-protected data join back to the table so its policies filter
the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stage4.ddl import literal
from stage4.ddl.cron import Job


@dataclass(frozen=True)
class MatView:
    """One materialized view: ``query``, its unique index, ``indexes`` (name -> ``USING … (…)``
    tail), a comment, and ``serial`` for a view read by short queries only.

    ``serial`` sets ``parallel_workers = 0`` (a storage parameter of this view only): the
    queries such a view serves read a few thousand rows, and PostGIS's function costs make
    the planner hand those to parallel workers, each of which must start and load PostGIS
    first, which on a small machine costs more than the short query itself
    (``benchmarks/probes/parallel_startup.py`` measures it).
    """

    schema: str
    name: str
    query: str
    unique: tuple[str, str]  # (index name, column list) — needed by REFRESH CONCURRENTLY
    indexes: dict[str, str] = field(default_factory=dict)
    comment: str | None = None
    serial: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def qualified_index(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def create_sql(self) -> list[str]:
        """CREATE … WITH DATA, the unique index, the other indexes, the comment.

        No IF NOT EXISTS: a view of that name that the revision did not build is an error,
        never adopted."""
        storage = " WITH (parallel_workers = 0)" if self.serial else ""
        out = [
            f"CREATE MATERIALIZED VIEW {self.qualified}{storage} AS\n"
            f"{self.query.strip()}\nWITH DATA",
            f"CREATE UNIQUE INDEX {self.unique[0]} ON {self.qualified} ({self.unique[1]})",
        ]
        out += [f"CREATE INDEX {n} ON {self.qualified} {tail}" for n, tail in self.indexes.items()]
        if self.comment is not None:
            out.append(f"COMMENT ON MATERIALIZED VIEW {self.qualified} IS {literal(self.comment)}")
        return out

    def drop_sql(self) -> str:
        """Drops the view and its indexes (never CASCADE: a dependent object is an error)."""
        return f"DROP MATERIALIZED VIEW IF EXISTS {self.qualified}"

    def refresh_sql(self, concurrently: bool = True) -> str:
        how = " CONCURRENTLY" if concurrently else ""
        return f"REFRESH MATERIALIZED VIEW{how} {self.qualified}"

    def exists_sql(self) -> str:
        return f"SELECT to_regclass('{self.qualified}') IS NOT NULL"

    def job(self, schedule: str) -> Job:
        """The pg_cron job refreshing the view CONCURRENTLY (readers are never blocked)."""
        return Job(f"stage4_refresh_{self.name}", schedule, self.refresh_sql())


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
    sql = f"SELECT relrowsecurity FROM pg_class WHERE oid = '{table}'::regclass"
    return bool(bind.exec_driver_sql(sql).scalar())
