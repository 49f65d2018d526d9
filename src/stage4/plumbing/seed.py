"""Deterministic synthetic BIBLIOTECA features, generated set-based inside PostgreSQL.

Every pseudo-random number is ``hashint8extended(i, seed*1000 + k)`` of the row index
``i`` (never ``random()``), so a row depends only on (i, seed): the same (features, seed)
writes the same rows whatever the plan or batch size, and ``content_hash`` proves it.
Coordinates are snapped to 1e-7 degrees so float noise cannot leak into the hash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import psycopg
from psycopg import sql

from stage4.config import Settings
from stage4.errors import ConfigError, Stage4Error

# Dense centres of the São Paulo metro area (lon, lat, sigma in degrees), densest first;
# 75 % of features fall around them, the rest uniformly over BBOX.
CENTRES = [
    (-46.6339, -23.5505, 0.012),  # Sé
    (-46.6555, -23.5614, 0.010),  # Paulista
    (-46.6920, -23.5670, 0.015),  # Pinheiros
    (-46.6285, -23.5022, 0.020),  # Santana
    (-46.7095, -23.6530, 0.025),  # Santo Amaro
    (-46.5333, -23.4538, 0.030),  # Guarulhos
    (-46.5322, -23.6639, 0.030),  # Santo André
    (-46.7917, -23.5329, 0.025),  # Osasco
    (-46.4570, -23.5400, 0.035),  # Itaquera
]
BBOX = (-47.2, -24.0, -46.2, -23.3)
MX, MY = 102_000.0, 110_800.0  # metres per degree of lon / lat at 23.6° S

# category -> (shape, weight within its geometry type, size range in metres, name labels)
# The tables below are data: a few names to a line (the formatter skips them), not one per line.
CATEGORIES = {
    "escola": ("point", 3, (0, 0), ["Escola Estadual", "Escola Municipal", "Escola Técnica"]),
    "biblioteca": ("point", 3, (0, 0), ["Biblioteca Municipal", "Biblioteca Comunitária",
                                        "Biblioteca Pública", "Biblioteca Infantil"]),
    "hospital": ("point", 1, (0, 0), ["Hospital Municipal", "Hospital Geral", "Hospital Estadual"]),
    "museu": ("point", 1, (0, 0), ["Museu Histórico", "Museu de Arte", "Museu da Memória"]),
    "estacao": ("point", 2, (0, 0), ["Estação", "Terminal"]),
    "rio": ("line", 3, (150, 400), ["Rio", "Córrego", "Ribeirão"]),
    "rodovia": ("line", 3, (200, 500), ["Rodovia", "Avenida", "Marginal"]),
    "ciclovia": ("line", 4, (80, 250), ["Ciclovia", "Ciclofaixa"]),
    "lote": ("quad", 4, (15, 60), ["Lote", "Quadra"]),
    "bairro": ("quad", 2, (300, 900), ["Jardim", "Vila", "Parque"]),
    "praca": ("disc", 2, (20, 80), ["Praça", "Largo"]),
    "parque": ("disc", 2, (80, 400), ["Parque Municipal", "Parque Ecológico", "Parque Linear"]),
}  # fmt: skip
PROPER = ["Mário de Andrade", "Monteiro Lobato", "Cecília Meireles", "Oswald de Andrade",
          "Tarsila do Amaral", "Machado de Assis", "Clarice Lispector", "Paulo Freire",
          "Anita Malfatti", "Carolina Maria de Jesus", "Ibirapuera", "Tietê", "Pinheiros",
          "Tamanduateí", "Aricanduva", "Paulista", "da Luz", "da Sé", "Vila Mariana", "Butantã",
          "Mooca", "Penha", "Lapa", "Santana", "Ipiranga", "Jabaquara", "Consolação",
          "Bela Vista", "Liberdade", "Perdizes", "Santo Amaro", "Anhangabaú"]  # fmt: skip
# ~60 searchable words; descriptions run noun adjective link noun adjective link noun adjective.
NOUNS = ["biblioteca", "acervo", "leitura", "livros", "escola", "museu", "praça", "parque",
         "jardim", "rio", "ponte", "estação", "bairro", "centro", "comunidade", "cultura",
         "história", "arte", "patrimônio", "memória", "arquitetura", "espaço", "área", "sala",
         "oficina", "exposição", "coleção", "arquivo", "mapa", "trilha"]  # fmt: skip
ADJECTIVES = ["histórico", "municipal", "comunitária", "pública", "estadual", "antigo", "moderno",
              "central", "cultural", "infantil", "regional", "tombado", "restaurado", "acessível",
              "arborizado", "amplo", "popular", "digital", "raro", "urbano", "verde",
              "tradicional", "ecológico", "educativo"]  # fmt: skip
LINKS = ["de", "com", "para", "e", "sobre", "sem"]
FONTES = ["GeoSampa", "IBGE", "OpenStreetMap", "Prefeitura de São Paulo", "CPTM", "Censo Escolar"]
TAGS = ["acessivel", "wifi", "24h", "tombado", "reforma", "gratuito", "infantil", "noturno"]


@dataclass(frozen=True)
class SeedResult:
    inserted: int
    total: int
    seconds: float


def _arr(items: list[str]) -> str:
    return "ARRAY[" + ",".join("'" + w.replace("'", "''") + "'" for w in items) + "]::text[]"


def _uniform(seed: int):
    """``u(k)``: the SQL of row i's k-th uniform draw in [0, 1), 48 bits of a hash of (i, seed)."""

    def u(k: int) -> str:
        return f"((hashint8extended(i, {int(seed) * 1000 + k}) & 281474976710655)::float8 / 281474976710656.0)"

    return u


