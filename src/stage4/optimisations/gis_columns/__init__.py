"""opt2, derived spatial measures as narrow columns kept by a trigger, and lz4 for the wide columns.

Why: Q1 and Q3 spend most of their time in ``ST_Area(geom::geography)`` (a spheroid
area per row) and Q3 also in ``ST_Intersects`` (a GEOS call per row). Storing the
area and the exact bbox once per row turns those into reads of 8-byte columns.

* ``area_m2`` and ``bbox_xmin/ymin/xmax/ymax`` are plain nullable ``double precision``
  columns: adding them changes the catalog only (a STORED generated column would
  rewrite the whole table under ACCESS EXCLUSIVE, blocking readers for as long as the
  rewrite takes). A BEFORE INSERT OR UPDATE trigger (``trigger_sql``) computes them
  with the expressions of ``derived`` on every write of ``geom`` or of one of them, so
  whatever a client writes into them is replaced: they are read-only in effect, as
  generated columns were. On a partitioned table the trigger is cloned to every
  partition, including those created later (opt4). Its name sorts after the app's own
  BEFORE triggers (PostgreSQL fires them in name order), so it sees the final ``geom``
  as a generated column would.
* The rows present before the trigger are filled by ``stage4.ddl.backfill`` (batches of
  heap blocks, each committed on its own: see that module and the revision for what the
  app sees). Until the backfill ends the columns are NULL on rows it has not reached,
  which is why ``rewrites`` require the revision to be applied, not just the columns.
* No covering (INCLUDE) index: PostGIS's GiST opclasses have no ``fetch`` support
  function, so a query filtering on ``geom`` can never be an index-only scan; INCLUDE
  columns would only make the GiST index bigger. The gain comes from not computing,
  and from not detoasting ``geom`` when the bbox already decides ``ST_Intersects``.
* ``descricao`` (text) and ``propriedades`` (jsonb) get ``SET COMPRESSION lz4`` and
  ``SET STORAGE EXTENDED`` (compressed, then moved out of line when a row is still
  over ~2 kB). SET COMPRESSION only affects values written afterwards, and we do
  **not** rewrite existing values: that would be a second UPDATE of every row, for a
  gain limited to decompression speed of columns Q1–Q3 never read. Old values keep
  pglz until the app next writes them.

The settings found before the upgrade (per relation: on a partitioned table SET
COMPRESSION does not recurse, so every partition is set and restored by itself; partitions
created later inherit the parent's) are kept in the comment of ``area_m2`` (a column this
revision owns), so the downgrade restores exactly what was there.
"""

from __future__ import annotations

from dataclasses import replace

from stage4.config import Settings
from stage4.ddl import functions, privileges
from stage4.ddl.cron import Job
from stage4.ddl.matviews import MatView
from stage4.ddl.partitioning import partitions_sql
from stage4.optimisations.base import (
    Creates,
    Promise,
    Reference,
    Rewrite,
    copy_sql,
    creates_column,
    creates_function,
)

REVISION = "opt2"
# What the generic modules ask of every unit (``base.Unit``): none here.
REBUILDS_TABLE = False
STALENESS: dict[str, str] = {}
CLAIMS: dict[str, float] = {}
WIDE_COLUMNS = ("descricao", "propriedades")
STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
COMPRESSION = {"": "DEFAULT", "p": "pglz", "l": "lz4"}
_MARK = "stage4 opt2 previous storage: "
# Fired after the app's BEFORE triggers, which PostgreSQL runs in name order: one that
# sets geom (say from lat/lon columns) runs first, and the columns follow its result.
TRIGGER = "zz_stage4_gis_columns"
FILLED = "stage4 opt2: every row filled, kept right by this trigger"


def _expressions(g: str) -> dict[str, str]:
    return {
        "area_m2": f"ST_Area({g}::geography)",
        "bbox_xmin": f"ST_XMin({g}::box3d)",
        "bbox_ymin": f"ST_YMin({g}::box3d)",
        "bbox_xmax": f"ST_XMax({g}::box3d)",
        "bbox_ymax": f"ST_YMax({g}::box3d)",
    }


def derived(s: Settings) -> dict[str, str]:
    """Column name -> the expression it holds (all ``double precision``), of the row's geometry."""
    return _expressions(s.geometry_column)


def function(s: Settings) -> str:
    """The trigger function, in stage4's own schema (in ``public`` it would be an API RPC);
    a trigger fires it without the writer needing any right on that schema."""
    return f"{s.own_schema}.stage4_{s.table}_gis_columns"


def legacy_function(s: Settings) -> str:
    """Where an earlier stage4 created it: the table's schema."""
    return f"{s.schema}.stage4_{s.table}_gis_columns"


