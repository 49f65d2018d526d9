"""opt5, the aggregate and tile queries: Q8 from counts kept by each write, Q9 and Q10's
materialized views for the queries an app could rewrite.

Q8 (features per month and category in a year) reads ``stage4.ddl.counts``: a table of
(month, category, count) kept current by a trigger in each writing transaction, never
stale. A materialized view of the same counts answered as fast but as old as its last
refresh (up to 15 minutes on the runbook's pg_cron schedule); the upkeep of a count is
one upsert per write.

Two materialized views stay, refreshed ``CONCURRENTLY`` by pg_cron as the runbook
planned, each with a unique index: the tile view (every feature with its geometry
already in EPSG:3857, one GiST over all of them) and the points view (Q9's points). The
app's RPCs do not read them: ``tile_mvt`` keeps reading the table, fresh. They serve
``rewrites``: what an app that changed its SQL would gain, measured beside the app's
own calls and labelled as reading a view as old as its last refresh, never counted by
the gate (the tile view makes a tile about a fifth faster than the table).

Views ignore row level security: whoever may SELECT a view sees every row. So the views
and the counts follow ``matviews.grants_sql``: while the table has RLS disabled, a role
reads a column iff it may read every table column that column reveals (each one's
``reveals``), so whoever could call an RPC on the table can call it on them; with RLS on,
they are readable by their owner only and the RPCs keep reading the table
(``matviews.rls_enabled``).
"""

from __future__ import annotations

from dataclasses import replace

from stage4.config import Settings
from stage4.ddl import counts, cron, functions, literal, matviews
from stage4.ddl.cron import Job
from stage4.ddl.matviews import MatView, lineage
from stage4.optimisations.base import (
    Creates,
    Promise,
    Reference,
    Rewrite,
    creates_function,
    creates_matview,
    creates_relation,
)
from stage4.queries import base_sql

REVISION = "opt5"
REBUILDS_TABLE = False
SCHEDULES = ("5-59/15 * * * *", "10-59/15 * * * *")  # staggered: 2 cores
# MISSION.md's final figures, claimed after this last step (never measured): ``stage4.measure.report``
# shows them beside the measured ones.
CLAIMS = {"mean": 46.7, "qps": 298.3, "cache_hit_pct": 93.2}
# The RPCs it re-points read what each write keeps current: nothing served stale.
STALENESS: dict[str, str] = {}


def monthly(s: Settings, schema: str | None = None) -> counts.Counts:
    """Q8: features per (month, category), every year, kept by each write."""
    return counts.of(s, schema)


def legacy_monthly(s: Settings, schema: str | None = None) -> MatView:
    """The monthly materialized view an earlier opt5 made (Q8 read it, up to 15 minutes
    stale): the downgrade still removes it, with its refresh job and its RPC body."""
    t, name = s.time_column, f"{s.table}_mensal_mv"
    query = f"""
SELECT date_trunc('month', g.{t})::date AS mes, g.categoria, count(*) AS total
FROM {s.qualified_table} g
GROUP BY 1, 2"""
    return MatView(schema or s.own_schema, name, query, (f"{name}_key", "mes, categoria"))