def _cats(*kinds: str) -> str:
    """The categories of these geometry kinds, as an SQL list of literals."""
    return ",".join(f"'{c}'" for c, v in CATEGORIES.items() if v[0] in kinds)


def _by_cat(values: dict[str, str]) -> str:
    return "CASE cat " + " ".join(f"WHEN '{c}' THEN {v}" for c, v in values.items()) + " END"


def _geometry_sql(s: Settings) -> str:
    """Row i's geometry from its category, centre (x, y), size and shape draws: a point, a
    line (a walk of 1-4 segments of length ``size``, turning up to ±0.5 rad each step), a
    rotated rectangle or a disc."""
    heading = [f"h{j}" for j in range(4)]
    vertex = [
        f"ST_MakePoint(x + size / {MX} * ({' + '.join(f'cos({h})' for h in heading[:k]) or '0'}), "
        f"y + size / {MY} * ({' + '.join(f'sin({h})' for h in heading[:k]) or '0'}))"
        for k in range(5)
    ]
    corner = [
        f"ST_MakePoint(x + ({a} * size * cos(phi) - {b} * size * asp * sin(phi)) / {MX}, "
        f"y + ({a} * size * sin(phi) + {b} * size * asp * cos(phi)) / {MY})"
        for a, b in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5))
    ]
    geom = (
        f"ST_SetSRID(ST_SnapToGrid(CASE WHEN cat IN ({_cats('point')}) THEN ST_MakePoint(x, y) "
        f"WHEN cat IN ({_cats('line')}) THEN ST_MakeLine((ARRAY[{','.join(vertex)}])[1:nv]) "
        f"WHEN cat IN ({_cats('quad')}) THEN ST_MakePolygon(ST_MakeLine(ARRAY[{','.join(corner)}])) "
        f"ELSE ST_Buffer(ST_MakePoint(x, y), size / {MY}, 'quad_segs=4') END, 1e-7), 4326)"
    )
    return geom if s.srid == 4326 else f"ST_Transform({geom}, {int(s.srid)})"


