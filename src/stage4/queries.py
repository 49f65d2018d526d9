"""The app's queries Q1–Q10 and its writes W1–W3 as it sends them: one text per statement.

The workload (``stage4.measure.workload``) replays them, and an optimisation unit's ``rewrites``
are built from them where only the relation changes, so a unit can name a query's text
without importing the workload that measures it.
"""

from __future__ import annotations

from stage4.config import Settings


def _env(s: Settings) -> str:
    env = "ST_MakeEnvelope(%(min_lon)s, %(min_lat)s, %(max_lon)s, %(max_lat)s, 4326)"
    return env if s.srid == 4326 else f"ST_Transform({env}, {s.srid})"


def point(s: Settings) -> str:
    """The point argument of Q6 and Q7 in the table's SRID."""
    pt = "ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)"
    return pt if s.srid == 4326 else f"ST_Transform({pt}, {s.srid})"


def geography(s: Settings, alias: str = "") -> str:
    """The geometry column as geography (what Q1, Q3 and Q6 measure in metres)."""
    g = f"{alias}{s.geometry_column}"
    return f"{g}::geography" if s.srid == 4326 else f"ST_Transform({g}, 4326)::geography"


def base_sql(s: Settings) -> dict[str, str]:
    """Q1–Q10 as the app runs them at revision ``schema`` (what every variant must match)."""
    t, g, d, env, pt = s.qualified_table, s.geometry_column, s.time_column, _env(s), point(s)
    geog = geography(s)
    # Degrees of lat/lon that certainly exceed radius_m metres here: 1° of latitude is at
    # least 110.5 km, 1° of longitude at least 110 km * cos(lat) (taken at the far edge).
    lat_deg = "(%(radius_m)s / 110000.0)"
    lon_deg = f"(%(radius_m)s / (110000.0 * cos(radians(least(89.0, abs(%(lat)s) + {lat_deg})))))"
    return {
        "Q1": f"SELECT count(*), sum(ST_Area({geog})) FROM {t} WHERE {g} && {env}",
        "Q2": f"SELECT id, nome, categoria, ST_AsGeoJSON(ST_Simplify({g}, 0.0001)) "
        f"FROM {t} WHERE {g} && {env} ORDER BY id LIMIT 500",
        "Q3": f"SELECT categoria, count(*), sum(ST_Area({geog})) FROM {t} "
        f"WHERE ST_Intersects({g}, {env}) GROUP BY categoria ORDER BY categoria",
        "Q4": f"SELECT * FROM {s.schema}.buscar_geometrias(%(termo)s, %(min_lon)s, %(min_lat)s, "
        "%(max_lon)s, %(max_lat)s, 20)",
        "Q5": f"SELECT id, nome, categoria, {d} FROM {t} "
        f"WHERE {d} >= %(d0)s AND {d} < %(d1)s AND {g} && {env} ORDER BY {d}, id",
        # KNN by the index, then ties at the k-th distance broken by id: a bare
        # `ORDER BY geom <-> pt LIMIT k` returns equidistant features (polygons around
        # the point are all at 0) in index order, which partitioning changes.
        "Q6": f"WITH knn AS (SELECT {g} <-> {pt} AS d FROM {t} ORDER BY {g} <-> {pt} LIMIT %(k)s) "
        f"SELECT id, nome, categoria, ST_Distance({geog}, {pt}::geography) AS metros FROM {t} "
        f"WHERE {g} && ST_Expand({pt}, (SELECT max(d) FROM knn)) "
        f"AND {g} <-> {pt} <= (SELECT max(d) FROM knn) ORDER BY {g} <-> {pt}, id LIMIT %(k)s",
        "Q7": f"SELECT id, nome, categoria FROM {t} "
        f"WHERE {g} && ST_Expand({pt}, {lon_deg}, {lat_deg}) "
        f"AND ST_DWithin({geog}, {pt}::geography, %(radius_m)s) ORDER BY id",
        "Q8": f"SELECT * FROM {s.schema}.contagem_mensal(%(ano)s)",
        # Points in the viewport inside polygons of another category: bounding the points
        # (not only the polygons) keeps it a viewport query; the polygons found necessarily
        # intersect the box.
        "Q9": f"SELECT pt.id AS point_id, pg.id AS polygon_id FROM {t} pt "
        f"JOIN {t} pg ON ST_Contains(pg.{g}, pt.{g}) "
        f"WHERE pt.categoria = %(cat_point)s AND GeometryType(pt.{g}) = 'POINT' "
        f"AND pt.{g} && {env} AND pg.categoria = %(cat_poly)s ORDER BY 1, 2",
        "Q10": f"SELECT {s.schema}.tile_mvt(%(z)s, %(x)s, %(y)s)",
    }