def tiles(s: Settings, schema: str | None = None) -> MatView:
    """Q10: the tile attributes with the geometry already in EPSG:3857 (and the original).

    A non-partitioned copy with one GiST on the geometry, which Q2, Q6 and Q7 read
    for the rewrites of Q2, Q6, Q7 and Q9 (see ``rewrites``). The (categoria, geom) GiST is
    partial on ``categoria IS NOT NULL`` so that only a query filtering on a category
    (Q9) can use it: without the predicate the planner also picks it for plain ``geom``
    filters, scanning many times the buffers.

    Rows are written in the geometry's b-tree (Hilbert) order, as opt1 writes the table,
    so a viewport's rows share pages. Q2 and Q6 want rows in id order
    (Q6 after the distance), which that layout scatters: the GiST on ``(geom,
    id::float8)`` gives that order from the index itself (see ``rewrites``).
    ``REFRESH … CONCURRENTLY`` keeps unchanged rows where they are and appends changed ones.

    Read serially (``MatView.serial``), as the queries it serves read a few thousand rows.
    """
    t, gc, name = s.time_column, s.geometry_column, f"{s.table}_tile_mv"
    query = f"""
SELECT g.id, g.{t}, g.nome, g.categoria, g.{gc}, ST_Transform(g.{gc}, 3857) AS geom_3857
FROM {s.qualified_table} g
ORDER BY g.{gc}"""
    indexes = {
        f"{name}_idx1": f"USING gist ({gc})",
        # (categoria, geom) GiST (btree_gist), for Q9
        _by_category(s): f"USING gist (categoria, {gc}) WHERE categoria IS NOT NULL",
        # (geom, id) GiST (btree_gist): ``ORDER BY … BY_ID`` in index order
        _by_id(s): f"USING gist ({gc}, (id::float8))",
    }
    cols = {"id": ("id",), t: (t,), "nome": ("nome",), "categoria": ("categoria",)}
    reveals = lineage({**cols, gc: (gc,), "geom_3857": (gc,)}, (gc,))
    key = (f"{name}_key", f"id, {t}")
    return MatView(schema or s.own_schema, name, query, key, indexes, serial=True, reveals=reveals)


def _by_category(s: Settings) -> str:
    """The name of the tile view's (categoria, geom) GiST."""
    return f"{s.table}_tile_mv_idx2"


def _by_id(s: Settings) -> str:
    """The name of the tile view's (geom, id) GiST."""
    return f"{s.table}_tile_mv_idx3"


BY_ID = "id::float8 <-> 0::float8"  # the order by id, for ids in [0, 2^53): ``_by_id_gist``


def points(s: Settings, schema: str | None = None) -> MatView:
    """Q9's point side: only the POINT features (id, date, category, geometry), GiST-indexed.

    Why not the (point, container) pairs: their number, and the time to build them, grow
    with the square of the density. A narrow, non-partitioned copy of the points is
    linear to build; Q9 joins it to the tile view (one GiST on
    every geometry), so each point probes one index instead of one per partition. Read
    serially, as the tile view.
    """
    t, gc, name = s.time_column, s.geometry_column, f"{s.table}_pontos_mv"
    query = f"""
SELECT g.id, g.{t}, g.categoria, g.{gc}
FROM {s.qualified_table} g
WHERE GeometryType(g.{gc}) = 'POINT'
ORDER BY g.{gc}"""
    indexes = {f"{name}_idx1": f"USING gist (categoria, {gc})"}
    reveals = lineage({"id": ("id",), t: (t,), "categoria": ("categoria",), gc: (gc,)}, (gc,))
    key = (f"{name}_key", f"id, {t}")
    return MatView(schema or s.own_schema, name, query, key, indexes, serial=True, reveals=reveals)


# Q9 filters both sides by category: a GiST on (categoria, geom) (btree_gist) visits only
# that category's features, where one on geom alone visits every category there (at 1M
# features ~12x more heap rows). opt5 creates the extension only when it is missing,
# and says so in the points view's comment, so the downgrade drops only what it made.
BTREE_GIST_MARK = "stage4 opt5 created the btree_gist extension (dropped on downgrade)"


def btree_gist_sql() -> str:
    return """DO $ext$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'btree_gist') THEN
    CREATE EXTENSION btree_gist;
    CREATE TEMP TABLE stage4_opt5_created_btree_gist () ON COMMIT DROP;
  END IF;
END
$ext$"""


def btree_gist_mark_sql(s: Settings) -> str:
    return f"""DO $ext$
BEGIN
  IF to_regclass('pg_temp.stage4_opt5_created_btree_gist') IS NOT NULL THEN
    COMMENT ON MATERIALIZED VIEW {points(s).qualified} IS '{BTREE_GIST_MARK}';
    DROP TABLE pg_temp.stage4_opt5_created_btree_gist;
  END IF;
END
$ext$"""