def existing_columns_sql(s: Settings) -> str:
    """Names among ``derived(s)`` already present (the upgrade refuses to adopt them)."""
    names = ", ".join(f"'{n}'" for n in derived(s))
    return (
        f"SELECT attname FROM pg_attribute WHERE attrelid = '{s.qualified_table}'::regclass "
        f"AND attnum > 0 AND NOT attisdropped AND attname IN ({names}) ORDER BY attname"
    )


def leftover_sql(s: Settings) -> str:
    """True when an upgrade committed the columns and the trigger but never finished its
    backfill (killed): it is resumed, not refused."""
    return (
        f"SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = '{s.qualified_table}'::regclass "
        f"AND tgname = '{TRIGGER}' AND NOT tgisinternal) "
        f"AND to_regprocedure('{function(s)}()') IS NOT NULL"
    )


def add_columns_sql(s: Settings) -> str:
    """One ALTER TABLE adding every derived column: no default, so catalog only (no rewrite),
    cascading to partitions."""
    adds = ",\n  ".join(f"ADD COLUMN {name} double precision" for name in derived(s))
    return f"ALTER TABLE {s.qualified_table}\n  {adds}"


def function_sql(s: Settings) -> str:
    """The trigger function: the writer's rights (SECURITY INVOKER), a fixed search_path
    (pg_catalog, PostGIS's schema, pg_temp last), owned by the table's owner, executable
    by nobody else. A trigger function needs no EXECUTE grant to fire (PostgreSQL checks
    it when the trigger is created), so anon and authenticated reach it only through
    writes their grants and policies already allow. One DO block, so that offline
    ``--sql`` renders the same statement (PostGIS's schema is found when it runs)."""
    g, fn = s.geometry_column, function(s)
    body = "\n".join(f"  NEW.{c} := {e};" for c, e in _expressions(f"NEW.{g}").items())
    return f"""DO $do$
DECLARE
  postgis text := (SELECT quote_ident(extnamespace::regnamespace::text) FROM pg_extension
                   WHERE extname = 'postgis');
  r record;
BEGIN
  EXECUTE format($fn$CREATE FUNCTION {fn}() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, %s, pg_temp
AS $body$
BEGIN
{body}
  RETURN NEW;
END
$body$$fn$, postgis);
  EXECUTE format('ALTER FUNCTION {fn}() OWNER TO %I',
                 (SELECT pg_get_userbyid(relowner) FROM pg_class
                  WHERE oid = '{s.qualified_table}'::regclass));
  {privileges.function_owner_only_plpgsql(f"{fn}()")}
  COMMENT ON FUNCTION {fn}() IS
    'stage4 opt2: keeps area_m2 and bbox_* of {s.qualified_table} equal to their expressions of {g}';
END
$do$"""


def column_grants_sql(s: Settings) -> str:
    """The derived columns readable by whoever may read ``geom`` column by column (a
    table-level grant covers them already): they reveal nothing ``geom`` does not, and the
    RPCs opt2 re-points read them as the caller. Dropped with the columns on downgrade."""
    cols = ", ".join(derived(s))
    return f"""DO $do$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT DISTINCT a.grantee FROM pg_attribute att, aclexplode(att.attacl) a
           WHERE att.attrelid = '{s.qualified_table}'::regclass
             AND att.attname = '{s.geometry_column}' AND a.privilege_type = 'SELECT'
  LOOP
    EXECUTE format('GRANT SELECT ({cols}) ON {s.qualified_table} TO %s',
                   CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END);
  END LOOP;
END
$do$"""


def trigger_sql(s: Settings) -> str:
    cols = ", ".join([s.geometry_column, *derived(s)])
    return (
        f"CREATE TRIGGER {TRIGGER} BEFORE INSERT OR UPDATE OF {cols} ON {s.qualified_table} "
        f"FOR EACH ROW EXECUTE FUNCTION {function(s)}()"
    )


def filled_sql(s: Settings) -> str:
    """Said once the backfill has left no row to fill (what ``rewrites`` require)."""
    return f"COMMENT ON TRIGGER {TRIGGER} ON {s.qualified_table} IS '{FILLED}'"


def filled_check_sql(s: Settings) -> str:
    """True once the backfill has filled every row and while the trigger is enabled (rows
    written since are right too). Catalog only: what the rewrites require, what the
    revision promises."""
    return (
        f"EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('{s.qualified_table}') "
        f"AND tgname = '{TRIGGER}' AND tgenabled <> 'D' "
        f"AND obj_description(oid, 'pg_trigger') = '{FILLED}')"
    )


def backfill_set(s: Settings) -> str:
    """What the backfill writes: any write of a derived column makes the trigger compute all
    five, so the rows are computed by the same function as the app's writes."""
    return "area_m2 = NULL"