def _insert_sql(conn: psycopg.Connection, s: Settings, seed: int) -> str:
    """One INSERT … SELECT over generate_series(%(lo)s, %(hi)s): row i depends on (i, seed) only."""
    u = _uniform(seed)

    def pick(items: list[str], k: int) -> str:
        return f"({_arr(items)})[1 + floor({u(k)} * {len(items)})::int]"

    shapes = {
        kind: [c for c, v in CATEGORIES.items() if v[0] == kind for _ in range(v[1])]
        for kind in ("point", "line", "quad", "disc")
    }
    centre = lambda j: "(ARRAY[" + ",".join(str(c[j]) for c in CENTRES) + "]::float8[])[c]"  # noqa: E731
    gauss = f"sqrt(-2 * ln(1 - {u(4)}))"
    x0, y0, x1, y1 = BBOX
    first, last = s.first_year, s.last_year
    spans = [
        (date(first - 5, 1, 1), date(first, 1, 1)),
        (date(last + 1, 1, 1), date(last + 5, 1, 1)),
        (date(first, 1, 1), date(last + 1, 1, 1)),
    ]
    day = [f"date '{a}' + floor({u(31)} * {(b - a).days})::int" for a, b in spans]
    geom = _geometry_sql(s)
    pattern = [NOUNS, ADJECTIVES, LINKS, NOUNS, ADJECTIVES, LINKS, NOUNS, ADJECTIVES]
    words = f"(ARRAY[{','.join(pick(p, 40 + j) for j, p in enumerate(pattern))}])[1:nw]"
    labels = _by_cat({c: pick(v[3], 20) for c, v in CATEGORIES.items()})
    ident = lambda name: sql.Identifier(name).as_string(conn)  # noqa: E731
    return f"""
INSERT INTO {sql.Identifier(s.schema, s.table).as_string(conn)}
    (id, nome, categoria, {ident(s.time_column)}, {ident(s.geometry_column)}, propriedades,
     descricao, created_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT i,
    {labels} || CASE WHEN cat = 'lote' THEN ' ' || (1 + floor({u(21)} * 999))::int ELSE '' END
        || ' ' || {pick(PROPER, 22)},
    cat, d, {geom},
    jsonb_build_object('fonte', {pick(FONTES, 23)},
        'populacao', (CASE WHEN cat = 'bairro' THEN 2000 + floor({u(24)} * {u(24)} * 78000)
                      WHEN cat IN ({_cats("line")}) THEN 0 ELSE floor({u(24)} * 5000) END)::int,
        'tags', to_jsonb(({_arr(TAGS)} || {_arr(TAGS)})[tb + 1 : tb + nt]),
        'versao', 1 + floor({u(25)} * 5)::int),
    CASE WHEN {u(26)} >= 0.04 THEN upper(left(phrase, 1)) || substr(phrase, 2) || '.' END,
    created, created + CASE WHEN {u(33)} < 0.5 THEN interval '0' ELSE
        floor({u(34)} * 31536000)::int * interval '1 second' END
FROM (
    SELECT i, cat, d, x, y, size, nv, tb, nt, asp, phi, h0, h1, h2, h3,
        array_to_string({words}, ' ') AS phrase,
        (d + floor({u(32)} * 259200)::int * interval '1 second') AT TIME ZONE 'UTC' AS created
    FROM (
        SELECT i,
            CASE WHEN {u(1)} < 0.6 THEN {pick(shapes["point"], 2)}
                 WHEN {u(1)} < 0.8 THEN {pick(shapes["line"], 2)}
                 ELSE {pick(shapes["quad"] + shapes["disc"], 2)} END AS cat,
            least({x1}, greatest({x0}, CASE WHEN {u(3)} < 0.75
                 THEN {centre(0)} + {centre(2)} * 1.1 * {gauss} * cos(2 * pi() * {u(5)})
                 ELSE {x0} + {x1 - x0} * {u(5)} END)) AS x,
            least({y1}, greatest({y0}, CASE WHEN {u(3)} < 0.75
                 THEN {centre(1)} + {centre(2)} * {gauss} * sin(2 * pi() * {u(5)})
                 ELSE {y0} + {y1 - y0} * {u(4)} END)) AS y,
            CASE WHEN {u(30)} < 0.01 THEN {day[0]} WHEN {u(30)} < 0.02 THEN {day[1]}
                 ELSE {day[2]} END AS d,
            {u(10)} AS size_u, 2 + floor({u(11)} * 4)::int AS nv,
            (ARRAY[4, 5, 7, 8])[1 + floor({u(27)} * 4)::int] AS nw,
            floor({u(28)} * {len(TAGS)})::int AS tb, 1 + floor({u(29)} * 3)::int AS nt,
            0.5 + {u(16)} AS asp, pi() * {u(17)} AS phi,
            2 * pi() * {u(12)} AS h0, 2 * pi() * {u(12)} + {u(13)} - 0.5 AS h1,
            2 * pi() * {u(12)} + {u(13)} + {u(14)} - 1 AS h2,
            2 * pi() * {u(12)} + {u(13)} + {u(14)} + {u(15)} - 1.5 AS h3
        FROM (SELECT i, 1 + floor(power({u(6)}, 1.6) * {len(CENTRES)})::int AS c
              FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i) g
    ) a
    CROSS JOIN LATERAL (SELECT {
        _by_cat({c: f"{v[2][0]} + {v[2][1] - v[2][0]} * size_u" for c, v in CATEGORIES.items()})
    } AS size) z
    OFFSET 0
) b
"""


def _droppable_indexes(conn: psycopg.Connection, s: Settings) -> list[tuple[str, str, str | None]]:
    """Plain secondary indexes (name, definition, comment) we may rebuild instead of maintain.

    Never the primary key, unique or constraint indexes, nor ones with a tablespace,
    replica-identity or CLUSTER role: pg_get_indexdef recreates the rest exactly.
    """
    return conn.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid),"
        " obj_description(i.indexrelid, 'pg_class')"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass AND i.indisvalid AND NOT i.indisunique"
        " AND NOT i.indisprimary AND NOT i.indisreplident AND NOT i.indisclustered"
        " AND c.reltablespace = 0"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
        " ORDER BY c.relname",
        (s.qualified_table,),
    ).fetchall()