def btree_gist_drop_sql(s: Settings, schema: str | None = None) -> str:
    """Before the points view goes: drop btree_gist if opt5 made it and nothing else uses it."""
    tv, pv = tiles(s, schema), points(s, schema)
    return f"""DO $ext$
BEGIN
  IF obj_description(to_regclass('{pv.qualified}'), 'pg_class') = '{BTREE_GIST_MARK}' THEN
    DROP MATERIALIZED VIEW {pv.qualified};
    DROP INDEX IF EXISTS {tv.qualified_index(_by_category(s))}, {tv.qualified_index(_by_id(s))};
    BEGIN
      DROP EXTENSION btree_gist;
    EXCEPTION WHEN dependent_objects_still_exist THEN
      RAISE NOTICE 'opt5: btree_gist kept: other objects now use it';
    END;
  END IF;
END
$ext$"""


def views(s: Settings, schema: str | None = None) -> list[MatView]:
    """The two views, in creation order (and the ones to settle after the step), in
    stage4's own schema (or ``schema``)."""
    return [tiles(s, schema), points(s, schema)]


def located(bind, s: Settings) -> str:
    """The schema the views are in: the own one, or the table's where an earlier stage4 put
    them (its downgrade must find them there)."""
    own, legacy = tiles(s), tiles(s, s.schema)
    found = bind.exec_driver_sql(
        f"SELECT to_regclass('{own.qualified}') IS NULL "
        f"AND (SELECT relkind = 'm' FROM pg_class WHERE oid = to_regclass('{legacy.qualified}'))"
    ).scalar()
    return s.schema if found else s.own_schema


def usage_sql(s: Settings) -> str:
    """USAGE on the own schema for the roles that may read a view or the counts
    (``matviews.usage_sql``), named on the tile view."""
    return matviews.usage_sql(views(s), tiles(s), also=(monthly(s).qualified,))


def usage_revoke_sql(s: Settings, schema: str | None = None) -> list[str]:
    """Take back the USAGE on the own schema that ``usage_sql`` granted (its memo is on the
    tile view in ``schema``; an earlier opt5 kept it on its monthly view)."""
    return [
        matviews.usage_revoke_sql(tiles(s, schema), s.own_schema),
        matviews.usage_revoke_sql(legacy_monthly(s, schema), s.own_schema),
    ]


def jobs(s: Settings) -> list[Job]:
    """One named refresh job per view, staggered."""
    return [v.job(SCHEDULES[i % len(SCHEDULES)]) for i, v in enumerate(views(s))]


def legacy_jobs(s: Settings) -> list[str]:
    """The refresh job an earlier opt5 scheduled for its monthly view."""
    return [legacy_monthly(s).job(SCHEDULES[0]).name]


def monthly_counts_body(s: Settings, schema: str | None = None) -> str:
    """Q8 from the counts: same columns, rows and order as the baseline body."""
    return monthly(s, schema).body()


def legacy_bodies(s: Settings, schema: str | None = None) -> dict[str, str]:
    """The bodies an earlier opt5 gave Q8 and Q10 (reading its views in ``schema``): the
    downgrade restores the previous body over them too."""
    q8 = monthly_counts_body(s, schema).replace(
        monthly(s, schema).qualified, legacy_monthly(s, schema).qualified
    )
    return {"Q8": q8, "Q10": tile_body(s, schema)}


def tile_body(s: Settings, schema: str | None = None) -> str:
    """Q10 on the tile view: the baseline's filter, attributes and ORDER BY id (a rewrite:
    the view is as old as its last refresh)."""
    gc = s.geometry_column
    return f"""
SELECT ST_AsMVT(m.*, 'geometrias', 4096, 'geom', 'id')
FROM (
  SELECT g.id, g.nome, g.categoria,
         ST_AsMVTGeom(g.geom_3857, ST_TileEnvelope(z, x, y), 4096, 64, true) AS geom
  FROM {tiles(s, schema).qualified} g
  WHERE g.{gc} && ST_Transform(ST_TileEnvelope(z, x, y), {s.srid})
  ORDER BY g.id
) m
WHERE m.geom IS NOT NULL"""