def backfill_todo(s: Settings) -> str:
    """The rows left to fill (a NULL geometry has NULL measures)."""
    return f"area_m2 IS NULL AND {s.geometry_column} IS NOT NULL"


def drop_trigger_sql(s: Settings) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {TRIGGER} ON {s.qualified_table}",
        f"DROP FUNCTION IF EXISTS {function(s)}(), {legacy_function(s)}()",
    ]


def drop_columns_sql(s: Settings) -> str:
    drops = ", ".join(f"DROP COLUMN IF EXISTS {name}" for name in derived(s))
    return f"ALTER TABLE {s.qualified_table} {drops}"


def _tree(s: Settings) -> str:
    """The table and, when partitioned, every partition (SET COMPRESSION never recurses
    in PostgreSQL 15, so each relation is set, and restored, on its own)."""
    q = s.qualified_table
    return f"(SELECT '{q}'::regclass AS relid UNION SELECT relid FROM pg_partition_tree('{q}'))"


def comments(s: Settings) -> list[str]:
    """Comments on the bbox columns (``area_m2``'s is written by ``set_storage_sql``)."""
    return [
        f"COMMENT ON COLUMN {s.qualified_table}.bbox_{k} IS "
        f"'Exact {k} of the bounding box of {s.geometry_column}, in the coordinates of "
        f"SRID {s.srid} (kept by stage4 opt2)'"
        for k in ("xmin", "ymin", "xmax", "ymax")
    ]


def set_storage_sql(s: Settings) -> str:
    """Save each relation's storage/compression of the wide columns in the comment of
    ``area_m2``, then set EXTENDED + lz4 with ``ALTER TABLE ONLY`` on each (catalog only,
    no rewrite). One DO block: offline ``--sql`` renders the same statement."""
    cols = ", ".join(f"'{c}'" for c in WIDE_COLUMNS)
    head = f"Geodesic area in m2 of {s.geometry_column} (ST_Area on geography); {_MARK}"
    return f"""DO $do$
DECLARE
  r record;
  saved text[] := '{{}}';
BEGIN
  FOR r IN SELECT a.attrelid::regclass::text AS rel, a.attname, a.attstorage::text AS st,
                  coalesce(a.attcompression::text, '') AS co
           FROM {_tree(s)} t JOIN pg_attribute a ON a.attrelid = t.relid
           WHERE a.attname IN ({cols}) AND NOT a.attisdropped ORDER BY 1, 2
  LOOP
    saved := saved || (r.rel || '.' || r.attname || '=' || r.st || ':' || r.co);
    EXECUTE 'ALTER TABLE ONLY ' || r.rel || ' ALTER COLUMN ' || quote_ident(r.attname)
      || ' SET STORAGE EXTENDED, ALTER COLUMN ' || quote_ident(r.attname) || ' SET COMPRESSION lz4';
  END LOOP;
  EXECUTE 'COMMENT ON COLUMN {s.qualified_table}.area_m2 IS '
    || quote_literal('{head}' || array_to_string(saved, ','));
END
$do$"""


def restore_storage_sql(s: Settings) -> str:
    """Put back what ``set_storage_sql`` saved; EXTENDED + default compression if unsaved."""
    cols = ", ".join(f"'{c}'" for c in WIDE_COLUMNS)
    store = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in STORAGE.items())
    comp = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in COMPRESSION.items())
    return f"""DO $do$
DECLARE
  r record;
  note text := (SELECT col_description(attrelid, attnum) FROM pg_attribute
                WHERE attrelid = '{s.qualified_table}'::regclass AND attname = 'area_m2');
BEGIN
  FOR r IN
    WITH saved AS (
      SELECT split_part(item, '=', 1) AS relcol, split_part(split_part(item, '=', 2), ':', 1) AS st,
             split_part(split_part(item, '=', 2), ':', 2) AS co
      FROM unnest(string_to_array(split_part(note, '{_MARK}', 2), ',')) AS item
      WHERE position('{_MARK}' IN coalesce(note, '')) > 0 AND item <> '')
    SELECT a.attrelid::regclass::text AS rel, a.attname,
           coalesce(sv.st, 'x') AS st, coalesce(sv.co, '') AS co
    FROM {_tree(s)} t JOIN pg_attribute a ON a.attrelid = t.relid
    LEFT JOIN saved sv ON sv.relcol = a.attrelid::regclass::text || '.' || a.attname
    WHERE a.attname IN ({cols}) AND NOT a.attisdropped ORDER BY 1, 2
  LOOP
    EXECUTE 'ALTER TABLE ONLY ' || r.rel || ' ALTER COLUMN ' || quote_ident(r.attname)
      || ' SET STORAGE ' || CASE r.st {store} END
      || ', ALTER COLUMN ' || quote_ident(r.attname)
      || ' SET COMPRESSION ' || CASE r.co {comp} END;
  END LOOP;
END
$do$"""


