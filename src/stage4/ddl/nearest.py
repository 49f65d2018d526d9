"""One table over every partition for the geo reads without a date (Q6, Q7, Q9), kept by
each write.

A partitioned table has no global index: ``ORDER BY geom <-> point LIMIT k`` merges one
KNN descent per partition, and a read without a date filter pays for every partition
(at 1M features about three times what the plain table took). This is a narrow table,
``{own_schema}.{table}_knn`` (the columns Q6 returns or orders by: id, date, name,
category, geometry; not partitioned), with one GiST, kept
current by a trigger on the app's table in the writing transaction: a row committed is
found by the next read, as with an index.

What the API sees:

* The table lives in stage4's own schema. Row level security is on, with one policy: a
  row is visible exactly when the same row of the app's table is visible to the caller
  (``EXISTS`` on the table, evaluated with the caller's own policies and grants).
* SELECT is granted only to roles that may read each of those columns of the table
  (table or column grants), with USAGE on the schema where they lack it (named in the
  table's comment, taken back on downgrade): the copy reveals nothing they could not read.
* The RPCs read the copy alone: no join back to the partitions, which would cost a probe
  of every partition's key per row. A role that may not read the copy is served the
  baseline query.
* What bypasses row triggers does not reach the copy: writes under
  ``session_replication_role = replica``, and a partition dropped or detached by hand
  (its rows stay in the copy; roles under RLS never see them, the owner's Q6 would).
  ``stage4 drift`` (and the gate after each step) compares the two counts and names it. Delete a year's rows through
  the table before dropping its partition; rows left over are removed by
  ``DELETE FROM stage4.geometrias_knn k WHERE NOT EXISTS (SELECT 1 FROM
  public.geometrias g WHERE g.id = k.id AND g.data_referencia = k.data_referencia)``.

opt1 builds it inside its rebuild, from the new partitioned table before the catch-up
(the catch-up's re-copies reach it through the trigger), so it blocks nobody beyond
what the rebuild does; its policy and grants follow the swap. A failure rolls it back
with everything else. The downgrade drops it in its swap, before the partitioned table.
"""

from __future__ import annotations

from stage4 import queries
from stage4.config import Settings
from stage4.ddl import literal, sync
from stage4.ddl.matviews import revoke_usage_sql

USAGE_MEMO = "stage4: USAGE on this schema granted to the readers of this table: "


def columns(s: Settings) -> tuple[str, ...]:
    """The table's columns the copy holds: Q6's."""
    return ("id", s.time_column, "nome", "categoria", s.geometry_column)


def table(s: Settings) -> str:
    return f"{s.own_schema}.{s.table}_knn"


def index(s: Settings) -> str:
    return f"{s.own_schema}.{s.table}_knn_geom"


def category_index(s: Settings) -> str:
    return f"{s.own_schema}.{s.table}_knn_categoria_{s.geometry_column}"


def indexes(s: Settings) -> list[tuple[str, str]]:
    """(name, ``USING`` tail) of the copy's GiSTs: on the geometry (Q6, Q7), and Q9's on
    (categoria, geom) (btree_gist, which opt1 installs first), a point's polygons of one
    category in one descent. Partial on ``categoria IS NOT NULL``, as on the partitions,
    so that a read by geometry alone keeps the plain GiST."""
    g = s.geometry_column
    return [
        (index(s), f"USING gist ({g})"),
        (category_index(s), f"USING gist (categoria, {g}) WHERE (categoria IS NOT NULL)"),
    ]


def sync_function(s: Settings) -> str:
    """The trigger function's identity."""
    return f"{s.own_schema}.{s.table}_knn_sync()"


def trigger(s: Settings) -> str:
    return f"{s.table}_knn_sync"


def _sync_sql(s: Settings) -> str:
    k, d = table(s), s.time_column
    cols = ", ".join(columns(s))
    new = ", ".join(f"NEW.{c}" for c in columns(s))
    return f"""CREATE FUNCTION {sync_function(s)} RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    TRUNCATE {k};
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    DELETE FROM {k} WHERE id = OLD.id AND {d} = OLD.{d};
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO {k} ({cols}) VALUES ({new});
  END IF;
  RETURN NULL;
END
$fn$"""