def repoints(s: Settings) -> dict[str, functions.Function]:
    """Q8 reads the counts, current at every commit."""
    return {"Q8": functions.monthly_counts(s, monthly_counts_body(s))}


def _populated(name: str) -> str:
    return f"EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('{name}') AND relispopulated)"


def _by_id_gist(s: Settings) -> str:
    """The view has its ``(geom, id::float8)`` GiST, and ``id::float8 <-> 0`` orders by id:
    ids in [0, 2^53) (exact in a double; the distance to 0 is the id itself)."""
    tv = tiles(s)
    idx = tv.qualified_index(_by_id(s))
    return (
        f"(SELECT a.amname = 'gist' AND x.indnatts = 2 FROM pg_index x "
        f"JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_am a ON a.oid = c.relam "
        f"WHERE x.indexrelid = to_regclass('{idx}')) AND (SELECT coalesce(min(id) >= 0 "
        f"AND max(id) < 2::float8 ^ 53, true) FROM {tv.qualified})"
    )


def rewrites(s: Settings) -> dict[str, Rewrite]:
    """Q2, Q6, Q7 and Q9 on the views: non-partitioned relations. Available if the app
    adopts them (its SQL names the table, not the views), and as fresh as the views'
    last refresh: the bench measures them beside the app's SQL, the gate never counts them.

    Q2 (the first 500 features in a box, by id) and Q6 (the k nearest, ties by id) read
    the tile view's GiST on ``(geom, id::float8)`` (btree_gist), which orders by both
    keys at once: ``WHERE geom && box ORDER BY id::float8 <-> 0`` and ``ORDER BY geom <->
    pt, id::float8 <-> 0`` are each one index scan that stops at the last row wanted.
    The app's Q2 reads every feature in the box (12.5k for the heaviest box of the 1M
    bench) to keep 500; its Q6 finds the k-th distance, then reads the box again for every
    feature at most that far, to sort them by (distance, id): where polygons overlap,
    hundreds lie at distance 0 (1,161 candidates and 1,381 buffers for one point of the
    1M bench; 40 buffers by the index). Both keys are float because PostgreSQL reorders a
    lossy distance (the geometry's) only with float ORDER BY values; ``_by_id_gist``
    guards the cast. Q9: points from the points view, containers (any type, as in the
    base query) from the tile view.
    """
    tv, pv = tiles(s), points(s)
    g, pt = s.geometry_column, "ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)"
    if s.srid != 4326:
        pt = f"ST_Transform({pt}, {s.srid})"
    geog = f"{g}::geography" if s.srid == 4326 else f"ST_Transform({g}, 4326)::geography"
    env = "ST_MakeEnvelope(%(min_lon)s, %(min_lat)s, %(max_lon)s, %(max_lat)s, 4326)"
    if s.srid != 4326:
        env = f"ST_Transform({env}, {s.srid})"
    no_rls = (
        f"NOT (SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass('{s.qualified_table}'))"
    )
    on_view = f"{_populated(tv.qualified)} AND {no_rls}"
    by_id = _by_id_gist(s)
    base = base_sql(s)  # the app's Q7: only the relation changes
    # Q1 and Q3 stay on the table (opt2's stored area and bbox): the view does not make
    # them faster, and the table is never stale.
    q9 = f"""SELECT pt.id AS point_id, pg.id AS polygon_id
FROM {pv.qualified} pt
JOIN {tv.qualified} pg ON ST_Contains(pg.{g}, pt.{g})
WHERE pt.categoria = %(cat_point)s AND pt.{g} && {env} AND pg.categoria = %(cat_poly)s
ORDER BY 1, 2"""
    return {
        "Q2": Rewrite(
            f"{on_view} AND {by_id}",
            f"SELECT id, nome, categoria, ST_AsGeoJSON(ST_Simplify({g}, 0.0001)) "
            f"FROM {tv.qualified} WHERE {g} && {env} ORDER BY {BY_ID} LIMIT 500",
        ),
        "Q7": Rewrite(on_view, base["Q7"].replace(s.qualified_table, tv.qualified)),
        "Q6": Rewrite(
            f"{on_view} AND {by_id}",
            f"SELECT id, nome, categoria, ST_Distance({geog}, {pt}::geography) AS metros "
            f"FROM {tv.qualified} ORDER BY {g} <-> {pt}, {BY_ID} LIMIT %(k)s",
        ),
        "Q9": Rewrite(
            f"{_populated(pv.qualified)} AND {_populated(tv.qualified)} AND {no_rls}", q9
        ),
        # the tile RPC's body on the view (geometry already in EPSG:3857), as a statement
        "Q10": Rewrite(on_view, tile_body(s).replace("(z, x, y)", "(%(z)s, %(x)s, %(y)s)")),
    }


