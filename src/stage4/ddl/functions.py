"""The app's RPC functions (Q4 search, Q8 monthly counts, Q10 vector tile) as data.

A revision that re-points a function keeps the previous body as data and
restores it on downgrade (the alembic_utils way): signatures never change, so
PostgREST clients see the same interface. Every function is SECURITY INVOKER
with a fixed search_path, so RLS applies to the caller and nothing can be
shadowed through the path.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from stage4.config import Settings
from stage4.ddl import literal
from stage4.queries import base_sql

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


_BBOX = (
    "min_lon double precision, min_lat double precision, "
    "max_lon double precision, max_lat double precision"
)
_POINT = "lon double precision, lat double precision"
_FEATURE = "id bigint, nome text, categoria text"


@dataclass(frozen=True)
class Read:
    """One of the app's geo reads as an RPC: its name, arguments (in call order) and rows."""

    name: str
    args: str
    returns: str


def _reads(s: Settings) -> dict[str, Read]:
    return {
        "Q1": Read("resumo_janela", _BBOX, "TABLE(total bigint, area_m2 double precision)"),
        "Q2": Read("geometrias_janela", _BBOX, f"TABLE({_FEATURE}, geojson text)"),
        "Q3": Read(
            "area_por_categoria",
            _BBOX,
            "TABLE(categoria text, total bigint, area_m2 double precision)",
        ),
        "Q5": Read(
            "geometrias_periodo",
            f"d0 date, d1 date, {_BBOX}",
            f"TABLE({_FEATURE}, {s.time_column} date)",
        ),
        "Q6": Read(
            "mais_proximas", f"{_POINT}, k integer", f"TABLE({_FEATURE}, metros double precision)"
        ),
        "Q7": Read("dentro_do_raio", f"{_POINT}, radius_m double precision", f"TABLE({_FEATURE})"),
        "Q9": Read(
            "pontos_em_poligonos",
            f"cat_point text, cat_poly text, {_BBOX}",
            "TABLE(point_id bigint, polygon_id bigint)",
        ),
    }


# A body planned at each call with its arguments, as the app's SQL was when it sent it
# itself: PostgreSQL 15 plans a SQL function's body once without them (a generic plan that
# guesses a bbox's rows, a category's), and a SQL function with a fixed search_path is
# never inlined into the caller's query.
PLANNED_PER_CALL = "plan_cache_mode = force_custom_plan"
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


_HEAD, _TAIL = "#variable_conflict use_column\nBEGIN\nRETURN QUERY\n", ";\nEND"


def per_call(sql: str) -> str:
    """A query as a PL/pgSQL body returning its rows, planned per call; ``%(name)s``
    placeholders become the function's arguments of that name. A column and an output
    column of the same name: the column wins, as in the query."""
    query = _PLACEHOLDER.sub(lambda m: m.group(1), sql.strip())
    return f"{_HEAD}{query}{_TAIL}"


def per_call_if(condition: str, sql: str, otherwise: str) -> str:
    """``per_call`` of ``sql`` where ``condition`` (SQL boolean) holds at the call, else of
    ``otherwise``: a structure the caller may not read falls back to the query that reads
    the table."""
    sql, otherwise = (_PLACEHOLDER.sub(lambda m: m.group(1), q.strip()) for q in (sql, otherwise))
    return (
        f"#variable_conflict use_column\nBEGIN\nIF {condition} THEN\nRETURN QUERY\n{sql};\n"
        f"ELSE\nRETURN QUERY\n{otherwise};\nEND IF;\nEND"
    )


def query_of(body: str, args: str, given: Collection[str] | None = None) -> str | None:
    """The query a ``per_call`` body runs, its arguments as ``%(name)s`` placeholders again
    (what EXPLAIN can show inside the call), those with a default that the call leaves out
    (not in ``given``) as their default; None for a body of another form."""
    body = body.strip()
    if not (body.startswith(_HEAD) and body.endswith(_TAIL)):
        return None
    query = body[len(_HEAD) : -len(_TAIL)].replace("%", "%%")
    for arg in (a.strip() for a in args.split(",") if a.strip()):
        name, default = arg.split()[0], re.search(r"(?i)\bDEFAULT\s+(.+)$", arg)
        left_out = given is not None and name not in given and default
        value = f"({default.group(1)})" if left_out else f"%({name})s"
        query = re.sub(rf"(?<![\w.])(?<!%\(){name}(?!\w)", value, query)
    return query


# A body whose plan PostgreSQL may keep for the session (its default for prepared
# statements: a generic plan once it costs no more than the custom ones): what a read
# without a date filter wants on a partitioned table, where planning every partition on
# every call costs more than the plan saves.
CACHED_PLANS = "plan_cache_mode = auto"


