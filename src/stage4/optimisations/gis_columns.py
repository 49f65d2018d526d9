"""Derived spatial measures as narrow stored columns, and lz4 for the wide columns (opt2).

Why: Q1 and Q3 spend most of their time in ``ST_Area(geom::geography)`` (a spheroid
area per row) and Q3 also in ``ST_Intersects`` (a GEOS call per row). Storing the
area and the exact bbox once per row turns those into reads of 8-byte columns.

* ``area_m2`` and ``bbox_xmin/ymin/xmax/ymax`` are ``GENERATED ALWAYS … STORED``:
  PostgreSQL recomputes them on every INSERT and UPDATE of ``geom`` (``ST_Area(geography)``,
  ``geography(geometry)``, ``box3d(geometry)`` and ``ST_XMin(box3d)`` are IMMUTABLE), so
  no trigger can be forgotten or disabled. On a partitioned table the columns cascade to
  every partition. Adding them rewrites the table under ACCESS EXCLUSIVE (a stored
  generated column is computed for every row), bounded by ``lock_timeout``.
* No covering (INCLUDE) index: PostGIS's GiST opclasses have no ``fetch`` support
  function, so a query filtering on ``geom`` can never be an index-only scan; INCLUDE
  columns would only make the GiST index bigger. The gain comes from not computing,
  and from not detoasting ``geom`` when the bbox already decides ``ST_Intersects``.
* ``descricao`` (text) and ``propriedades`` (jsonb) get ``SET COMPRESSION lz4`` and
  ``SET STORAGE EXTENDED`` (compressed, then moved out of line when a row is still
  over ~2 kB). SET COMPRESSION only affects values written afterwards, and we do
  **not** rewrite existing values: a rewrite is an UPDATE of every row, which fires
  the app's triggers, emits every row to logical replication / Supabase Realtime and
  bloats the table, for a gain limited to decompression speed of columns Q1–Q3 never
  read. Old values keep pglz until the app next writes them.

The settings found before the upgrade (per relation: on a partitioned table SET
COMPRESSION does not recurse, so every partition is set and restored by itself; partitions
created later inherit the parent's) are kept in the comment of ``area_m2`` (a column this
revision owns), so the downgrade restores exactly what was there.
"""

from __future__ import annotations

from stage4.config import Settings

WIDE_COLUMNS = ("descricao", "propriedades")
STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
COMPRESSION = {"": "DEFAULT", "p": "pglz", "l": "lz4"}
_MARK = "stage4 opt2 previous storage: "


def derived(s: Settings) -> dict[str, str]:
    """Column name -> generated expression (all ``double precision``)."""
    g = s.geometry_column
    return {
        "area_m2": f"ST_Area({g}::geography)",
        "bbox_xmin": f"ST_XMin({g}::box3d)",
        "bbox_ymin": f"ST_YMin({g}::box3d)",
        "bbox_xmax": f"ST_XMax({g}::box3d)",
        "bbox_ymax": f"ST_YMax({g}::box3d)",
    }


def existing_columns_sql(s: Settings) -> str:
    """Names among ``derived(s)`` already present (the upgrade refuses to adopt them)."""
    names = ", ".join(f"'{n}'" for n in derived(s))
    return (
        f"SELECT attname FROM pg_attribute WHERE attrelid = '{s.qualified_table}'::regclass "
        f"AND attnum > 0 AND NOT attisdropped AND attname IN ({names}) ORDER BY attname"
    )


def add_columns_sql(s: Settings) -> str:
    """One ALTER TABLE (one rewrite, cascading to partitions) adding every derived column."""
    adds = ",\n  ".join(
        f"ADD COLUMN {name} double precision GENERATED ALWAYS AS ({expr}) STORED"
        for name, expr in derived(s).items()
    )
    return f"ALTER TABLE {s.qualified_table}\n  {adds}"


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
        f"'Exact {k} of the bounding box of {s.geometry_column}'"
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


# ------------------------------------------------------------------ rewrites (if the app adopts them)


def _envelope(s: Settings) -> str:
    return f"ST_MakeEnvelope(%(min_lon)s, %(min_lat)s, %(max_lon)s, %(max_lat)s, {s.srid})"


def base_queries(s: Settings) -> dict[str, str]:
    """Q1–Q3 as the app runs them (what the rewrites must match)."""
    t, g, env = s.qualified_table, s.geometry_column, _envelope(s)
    return {
        "Q1": f"SELECT count(*), sum(ST_Area({g}::geography)) FROM {t} WHERE {g} && {env}",
        "Q2": f"SELECT id, nome, categoria, ST_AsGeoJSON(ST_Simplify({g}, 0.0001)) "
        f"FROM {t} WHERE {g} && {env} ORDER BY id LIMIT 500",
        "Q3": f"SELECT categoria, count(*), sum(ST_Area({g}::geography)) FROM {t} "
        f"WHERE ST_Intersects({g}, {env}) GROUP BY categoria",
    }


def rewrites(s: Settings) -> dict[str, dict[str, str]]:
    """Q1 and Q3 reading the stored columns: SQL the app must adopt to gain from them
    (the app's own SQL computes ``ST_Area`` per row whatever is stored), so the gate
    never counts them; the bench measures them beside the app's. Q2 has none: it already reads ~500 rows by
    the primary key and must compute the GeoJSON of ``geom`` anyway (measured: no gain).

    Q3: a feature whose exact bbox lies inside the closed envelope intersects it, so
    ST_Intersects (a GEOS call on the detoasted geometry) only runs for the features
    crossing the envelope's border; ``&&`` keeps the GiST index and is implied by
    ST_Intersects, so the row set is exactly the base one.
    """
    t, g, env = s.qualified_table, s.geometry_column, _envelope(s)
    requires = (
        f"EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{t}') "
        "AND attname = 'area_m2' AND attgenerated = 's' AND NOT attisdropped)"
    )
    inside = (
        "bbox_xmin >= %(min_lon)s AND bbox_xmax <= %(max_lon)s "
        "AND bbox_ymin >= %(min_lat)s AND bbox_ymax <= %(max_lat)s"
    )
    return {
        "Q1": {
            "requires": requires,
            "sql": f"SELECT count(*), sum(area_m2) FROM {t} WHERE {g} && {env}",
        },
        "Q3": {
            "requires": requires,
            "sql": f"SELECT categoria, count(*), sum(area_m2) FROM {t} "
            f"WHERE {g} && {env} AND (({inside}) OR ST_Intersects({g}, {env})) "
            "GROUP BY categoria",
        },
    }


def __getattr__(name: str):
    # REWRITES follows the configured names, computed when first read.
    if name == "REWRITES":
        from stage4.config import settings

        return rewrites(settings())
    raise AttributeError(name)