# ------------------------------------------------------------------ what the unit declares


def promises(s: Settings) -> list[Promise]:
    names = ", ".join(f"'{v.name}'" for v in views(s))
    mc = monthly(s)
    # checked where the counts exist (an earlier opt5 had a view; drift names a missing
    # table) and the table's rows are all the reader's
    counted = (
        f"SELECT to_regclass({literal(mc.qualified)}) IS NOT NULL AND NOT relrowsecurity "
        f"FROM pg_class WHERE oid = {literal(s.qualified_table)}::regclass"
    )
    return [
        Promise(
            "tile/points materialized views populated with unique indexes",
            f"SELECT count(*) = {len(views(s))} FROM pg_matviews m JOIN pg_class c "
            f"ON c.relname = m.matviewname AND c.relnamespace = '{s.own_schema}'::regnamespace "
            f"WHERE m.schemaname = '{s.own_schema}' AND m.matviewname IN ({names}) "
            "AND m.ispopulated AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid "
            "AND i.indisunique)",
        ),
        Promise(
            f"{mc.qualified} holds the table's counts per month and category, kept by a "
            "trigger on each write (checked while the table has row level security off)",
            f"SELECT {mc.kept_sql()}",
            counted,
        ),
        Promise(
            "refresh jobs scheduled with pg_cron (pg_cron is installed in this database)",
            f"SELECT count(*) = {len(jobs(s))} FROM cron.job WHERE jobname = ANY "
            f"(ARRAY[{', '.join(literal(j.name) for j in jobs(s))}])",
            f"SELECT {cron.INSTALLED}",
        ),
    ]


def creates(s: Settings) -> list[Creates]:
    """The two views and their indexes, the counts, their key and trigger function."""
    mc = monthly(s)
    return [
        *(c for v in views(s) for c in creates_matview(v)),
        creates_relation(mc.qualified, "the monthly counts (kept by each write)"),
        creates_relation(f"{mc.schema}.{mc.key}", f"the key of {mc.qualified}"),
        creates_function(mc.sync_function, "the monthly counts' trigger"),
    ]


def reference(conn, s: Settings, direction: str, scratch: str) -> Reference:
    """Up: btree_gist where missing, the two views with their indexes and the counts with
    their triggers, rolled back. Down: the same views built in ``scratch`` from the real
    table, dropped and committed."""
    if direction == "up":
        made = (x for v in views(s) for x in v.create_sql())
        return Reference((btree_gist_sql(), *made, *monthly(s).build_sql()))
    copies = [replace(v, schema=scratch) for v in views(s)]
    return Reference(
        tuple(v.drop_sql() for v in reversed(copies)),
        setup=tuple(x for v in copies for x in v.create_sql()),
        committed=True,
    )