def read(
    s: Settings, qid: str, sql: str | None = None, planning: str = PLANNED_PER_CALL
) -> Function:
    """The RPC of geo read ``qid`` (Q1–Q3, Q5–Q7, Q9), running ``sql`` (default: the app's
    query as ``stage4.queries.base_sql`` gives it, the body ``schema`` creates), planned as
    ``planning`` says (``PLANNED_PER_CALL`` or ``CACHED_PLANS``)."""
    r = _reads(s)[qid]
    body = per_call(sql if sql is not None else base_sql(s)[qid])
    return Function(s.schema, r.name, r.args, r.returns, body, language="plpgsql",
                    settings=(planning,))  # fmt: skip


def read_ids() -> tuple[str, ...]:
    """The queries served by ``read`` RPCs."""
    return ("Q1", "Q2", "Q3", "Q5", "Q6", "Q7", "Q9")


def call_sql(fn: Function) -> str:
    """How the app calls ``fn`` (PostgREST's ``rpc()``): every argument by placeholder."""
    names = [a.split()[0] for a in fn.args.split(",") if a.strip()]
    call = f"{fn.schema}.{fn.name}({', '.join(f'%({n})s' for n in names)})"
    return f"SELECT * FROM {call}" if fn.returns.startswith("TABLE") else f"SELECT {call}"


def baseline(s: Settings) -> list[Function]:
    """The RPC functions as revision ``schema`` creates them."""
    return [search(s), monthly_counts(s), tile(s), *(read(s, q) for q in read_ids())]


def same_name_sql(fn: Function) -> str:
    """The signatures of other functions named like ``fn`` in its schema (an overload the app
    has): a row each."""
    return (
        f"SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname = '{fn.name}' "
        f"AND p.pronamespace = '{fn.schema}'::regnamespace "
        f"AND p.oid IS DISTINCT FROM to_regprocedure('{fn.identity}') ORDER BY 1"
    )


def exists_sql(fn: Function) -> str:
    """A query returning a row when the function (by identity) exists."""
    return (
        f"SELECT to_regprocedure('{fn.identity}')::oid AS oid "
        f"WHERE to_regprocedure('{fn.identity}') IS NOT NULL"
    )


def live_body(bind, identity: str) -> str | None:
    """The body (prosrc) of a function by identity, stripped; None when it does not exist."""
    src = bind.exec_driver_sql(
        f"SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure('{identity}')"
    ).scalar()
    return None if src is None else src.strip()


# ------------------------------------------------------------------ re-pointing an RPC


def _memo(revision: str) -> str:
    return f"stage4 {revision} re-pointed this function; its previous definition and comment: "


def _is_body_sql(fn: Function) -> str:
    return (
        f"coalesce((SELECT btrim(prosrc, E' \\n') = {literal(fn.body.strip())} FROM pg_proc "
        f"WHERE oid = to_regprocedure({literal(fn.identity)})), false)"
    )


def repoint_sql(base: Function, new: Function, revision: str) -> str:
    """While the live function is ``base`` (the body ``schema`` creates): its definition and
    comment saved in its comment, then ``new`` in its place (same signature). A body of the
    app's own is left alone. One DO block, the same online and in offline ``--sql``."""
    return f"""DO $do$
DECLARE
  fn regprocedure := to_regprocedure({literal(base.identity)});
  prior jsonb;
BEGIN
  IF {_is_body_sql(base)} THEN
    prior := jsonb_build_object('definition', pg_get_functiondef(fn),
                                'comment', obj_description(fn, 'pg_proc'));
    EXECUTE {literal(new.create_sql())};
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', fn, {literal(_memo(revision))} || prior::text);
  END IF;
END
$do$"""


def restore_sql(fn: Function, revision: str) -> str:
    """The definition and comment ``repoint_sql`` saved, back; nothing when it saved none."""
    memo = _memo(revision)
    return f"""DO $do$
DECLARE
  fn regprocedure := to_regprocedure({literal(fn.identity)});
  note text := obj_description(to_regprocedure({literal(fn.identity)}), 'pg_proc');
  saved jsonb;
BEGIN
  IF position({literal(memo)} IN coalesce(note, '')) = 1 THEN
    saved := substr(note, length({literal(memo)}) + 1)::jsonb;
    EXECUTE saved->>'definition';
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', fn, saved->>'comment');
  END IF;
END
$do$"""


def repoint_reads_sql(s: Settings, repoints: dict[str, Function], revision: str) -> list[str]:
    """Each geo read of ``repoints`` (qid -> new body) re-pointed where its body is ``schema``'s."""
    return [repoint_sql(read(s, q), fn, revision) for q, fn in repoints.items()]


def restore_reads_sql(repoints: dict[str, Function], revision: str) -> list[str]:
    """Each RPC of ``repoints`` back to the definition it had where ``revision`` re-pointed it."""
    return [restore_sql(fn, revision) for fn in repoints.values()]
