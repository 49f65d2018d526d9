"""The app's RPC functions (Q4 search, Q8 monthly counts, Q10 vector tile) as data.

A revision that re-points a function keeps the previous body as data and
restores it on downgrade (the alembic_utils way): signatures never change, so
PostgREST clients see the same interface. Every function is SECURITY INVOKER
with a fixed search_path, so RLS applies to the caller and nothing can be
shadowed through the path.
"""

from __future__ import annotations

from dataclasses import dataclass

from stage4.config import Settings

SEARCH_PATH = "public, extensions, pg_temp"


@dataclass(frozen=True)
class Function:
    """One SQL function: name, argument list, return type and a body of SQL."""

    schema: str
    name: str
    args: str
    returns: str
    body: str
    volatility: str = "STABLE"
    language: str = "sql"
    settings: tuple[str, ...] = ()  # more ``SET name = value`` for the function's calls

    @property
    def identity(self) -> str:
        """``schema.name(types)``: what DROP/COMMENT/GRANT need."""
        types = ", ".join(
            " ".join(a.split("DEFAULT")[0].split()[1:]) for a in self.args.split(",") if a.strip()
        )
        return f"{self.schema}.{self.name}({types})"

    def create_sql(self) -> str:
        return (
            f"CREATE OR REPLACE FUNCTION {self.schema}.{self.name}({self.args})\n"
            f"RETURNS {self.returns}\nLANGUAGE {self.language} {self.volatility} PARALLEL SAFE\n"
            f"SECURITY INVOKER\nSET search_path = {SEARCH_PATH}\n"
            + "".join(f"SET {setting}\n" for setting in self.settings)
            + f"AS $fn$\n{self.body.strip()}\n$fn$"
        )

    def drop_sql(self) -> str:
        return f"DROP FUNCTION IF EXISTS {self.identity}"


def tsv(s: Settings, alias: str | None = "g") -> str:
    """Q4's tsvector expression; opt3 indexes it unqualified (``alias=None``), so the search
    body matches its index only while both come from here."""
    p = f"{alias}." if alias else ""
    return f"to_tsvector('portuguese', coalesce({p}nome, '') || ' ' || coalesce({p}descricao, ''))"


def search(s: Settings, source: str | None = None) -> Function:
    """Q4: text search inside a bbox, top N by rank (ties by id)."""
    body = f"""
SELECT g.id, g.nome, g.categoria,
       ts_rank({tsv(s)}, plainto_tsquery('portuguese', termo)) AS rank
FROM {s.qualified_table} g
WHERE g.{s.geometry_column} && ST_MakeEnvelope(min_lon, min_lat, max_lon, max_lat, {s.srid})
  AND {tsv(s)} @@ plainto_tsquery('portuguese', termo)
ORDER BY rank DESC, g.id
LIMIT limite"""
    return Function(
        s.schema,
        "buscar_geometrias",
        "termo text, min_lon double precision, min_lat double precision, "
        "max_lon double precision, max_lat double precision, limite integer DEFAULT 20",
        "TABLE(id bigint, nome text, categoria text, rank real)",
        source or body,
    )


def monthly_counts(s: Settings, source: str | None = None) -> Function:
    """Q8: features per month and category in one year."""
    t = s.time_column
    body = f"""
SELECT date_trunc('month', g.{t})::date AS mes, g.categoria, count(*) AS total
FROM {s.qualified_table} g
WHERE g.{t} >= make_date(ano, 1, 1) AND g.{t} < make_date(ano + 1, 1, 1)
GROUP BY 1, 2
ORDER BY 1, 2"""
    return Function(
        s.schema,
        "contagem_mensal",
        "ano integer",
        "TABLE(mes date, categoria text, total bigint)",
        source or body,
    )


def tile(s: Settings, source: str | None = None) -> Function:
    """Q10: a Mapbox vector tile z/x/y of every feature (id, nome, categoria)."""
    gc = s.geometry_column
    body = f"""
SELECT ST_AsMVT(m.*, 'geometrias', 4096, 'geom', 'id')
FROM (
  SELECT g.id, g.nome, g.categoria,
         ST_AsMVTGeom(ST_Transform(g.{gc}, 3857), ST_TileEnvelope(z, x, y), 4096, 64, true) AS geom
  FROM {s.qualified_table} g
  WHERE g.{gc} && ST_Transform(ST_TileEnvelope(z, x, y), {s.srid})
  ORDER BY g.id
) m
WHERE m.geom IS NOT NULL"""
    return Function(
        s.schema, "tile_mvt", "z integer, x integer, y integer", "bytea", source or body
    )


def baseline(s: Settings) -> list[Function]:
    """The RPC functions as revision ``schema`` creates them."""
    return [search(s), monthly_counts(s), tile(s)]


def exists_sql(fn: Function) -> str:
    """A query returning a row when the function (by identity) exists."""
    return f"SELECT to_regprocedure('{fn.identity}')::oid AS oid WHERE to_regprocedure('{fn.identity}') IS NOT NULL"


def live_body(bind, identity: str) -> str | None:
    """The body (prosrc) of a function by identity, stripped; None when it does not exist."""
    src = bind.exec_driver_sql(
        f"SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure('{identity}')"
    ).scalar()
    return None if src is None else src.strip()