# ------------------------------------------------------------------ the RPCs it re-points


def _envelope(s: Settings) -> str:
    return f"ST_MakeEnvelope(%(min_lon)s, %(min_lat)s, %(max_lon)s, %(max_lat)s, {s.srid})"


def repoints(s: Settings) -> dict[str, functions.Function]:
    """Q1 and Q3 reading the stored columns, as the bodies of their RPCs (same signature,
    same rows: the columns hold what the baseline computes per row), planned per call. Re-pointed once the
    backfill has filled every row, in the step's last transaction; only a body that is the
    baseline's is re-pointed (``functions.repoint_sql``). Q2 is not: it reads ~500 rows by
    the primary key and must compute the GeoJSON of ``geom`` anyway (measured: no gain).

    Q3: a feature whose exact bbox lies inside the closed envelope intersects it, so
    ST_Intersects (a GEOS call on the detoasted geometry) only runs for the features
    crossing the envelope's border; ``&&`` keeps the GiST index and is implied by
    ST_Intersects, so the row set is exactly the base one.
    """
    t, g, env = s.qualified_table, s.geometry_column, _envelope(s)
    inside = (
        "bbox_xmin >= %(min_lon)s AND bbox_xmax <= %(max_lon)s "
        "AND bbox_ymin >= %(min_lat)s AND bbox_ymax <= %(max_lat)s"
    )
    q1 = f"SELECT count(*), sum(area_m2) FROM {t} WHERE {g} && {env}"
    q3 = (
        f"SELECT categoria, count(*), sum(area_m2) FROM {t} "
        f"WHERE {g} && {env} AND (({inside}) OR ST_Intersects({g}, {env})) "
        "GROUP BY categoria ORDER BY categoria"
    )
    return {"Q1": functions.read(s, "Q1", q1), "Q3": functions.read(s, "Q3", q3)}


def jobs(s: Settings) -> list[Job]:
    """None: its step schedules nothing."""
    return []


def rewrites(s: Settings) -> dict[str, Rewrite]:
    """None: what the stored columns make faster, the RPCs get (``repoints``)."""
    return {}


# ------------------------------------------------------------------ what the unit declares


def views(s: Settings) -> list[MatView]:
    """None to settle: the upgrade analyzes the new columns itself."""
    return []


def promises(s: Settings) -> list[Promise]:
    q, names = s.qualified_table, ", ".join(f"'{c}'" for c in derived(s))
    wide = ", ".join(f"'{c}'" for c in WIDE_COLUMNS)
    return [
        Promise(
            "stored area and bbox columns exist, every row filled, kept by the trigger",
            f"SELECT count(*) = {len(derived(s))} AND {filled_check_sql(s)} FROM pg_attribute "
            f"WHERE attrelid = '{q}'::regclass AND NOT attisdropped "
            f"AND atttypid = 'float8'::regtype AND attname IN ({names})",
        ),
        Promise(
            "wide columns compressed with lz4",
            f"SELECT bool_and(attcompression = 'l') FROM pg_attribute "
            f"WHERE attrelid = '{q}'::regclass AND attname IN ({wide})",
        ),
    ]


def reference(conn, s: Settings, direction: str, scratch: str) -> Reference:
    """Up: the columns added and every row filled by one UPDATE computing the expressions
    (no trigger, no batches), rolled back. Down: a partitioned copy of the table in
    ``scratch`` with the same columns, storage and rows, whose wide columns get their
    storage back and whose derived columns are dropped, committed."""
    if direction == "up":
        fill = ", ".join(f"{c} = {e}" for c, e in derived(s).items())
        return Reference((add_columns_sql(s), f"UPDATE {s.qualified_table} SET {fill}"))
    r = replace(s, schema=scratch)
    like = "INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION INCLUDING CONSTRAINTS"
    setup = copy_sql(
        conn, s, r.qualified_table, like, partitions_sql(r, r.qualified_table, scratch)
    )
    return Reference(
        (restore_storage_sql(r), drop_columns_sql(r)), setup=tuple(setup), committed=True
    )


def creates(s: Settings) -> list[Creates]:
    """The derived columns and the trigger function; an upgrade killed before its backfill
    ended left them (``leftover_sql``): those are resumed, not refused."""
    return [
        *(creates_column(s, c, "the derived column", leftover_sql(s)) for c in derived(s)),
        creates_function(f"{function(s)}()", "the trigger function", leftover_sql(s)),
    ]
