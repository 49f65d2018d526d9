"""Materialized views with their indexes, as data: create, drop, refresh, grants, refresh job.

Every view has a unique index so ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` works
(readers are never blocked by a refresh). A materialized view has no row level
security: whoever may SELECT it sees every row it holds, whatever the policies of
the tables it was built from. ``grants_sql`` is the one grant rule every view follows:
while the source table has row level security off, a role may read a column of the
view iff it may read every table column that column reveals (table-level and
column-level grants alike: nobody reads through the view what the table hides from
them, and an RPC re-pointed at the view keeps working for whoever could call it);
its owner only otherwise. Callers that serve RLS-protected data join back to the
table so its policies filter the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stage4.ddl import literal
from stage4.ddl.cron import Job


@dataclass(frozen=True)
class MatView:
    """One materialized view: ``query``, its unique index, ``indexes`` (name -> ``USING … (…)``
    tail), a comment, ``serial`` for a view read by short queries only, and ``reveals``.

    ``reveals`` maps each column of the view to the source table's columns it reveals:
    those it is computed from and those that choose, group or order the rows
    (``lineage`` builds it). ``grants_sql`` grants a column to a role that may read all
    of them; without it, every column reveals every table column the query names.

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
    reveals: dict[str, tuple[str, ...]] | None = None

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

    def grants_sql(self, source_table: str) -> str:
        """``grants_sql`` for this view, column by column as ``reveals`` says."""
        return grants_sql(source_table, self.qualified, self.reveals)

    def job(self, schedule: str) -> Job:
        """The pg_cron job refreshing the view CONCURRENTLY (readers are never blocked)."""
        return Job(f"stage4_refresh_{self.name}", schedule, self.refresh_sql())