# The app's plain reads, as PostgREST sends them for GET on the table's endpoint (its
# ``pgrst_source`` query with a JSON body), prepared once per connection as PostgREST does:
# judged like Q1–Q10 (an app read), reported beside them. Their names are reserved too.
REST = {"R1": "one feature by id", "R2": "latest page of a category", "R3": "one week, by id"}


def rest_sql(s: Settings) -> dict[str, str]:
    """R1–R3: ``/geometrias?id=eq.…``, ``?categoria=eq.…&order=data_referencia.desc,id.desc
    &limit=20`` and ``?data_referencia=gte.…&data_referencia=lt.…&order=id&limit=100``."""
    t, g, d = s.qualified_table, s.geometry_column, s.time_column
    cols = f"t.id, t.nome, t.categoria, t.{d}, t.descricao, t.{g}"

    def endpoint(rest: str) -> str:
        return (
            f"WITH pgrst_source AS (SELECT {cols} FROM {t} t {rest}) "
            "SELECT pg_catalog.count(_postgrest_t) AS page_total, "
            "coalesce(json_agg(_postgrest_t), '[]')::text AS body "
            "FROM (SELECT * FROM pgrst_source) _postgrest_t"
        )

    return {
        "R1": endpoint("WHERE t.id = %(id)s"),
        "R2": endpoint(
            f"WHERE t.categoria = %(categoria)s ORDER BY t.{d} DESC, t.id DESC LIMIT 20 OFFSET 0"
        ),
        "R3": endpoint(f"WHERE t.{d} >= %(d0)s AND t.{d} < %(d1)s ORDER BY t.id LIMIT 100"),
    }


# The app's writes, as PostgREST sends them for POST, PATCH and DELETE on the table's
# endpoint: measured in transactions that roll back (``stage4.measure.writes``), judged by their own
# margin and floor (``stats.rule``). Their names are reserved, like Q1–Q10's.
WRITES = {"W1": "insert", "W2": "geometry update", "W3": "delete"}


def is_write(qid: str) -> bool:
    """Whether ``qid`` names one of the app's writes (W1–W3)."""
    return qid in WRITES


def write_sql(s: Settings) -> dict[str, str]:
    """W1–W3 as the app sends them. W1 fills the columns the app fills (the rest keep their
    defaults) and names its id: see ``stage4.measure.writes`` for why."""
    t, g, d = s.qualified_table, s.geometry_column, s.time_column
    geom = "ST_GeomFromText(%(wkt)s, 4326)"
    geom = geom if s.srid == 4326 else f"ST_Transform({geom}, {s.srid})"
    return {
        "W1": f"INSERT INTO {t} (id, nome, categoria, {d}, {g}, propriedades, descricao) "
        "OVERRIDING SYSTEM VALUE VALUES (%(id)s, %(nome)s, %(categoria)s, %(dia)s, "
        f"{geom}, %(propriedades)s::jsonb, %(descricao)s)",
        "W2": f"UPDATE {t} SET {g} = {geom} WHERE id = %(id)s",
        "W3": f"DELETE FROM {t} WHERE id = %(id)s",
    }
