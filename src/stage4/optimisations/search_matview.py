"""opt3, the search index behind ``buscar_geometrias``: one materialized view and its RPC body.

The view holds, per feature, the tsvector the baseline function computes on the fly
(``to_tsvector('portuguese', nome || ' ' || descricao)``, same expression), the bbox
(``ST_Envelope(geom)``: ``&&`` on it matches ``&&`` on ``geom`` exactly, since both use
the same float bbox), the centroid, the category and the year, with GIN (tsvector),
GiST (bbox, centroid) and a unique index on the table's key (REFRESH CONCURRENTLY).

RLS: a materialized view has none, and the re-pointed function is SECURITY INVOKER,
so its caller must be able to read the view. The view follows the one grant rule of
``matviews.grants_sql``: while the table has row level security disabled it gets the
table's SELECT grants (a role that reads every row of the table learns nothing new
from it) and the function is re-pointed; it joins every candidate back to the table by
its key and reads ``nome``/``categoria`` live, the view is only the index. With RLS
enabled the view is its owner's only and the function keeps reading the table
(``repoint_sql``): the view would show anon every row's id, date, category, bbox and
lexemes, whatever the policies say.

Staleness: rows deleted since the last refresh disappear at once (the join), rows
added or edited are found with their old text/bbox until the next REFRESH.
"""

from __future__ import annotations

from dataclasses import replace

from stage4.config import Settings
from stage4.ddl import functions, literal
from stage4.ddl.cron import Job
from stage4.ddl.matviews import MatView
from stage4.optimisations.base import Promise, Reference, Rewrite

REVISION = "opt3"
MARK = "-- stage4 opt3: previous definition of buscar_geometrias, restored on downgrade --\n"
SCHEDULE = "7-59/15 * * * *"  # between opt5's refreshes


def view(s: Settings, comment: str | None = None) -> MatView:
    t, g = s.time_column, s.geometry_column
    return MatView(
        schema=s.schema,
        name=f"{s.table}_busca",
        query=f"""
SELECT g.id, g.{t}, g.categoria, extract(year FROM g.{t})::integer AS ano,
       {functions._tsv(s)} AS tsv,
       ST_Envelope(g.{g}) AS bbox,
       ST_Centroid(g.{g}) AS centroid
FROM {s.qualified_table} g""",
        unique=(f"{s.table}_busca_key", f"id, {t}"),
        indexes={
            f"{s.table}_busca_tsv_gin": "USING gin (tsv)",
            f"{s.table}_busca_bbox_gist": "USING gist (bbox)",
            f"{s.table}_busca_centroid_gist": "USING gist (centroid)",
        },
        comment=comment,
    )


def search_on_view(s: Settings) -> functions.Function:
    """Q4 on the view: same signature, same rows; RLS applies through the join."""
    t = s.time_column
    mv = view(s)
    body = f"""
SELECT g.id, g.nome, g.categoria,
       ts_rank(m.tsv, plainto_tsquery('portuguese', termo)) AS rank
FROM {mv.qualified} m
JOIN {s.qualified_table} g ON g.id = m.id AND g.{t} = m.{t}
WHERE m.bbox && ST_MakeEnvelope(min_lon, min_lat, max_lon, max_lat, {s.srid})
  AND m.tsv @@ plainto_tsquery('portuguese', termo)
ORDER BY rank DESC, g.id
LIMIT limite"""
    return functions.search(s, source=body)


def save_previous_sql(s: Settings) -> str:
    """Store the live definition of the search function in the view's comment (one DO block,
    so the same statement works online and in offline ``--sql``)."""
    fn, mv = functions.search(s), view(s)
    return f"""DO $do$
BEGIN
  EXECUTE 'COMMENT ON MATERIALIZED VIEW {mv.qualified} IS '
    || quote_literal({literal(MARK)} || pg_get_functiondef('{fn.identity}'::regprocedure));
END
$do$"""


def restore_previous_sql(s: Settings) -> str:
    """Re-create the saved definition; the baseline one if the comment is gone."""
    fn, mv = functions.search(s), view(s)
    return f"""DO $do$
DECLARE
  saved text := obj_description(to_regclass('{mv.qualified}'), 'pg_class');
BEGIN
  IF saved IS NOT NULL AND position({literal(MARK)} IN saved) = 1 THEN
    EXECUTE substr(saved, length({literal(MARK)}) + 1);
  ELSE
    EXECUTE {literal(fn.create_sql())};
  END IF;
END
$do$"""


def repoint_sql(s: Settings) -> str:
    """Re-point the search RPC at the view, only while the table has RLS disabled (one DO
    block, decided when it runs: online and in offline ``--sql`` alike)."""
    return f"""DO $do$
BEGIN
  IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = '{s.qualified_table}'::regclass) THEN
    EXECUTE {literal(search_on_view(s).create_sql())};
  END IF;
END
$do$"""


def job(s: Settings) -> Job:
    """The pg_cron job refreshing the view."""
    return view(s).job(SCHEDULE)


# ------------------------------------------------------------------ what the unit declares


def views(s: Settings) -> list[MatView]:
    """The views to VACUUM (ANALYZE) once the step has committed."""
    return [view(s)]


def promises(s: Settings) -> list[Promise]:
    mv = view(s)
    return [
        Promise(
            "search materialized view populated, with a unique index",
            f"SELECT m.ispopulated AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = "
            f"'{mv.qualified}'::regclass AND i.indisunique) FROM pg_matviews m "
            f"WHERE m.schemaname = '{mv.schema}' AND m.matviewname = '{mv.name}'",
        ),
        Promise(
            "buscar_geometrias reads the materialized view",
            f"SELECT prosrc LIKE '%{mv.name}%' FROM pg_proc "
            f"WHERE oid = to_regprocedure('{functions.search(s).identity}')",
            # with RLS on, the function keeps reading the table (``repoint_sql``)
            f"SELECT NOT relrowsecurity FROM pg_class WHERE oid = '{s.qualified_table}'::regclass",
        ),
    ]


def rewrites(s: Settings) -> dict[str, Rewrite]:
    """None: Q4 is an RPC, re-pointed by the revision itself."""
    return {}


def reference(conn, s: Settings, direction: str, scratch: str) -> Reference:
    """Up: the view and its indexes, built and rolled back. Down: the same view built in
    ``scratch`` from the real table, then dropped and committed."""
    if direction == "up":
        return Reference(tuple(view(s).create_sql()))
    copy = replace(view(s), schema=scratch)
    return Reference((copy.drop_sql(),), setup=tuple(copy.create_sql()), committed=True)