def lineage(
    columns: dict[str, tuple[str, ...]], rows: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    """``MatView.reveals`` from each column's sources and the columns every row depends on
    (WHERE, GROUP BY, ORDER BY: which rows exist, and in what order, says something of them)."""
    return {c: tuple(sorted({*src, *rows})) for c, src in columns.items()}


_WHO = "CASE WHEN {g} = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid({g})) END"


def _reveals_sql(view: str, reveals: dict[str, tuple[str, ...]] | None) -> str:
    """(col, needs): each view column and the table columns it reveals, as rows."""
    if reveals is None:  # every table column the view's query names (its rule's dependencies)
        return f"""SELECT at.attname::text, ARRAY(
               SELECT DISTINCT t.attname::text FROM pg_rewrite rw
               JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
               JOIN pg_attribute t ON t.attrelid = d.refobjid AND t.attnum = d.refobjsubid
               WHERE rw.ev_class = '{view}'::regclass AND d.refobjid = %(src)s)
             FROM pg_attribute at
             WHERE at.attrelid = '{view}'::regclass AND at.attnum > 0 AND NOT at.attisdropped"""
    rows = ", ".join(
        f"({literal(c)}, ARRAY[{', '.join(literal(n) for n in needs)}]::text[])"
        for c, needs in reveals.items()
    )
    return f"VALUES {rows}"


def grants_sql(
    source_table: str, view: str, reveals: dict[str, tuple[str, ...]] | None = None
) -> str:
    """The one grant rule for a materialized view built from ``source_table`` (opt3, opt5).

    First everything the view received at creation is revoked from everyone but its owner
    (Supabase's default privileges grant ALL on every new relation in ``public`` to anon,
    authenticated and service_role). Then, only while the table has row level security
    disabled:

    * a role with table-level SELECT on the table gets SELECT on the view (grant option
      included): a role that reads every row of the table reads nothing new in a copy;
    * a role with column-level SELECT only gets SELECT on each view column whose
      revealed table columns (``reveals``; ``MatView.reveals``) it may all read, by its
      own grants or PUBLIC's (with grant option where its own carry it for all of them):
      what ``SELECT those columns FROM table`` would give it, and an RPC that read the
      table's columns reads the view's.

    With RLS on, the view stays its owner's: it would show every row to whoever may
    SELECT it. One DO block, so offline ``--sql`` renders the same statement.
    """
    who = _WHO.format(g="a.grantee")
    owner = f"(SELECT relowner FROM pg_class WHERE oid = '{view}'::regclass)"
    src = f"'{source_table}'::regclass"
    reveals_sql = _reveals_sql(view, reveals).replace("%(src)s", src)
    return f"""DO $acl$
DECLARE r record;
BEGIN
  FOR r IN SELECT DISTINCT {who} AS who FROM pg_class c,
             aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
           WHERE c.oid = '{view}'::regclass AND a.grantee <> c.relowner LOOP
    EXECUTE format('REVOKE ALL ON {view} FROM %s', r.who);
  END LOOP;
  IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = {src}) THEN
    FOR r IN SELECT {who} AS who, a.is_grantable FROM pg_class c,
               aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
             WHERE c.oid = {src} AND a.privilege_type = 'SELECT' AND a.grantee <> {owner}
    LOOP
      EXECUTE format('GRANT SELECT ON {view} TO %s%s', r.who,
                     CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    FOR r IN
      WITH reveals(col, needs) AS ({reveals_sql}),
      col_acl AS (
        SELECT a.grantee, at.attname::text AS col, a.is_grantable
        FROM pg_attribute at, aclexplode(at.attacl) a
        WHERE at.attrelid = {src} AND at.attnum > 0 AND NOT at.attisdropped
          AND a.privilege_type = 'SELECT'),
      whole AS (
        SELECT a.grantee FROM pg_class c,
               aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
        WHERE c.oid = {src} AND a.privilege_type = 'SELECT'),
      grantees AS (
        SELECT DISTINCT grantee FROM col_acl
        WHERE grantee <> {owner} AND grantee NOT IN (SELECT grantee FROM whole)),
      granted AS (
        SELECT g.grantee, v.col,
               v.needs <@ ARRAY(SELECT k.col FROM col_acl k
                                WHERE k.grantee = g.grantee AND k.is_grantable) AS grantable
        FROM grantees g CROSS JOIN reveals v
        WHERE v.needs <@ ARRAY(SELECT k.col FROM col_acl k WHERE k.grantee IN (g.grantee, 0)))
      SELECT {_WHO.format(g="grantee")} AS who, grantable,
             string_agg(quote_ident(col), ', ' ORDER BY col) AS cols
      FROM granted GROUP BY grantee, grantable ORDER BY 1, 2
    LOOP
      EXECUTE format('GRANT SELECT (%s) ON {view} TO %s%s', r.cols, r.who,
                     CASE WHEN r.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
  END IF;
END
$acl$"""


def rls_enabled(bind, table: str) -> bool:
    """Has ``table`` row level security enabled (SQLAlchemy connection)?"""
    sql = f"SELECT relrowsecurity FROM pg_class WHERE oid = '{table}'::regclass"
    return bool(bind.exec_driver_sql(sql).scalar())


# The views live in stage4's own schema, closed to API roles (no USAGE): a role the grant
# rule lets read a view needs USAGE on that schema too, or a SECURITY INVOKER RPC reading
# the view fails for it. What this grants is kept in a view's comment, for the downgrade.
USAGE_MEMO = "stage4: USAGE on this schema granted to the readers of its views: "


def usage_sql(views: list[MatView], memo_on: MatView, also: tuple[str, ...] = ()) -> str:
    """USAGE on the views' schema for each role (or PUBLIC) that ``grants_sql`` let read one
    of them or of the relations ``also`` names (table or column grant) and that lacks it;
    the roles granted are named in ``memo_on``'s comment. Nothing else there is readable
    by them: every other object of the schema is its owner's only. One DO block, so
    offline ``--sql`` renders it too."""
    schema = views[0].schema
    oids = ", ".join(f"'{name}'::regclass" for name in (*(v.qualified for v in views), *also))
    return f"""DO $use$
DECLARE
  r record;
  who text;
  granted text[] := '{{}}';
BEGIN
  FOR r IN SELECT a.grantee FROM pg_class c, aclexplode(c.relacl) a
           WHERE c.oid IN ({oids}) AND a.grantee <> c.relowner AND a.privilege_type = 'SELECT'
           UNION
           SELECT a.grantee FROM pg_attribute at JOIN pg_class c ON c.oid = at.attrelid,
                  aclexplode(at.attacl) a
           WHERE c.oid IN ({oids}) AND a.grantee <> c.relowner AND a.privilege_type = 'SELECT'
           ORDER BY 1
  LOOP
    CONTINUE WHEN EXISTS (
      SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) x
      WHERE n.oid = '{schema}'::regnamespace AND x.grantee = r.grantee
        AND x.privilege_type = 'USAGE');
    who := CASE r.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END;
    EXECUTE format('GRANT USAGE ON SCHEMA {schema} TO %s', who);
    granted := granted || who;
  END LOOP;
  IF cardinality(granted) > 0 THEN
    EXECUTE format('COMMENT ON MATERIALIZED VIEW {memo_on.qualified} IS %L',
                   {literal(USAGE_MEMO)} || array_to_string(granted, ', '));
  END IF;
END
$use$"""


def usage_revoke_sql(memo_on: MatView, schema: str) -> str:
    """Take back the USAGE on ``schema`` that ``usage_sql`` granted (named in ``memo_on``'s
    comment), before the views go; USAGE the roles had before stays."""
    return revoke_usage_sql(memo_on.qualified, USAGE_MEMO, schema)


def revoke_usage_sql(relation: str, memo: str, schema: str) -> str:
    """REVOKE USAGE ON ``schema`` from the roles that ``relation``'s comment names after
    ``memo`` (what a step granted, and only that); nothing when the comment is another's.
    One DO block, so offline ``--sql`` renders it too."""
    memo = literal(memo)
    return f"""DO $use$
DECLARE
  note text := obj_description(to_regclass({literal(relation)}), 'pg_class');
  who text;
BEGIN
  IF note IS NULL OR position({memo} IN note) <> 1 THEN
    RETURN;
  END IF;
  FOREACH who IN ARRAY string_to_array(substr(note, length({memo}) + 1), ', ') LOOP
    EXECUTE format('REVOKE USAGE ON SCHEMA {schema} FROM %s', who);
  END LOOP;
END
$use$"""