def _grants_sql(s: Settings) -> str:
    """SELECT for each role (and PUBLIC) granted SELECT on the table, or on every column the
    copy holds (its own column grants with PUBLIC's), USAGE on the schema where it lacks
    it; those granted USAGE named in the comment. Read from the table's ACLs, not from
    memberships (a member of ``pg_read_all_data`` reads the copy anyway), and not for the
    owners of the copy and of the table: the grants follow from the table's, whoever runs
    the step, as a replay of the chain makes them."""
    t, k = literal(s.qualified_table), table(s)
    cols = ", ".join(literal(c) for c in columns(s))
    who = "CASE g.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END"
    return f"""DO $acl$
DECLARE
  r record;
  granted text[] := '{{}}';
BEGIN
  FOR r IN
    WITH whole AS (
      SELECT a.grantee FROM pg_class c,
             aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
      WHERE c.oid = {t}::regclass AND a.privilege_type = 'SELECT'),
    by_column AS (
      SELECT a.grantee, at.attname FROM pg_attribute at, aclexplode(at.attacl) a
      WHERE at.attrelid = {t}::regclass AND at.attname IN ({cols})
        AND a.privilege_type = 'SELECT'),
    g AS (
      SELECT grantee FROM whole
      UNION
      SELECT b.grantee FROM by_column b GROUP BY b.grantee
      HAVING (SELECT count(DISTINCT attname) FROM by_column x
              WHERE x.grantee IN (b.grantee, 0)) = {len(columns(s))})
    SELECT g.grantee, {who} AS who FROM g
    WHERE g.grantee NOT IN (SELECT relowner FROM pg_class
                            WHERE oid IN ({literal(k)}::regclass, {t}::regclass))
    ORDER BY 2
  LOOP
    EXECUTE format('GRANT SELECT ON {k} TO %s', r.who);
    CONTINUE WHEN r.grantee <> 0 AND has_schema_privilege(r.grantee, {literal(s.own_schema)}, 'USAGE');
    CONTINUE WHEN r.grantee = 0 AND has_schema_privilege('public', {literal(s.own_schema)}, 'USAGE');
    EXECUTE format('GRANT USAGE ON SCHEMA {s.own_schema} TO %s', r.who);
    granted := granted || r.who;
  END LOOP;
  IF cardinality(granted) > 0 THEN
    EXECUTE format('COMMENT ON TABLE {k} IS %L',
                   {literal(USAGE_MEMO)} || array_to_string(granted, ', '));
  END IF;
END
$acl$"""


def build_sql(s: Settings, source: str) -> list[str]:
    """The copy of ``source`` (opt1's new partitioned table, before its catch-up: the
    catch-up's re-copies then reach the copy through the trigger), its key, GiST, trigger
    function and triggers. Read with row level security off: an error, never a partial
    copy. Nobody else sees ``source`` yet: no lock to take."""
    k = table(s)
    name = f"{s.table}_knn"
    cols = ", ".join(columns(s))
    copy = f"CREATE TABLE {k} AS SELECT {cols} FROM {source}"
    return [
        f"""DO $copy$
DECLARE
  prior text := current_setting('row_security');
  r record;
BEGIN
  PERFORM set_config('row_security', 'off', true);
  EXECUTE {literal(copy)};
  PERFORM set_config('row_security', prior, true);
  FOR r IN SELECT DISTINCT a.grantee FROM pg_class c,
             aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
           WHERE c.oid = {literal(k)}::regclass AND a.grantee <> c.relowner LOOP
    EXECUTE format('REVOKE ALL ON TABLE {k} FROM %s',
                   CASE r.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END);
  END LOOP;
END
$copy$""",
        f"ALTER TABLE {k} ADD CONSTRAINT {name}_pkey PRIMARY KEY (id, {s.time_column})",
        *(f"CREATE INDEX {n.split('.')[-1]} ON {k} {using}" for n, using in indexes(s)),
        _sync_sql(s),
        *sync.triggers_sql(source, trigger(s), sync_function(s), cols),
    ]


def expose_sql(s: Settings) -> list[str]:
    """Once the table is the app's (after opt1's swap): the policy that follows the
    table's rows, the grants, the statistics."""
    t, k, d = s.qualified_table, table(s), s.time_column
    return [
        f"ALTER TABLE {k} ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY visible_in_table ON {k} FOR SELECT USING "
        f"(EXISTS (SELECT 1 FROM {t} x WHERE x.id = {k}.id AND x.{d} = {k}.{d}))",
        _grants_sql(s),
        f"ANALYZE {k}",
    ]


def drop_sql(s: Settings) -> list[str]:
    """The USAGE it granted taken back, then its triggers, the copy and its function: run
    by opt1's downgrade under the table's ACCESS EXCLUSIVE lock (its swap), so that no
    write meets a trigger without its copy and the copy's policy no longer names the
    table being dropped."""
    k = table(s)
    return [
        revoke_usage_sql(k, USAGE_MEMO, s.own_schema),
        *sync.drop_sql(s.qualified_table, trigger(s), k, sync_function(s)),
    ]


# The reads the copy serves: every column they read is in it, and they read the table
# without a date (every partition): the k nearest (Q6), the features within a radius (Q7)
# and the points of a category inside polygons of another (Q9, both sides of its join),
# each one GiST descent instead of one per partition.
SERVES = ("Q6", "Q7", "Q9")


def served_sql(s: Settings, qid: str) -> str:
    """``qid`` as ``queries.base_sql`` has it (same rows, same order), every read of the
    table made on the copy. Its policy makes the rows the caller sees the table's."""
    base = queries.base_sql(s)[qid]
    sql = base.replace(f" {s.qualified_table} ", f" {table(s)} ")
    if sql == base or s.qualified_table in sql:
        raise ValueError(f"{qid} does not read {s.qualified_table} as a relation: cannot serve it")
    return sql


def readable_sql(s: Settings) -> str:
    """Whether the copy serves the caller (else the RPC runs the baseline query): it may
    read it, and the copy's policy applies to it wherever the table's does (not so for the
    table's owner under FORCE ROW LEVEL SECURITY, who owns the copy too)."""
    k, t = literal(table(s)), literal(s.qualified_table)
    return (
        f"has_schema_privilege({literal(s.own_schema)}, 'USAGE') "
        f"AND has_table_privilege({k}, 'SELECT') "
        f"AND (row_security_active({k}) OR NOT row_security_active({t}))"
    )