def seed(
    conn: psycopg.Connection,
    s: Settings,
    features: int = 251,
    seed: int = 42,
    append: bool = False,
    batch: int = 50_000,
    progress: Callable[[int, int], None] | None = None,
) -> SeedResult:
    """Insert ``features`` synthetic rows in one transaction (all or nothing).

    Refuses a table that holds rows unless ``append``; appended rows take the ids after
    the current maximum, so they are new yet still deterministic. ``progress(done, total)``
    is called after each batch.
    """
    if features < 0 or batch < 1:
        raise ConfigError("features must be >= 0 and batch >= 1")
    started = time.perf_counter()
    table = sql.Identifier(s.schema, s.table)
    with conn.transaction():
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (s.qualified_table,)
        ).fetchone()
        if kind is None:
            raise Stage4Error(
                f"{s.qualified_table} does not exist: run `stage4 upgrade --to schema` "
                "(or `alembic upgrade schema`) first"
            )
        # Self-conflicting lock: two concurrent seeds cannot pick the same ids.
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table))
        count, top = conn.execute(
            sql.SQL("SELECT count(*), coalesce(max(id), 0) FROM {}").format(table)
        ).fetchone()
        if count and not append:
            raise Stage4Error(
                f"{s.qualified_table} already holds {count} rows; pass --append to add more"
            )
        # Into an empty plain table, building the secondary indexes once at the end is
        # faster than maintaining them row by row (the GiST above all) and gives the same sorted GiST build the migrations' CREATE INDEX
        # gives. The rebuilt indexes are identical: same names, same pg_get_indexdef.
        rebuild = _droppable_indexes(conn, s) if count == 0 and kind[0] == "r" else []
        for name, _, _ in rebuild:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(s.schema, name)))
        insert = _insert_sql(conn, s, seed)
        start = top + 1
        for lo in range(start, start + features, batch):
            hi = min(lo + batch, start + features) - 1
            conn.execute(insert, {"lo": lo, "hi": hi})
            if progress:
                progress(hi - start + 1, features)
        for name, definition, comment in rebuild:
            conn.execute(definition)
            if comment is not None:
                conn.execute(
                    sql.SQL("COMMENT ON INDEX {} IS {}").format(
                        sql.Identifier(s.schema, name), sql.Literal(comment)
                    )
                )
        conn.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence(%s, 'id'), max(id)) FROM {}").format(
                table
            ),
            (s.qualified_table,),
        )
        conn.execute(sql.SQL("ANALYZE {}").format(table))
    return SeedResult(features, count + features, time.perf_counter() - started)


def content_hash(conn: psycopg.Connection, s: Settings) -> str:
    """md5 over every row: equal hashes mean equal content, whatever the physical layout.

    Each row's md5 covers its id, so the rows can be combined order-independently: the
    sum of their first 64 bits is a parallel aggregate, faster than
    ``string_agg(... ORDER BY id)``, and needs no sort on a partitioned table. Only the reference columns count (geometry as EWKB hex, date and
    times as numbers so DateStyle and TimeZone do not matter): a migration that adds
    derived columns or partitions the table keeps the hash.
    """
    row = sql.SQL(
        "md5(concat_ws(E'\\x1f', id, nome, categoria, {t} - date '2000-01-01',"
        " encode(ST_AsEWKB({g}), 'hex'), propriedades, descricao IS NULL, descricao,"
        " extract(epoch FROM created_at), extract(epoch FROM updated_at)))"
    ).format(g=sql.Identifier(s.geometry_column), t=sql.Identifier(s.time_column))
    query = sql.SQL(
        "SELECT md5(count(*) || ':' || coalesce(sum(('x' || left({row}, 16))::bit(64)::bigint"
        "::numeric), 0)) FROM {table}"
    ).format(row=row, table=sql.Identifier(s.schema, s.table))
    return conn.execute(query).fetchone()[0]


def existing_rows(url: str, s: Settings) -> int:
    """Rows already in the table (0 when it is absent): lets `seed --if-empty` be re-run."""
    from stage4.plumbing.db import connect

    with connect(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (s.qualified_table,)).fetchone()[0] is None:
            return 0
        return conn.execute(f"SELECT count(*) FROM {s.qualified_table}").fetchone()[0]
