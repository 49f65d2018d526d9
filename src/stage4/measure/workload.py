"""The GIS workload Q1–Q10: SQL, seeded parameters drawn from the data, result fingerprints.

One catalogue (``queries``) holds each query's id, title, SQL (or RPC call) and the
parameter generator, so the baseline and every later run replay the same sequence:
parameters depend only on the seed and on the table's *content* (anchor features
are picked by a hash of their id), never on its physical layout, so a partitioned
table yields the same parameters as the plain one.

The SQL is what a competent team's app runs against the baseline schema (the GiST
index on the geometry, btree on the date and category): ``&&`` bbox filters that
use the index, KNN with ``<->``, and a geometry bbox pre-filter in front of the
geography ``ST_DWithin`` so the index serves it too.

The app contract (``CONTRACT``): what is judged is the app as it runs, a Supabase app.
Q1–Q10 are RPCs it calls (``ddl.functions``; the SQL above is their bodies at ``schema``):
a revision may re-point a body, same signature, same results. R1–R3 are the table reads
PostgREST sends, prepared. The app's own files are SQL sent with the same text at every
revision; a revision may change what runs under it (indexes, partitions, settings),
never the text. A faster SQL that needs the app to change its code is a ``Rewrite`` an
optimisation unit offers (``stage4.optimisations``): the bench measures it beside the
app's query ("available if your app adopts it": same results?, speedup) and the gate
never counts it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import itertools
import math
import random
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stage4 import optimisations
from stage4.config import Settings
from stage4.ddl import functions
from stage4.measure import sqltext
from stage4.optimisations import Rewrite
from stage4.queries import REST, WRITES, base_sql, rest_sql

Params = dict[str, Any]
# Parameter sets replayed by the fingerprint pass (fixed, so the fingerprint does not
# depend on --iterations).
FINGERPRINT_SETS = 6
# Anchor features sampled from the data; every parameter is drawn around one of them.
ANCHORS = 256


@dataclass(frozen=True)
class Query:
    """One workload query: what the app asks and how its parameters are drawn.

    ``ordered`` is False where the app does not depend on row order (a GROUP BY it
    re-sorts itself): the fingerprint then hashes the rows sorted, so a variant
    with another (equally valid) order is not called different.
    """

    qid: str
    title: str
    sql: str
    params: Callable[[random.Random, Anchors], Params]
    rpc: bool = False
    ordered: bool = True
    source: str | None = None  # the workload file it was read from (``load_dir``)
    prepared: bool = False  # sent as a prepared statement (PostgREST's table reads)


@dataclass(frozen=True)
class Anchor:
    id: int
    categoria: str
    gtype: str
    lon: float
    lat: float
    day: dt.date
    text: str


@dataclass(frozen=True)
class Anchors:
    """Features sampled from the data (by id hash) and Q9's (polygon, point) category pairs."""

    features: tuple[Anchor, ...]
    containment: tuple[tuple[str, str, float, float], ...]


# ------------------------------------------------------------------ parameters


def _bbox(a: Anchor, rng: random.Random, lo: float, hi: float) -> Params:
    half = rng.uniform(lo, hi)
    aspect = rng.uniform(0.6, 1.0)  # screens are wider than tall
    return {"min_lon": round(a.lon - half, 6), "min_lat": round(a.lat - half * aspect, 6),
            "max_lon": round(a.lon + half, 6), "max_lat": round(a.lat + half * aspect, 6)}  # fmt: skip


def _pick(rng: random.Random, anchors: Anchors) -> Anchor:
    return anchors.features[rng.randrange(len(anchors.features))]


def _viewport(rng: random.Random, an: Anchors) -> Params:
    return _bbox(_pick(rng, an), rng, 0.003, 0.012)


def _region(rng: random.Random, an: Anchors) -> Params:
    return _bbox(_pick(rng, an), rng, 0.01, 0.03)


_WORD = re.compile(r"[^\W\d_]{4,}")
# Portuguese stop words of 4+ letters: plainto_tsquery drops them, so they match nothing.
_STOP = {"para", "sobre", "como", "mais", "pelo", "pela", "pelos", "pelas", "entre", "quando",
         "muito", "também", "esse", "essa", "isso", "este", "esta", "isto", "aquele", "aquela",
         "eles", "elas", "seus", "suas", "será", "depois", "mesmo", "nossa", "nosso", "até"}  # fmt: skip


def _search(rng: random.Random, an: Anchors) -> Params:
    a = _pick(rng, an)
    words = [w for w in _WORD.findall(a.text.lower()) if w not in _STOP] or ["biblioteca"]
    return {"termo": rng.choice(words), **_bbox(a, rng, 0.005, 0.02)}


def _window(rng: random.Random, an: Anchors) -> Params:
    a = _pick(rng, an)
    q0 = dt.date(a.day.year, 3 * ((a.day.month - 1) // 3) + 1, 1)
    q1 = dt.date(q0.year + (q0.month == 10), (q0.month + 2) % 12 + 1, 1)
    return {**_bbox(a, rng, 0.01, 0.04), "d0": q0, "d1": q1}


def _nearest(rng: random.Random, an: Anchors) -> Params:
    a = _pick(rng, an)
    return {"lon": round(a.lon + rng.uniform(-0.002, 0.002), 6),
            "lat": round(a.lat + rng.uniform(-0.002, 0.002), 6), "k": rng.choice([5, 10, 20])}  # fmt: skip


def _radius(rng: random.Random, an: Anchors) -> Params:
    a = _pick(rng, an)
    return {"lon": a.lon, "lat": a.lat, "radius_m": rng.choice([100, 250, 500, 1000])}


def _monthly(rng: random.Random, an: Anchors) -> Params:
    return {"ano": _pick(rng, an).day.year}


def _containment(rng: random.Random, an: Anchors) -> Params:
    if not an.containment:  # no point inside any polygon: the query still runs (empty)
        a = _pick(rng, an)
        return {"cat_poly": a.categoria, "cat_point": a.categoria, **_bbox(a, rng, 0.001, 0.003)}
    cat_poly, cat_point, lon, lat = an.containment[rng.randrange(len(an.containment))]
    half = rng.uniform(0.001, 0.003)
    return {"cat_poly": cat_poly, "cat_point": cat_point,
            "min_lon": round(lon - half, 6), "min_lat": round(lat - half, 6),
            "max_lon": round(lon + half, 6), "max_lat": round(lat + half, 6)}  # fmt: skip


def _tile(rng: random.Random, an: Anchors) -> Params:
    a = _pick(rng, an)
    z = rng.choice([14, 15, 16])
    n = 2**z
    lat = math.radians(max(-85.05, min(85.05, a.lat)))
    x = int((a.lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(lat)) / math.pi) / 2.0 * n)
    return {"z": z, "x": min(x, n - 1), "y": min(y, n - 1)}


def _by_id(rng: random.Random, an: Anchors) -> Params:
    return {"id": _pick(rng, an).id}


def _category(rng: random.Random, an: Anchors) -> Params:
    return {"categoria": _pick(rng, an).categoria}


def _week(rng: random.Random, an: Anchors) -> Params:
    day = _pick(rng, an).day
    return {"d0": day, "d1": day + dt.timedelta(days=7)}


_GENERATORS = {"R1": _by_id, "R2": _category, "R3": _week,
               "Q1": _viewport, "Q2": _viewport, "Q3": _region, "Q4": _search, "Q5": _window,
               "Q6": _nearest, "Q7": _radius, "Q8": _monthly, "Q9": _containment, "Q10": _tile}  # fmt: skip
TITLES = {
    "Q1": "viewport count + area",
    "Q2": "viewport fetch GeoJSON",
    "Q3": "per-category area in region",
    "Q4": "search RPC",
    "Q5": "quarter window + bbox",
    "Q6": "K nearest",
    "Q7": "within radius (m)",
    "Q8": "monthly counts RPC",
    "Q9": "points in polygons",
    "Q10": "vector tile RPC",
}


# How the app reaches each query (README, "The workload"): Q1–Q10 are RPCs (a function a
# revision may re-point, same signature and results); R1–R3 are PostgREST's table reads,
# prepared; "SQL" (the app's own files) is sent as text, unchanged at every revision.
CONTRACT = dict.fromkeys(TITLES, "RPC") | dict.fromkeys(REST, "PostgREST, prepared")


def title(qid: str) -> str:
    """A built-in read's or write's title; empty for the app's own files."""
    return TITLES.get(qid) or REST.get(qid) or WRITES.get(qid, "")


def is_builtin(qid: str) -> bool:
    """Q1–Q10, R1–R3 and W1–W3: names a workload file may not take."""
    return bool(title(qid))


def queries(s: Settings) -> dict[str, Query]:
    """The catalogue, in execution order: Q1–Q10, then R1–R3."""
    sql = base_sql(s)
    for qid in functions.read_ids():
        sql[qid] = functions.call_sql(functions.read(s, qid))
    out = {q: Query(q, TITLES[q], sql[q], _GENERATORS[q], rpc=True, ordered=q != "Q3")
           for q in sql}  # fmt: skip
    for q, text in rest_sql(s).items():
        out[q] = Query(q, REST[q], text, _GENERATORS[q], prepared=True)
    return out


def as_sent(conn, s: Settings, catalogue: dict[str, Query]) -> dict[str, Query]:
    """``catalogue`` as this database's app sends it: a geo read whose RPC the database does
    not have (one set up before ``schema`` created it, or an adopted app without it) is the
    app's SQL itself, measured unchanged (``sends`` says which)."""
    out = dict(catalogue)
    wanted = {functions.read(s, q).identity: q for q in functions.read_ids() if q in out}
    if not wanted:
        return out
    with conn.transaction():  # one query; leaves a connection that was idle idle
        missing = conn.execute(
            "SELECT f FROM unnest(%s::text[]) f WHERE to_regprocedure(f) IS NULL",
            (list(wanted),),
        ).fetchall()
    for (identity,) in missing:
        qid = wanted[identity]
        out[qid] = replace(out[qid], sql=base_sql(s)[qid], rpc=False)
    return out


def sends(q: Query) -> str:
    """How the app sends ``q`` (the contract recorded with a run)."""
    if q.rpc:
        return "RPC"
    return "PostgREST, prepared" if q.prepared else "SQL"


def sample_anchors(conn, s: Settings, seed: int = 42, n: int = ANCHORS) -> Anchors:
    """Anchor features by a hash of their id: the same for the same content and seed."""
    t, g, d = s.qualified_table, s.geometry_column, s.time_column
    p = (
        f"ST_PointOnSurface({g})"
        if s.srid == 4326
        else f"ST_Transform(ST_PointOnSurface({g}), 4326)"
    )
    rows = conn.execute(
        f"SELECT id, categoria, GeometryType({g}), ST_X({p}), ST_Y({p}), {d}, "
        f"coalesce(nome, '') || ' ' || coalesce(descricao, '') FROM {t} "
        f"WHERE NOT ST_IsEmpty({g}) ORDER BY hashint8extended(id, %(seed)s), id LIMIT %(n)s",
        {"seed": seed, "n": n},
    ).fetchall()
    features = tuple(
        Anchor(int(i), c, gt, round(x, 6), round(y, 6), day, text)
        for i, c, gt, x, y, day, text in rows
    )
    pairs = conn.execute(
        f"SELECT pg.categoria, pt.categoria, ST_X({p.replace(g, 'pt.' + g)}), "
        f"ST_Y({p.replace(g, 'pt.' + g)}) FROM (SELECT id, categoria, {g} FROM {t} "
        f"WHERE GeometryType({g}) IN ('POLYGON', 'MULTIPOLYGON') "
        f"ORDER BY hashint8extended(id, %(seed)s), id LIMIT %(n)s) pg "
        f"CROSS JOIN LATERAL (SELECT id, categoria, {g} FROM {t} pt "
        f"WHERE ST_Contains(pg.{g}, pt.{g}) AND GeometryType(pt.{g}) = 'POINT' "
        f"ORDER BY id LIMIT 1) pt ORDER BY pg.id",
        {"seed": seed, "n": n // 2},
    ).fetchall()
    containment = tuple((a, b, round(x, 6), round(y, 6)) for a, b, x, y in pairs)
    return Anchors(features, containment)


def parameters(
    qid: str,
    anchors: Anchors,
    count: int,
    seed: int = 42,
    stream: str = "bench",
    gen: Callable[[random.Random, Anchors], Params] | None = None,
) -> list[Params]:
    """``count`` parameter sets for one query: its own RNG, so queries do not shift each other.
    ``gen``: the query's own generator (a workload file's), else Q1–Q10's."""
    rng = random.Random(zlib.crc32(f"{seed}:{stream}:{qid}".encode()))
    if not anchors.features:
        return []
    draw = gen or _GENERATORS[qid]
    return [draw(rng, anchors) for _ in range(count)]


# ------------------------------------------------------------------ the app's own files

_SET = re.compile(r"^\\set\s+([A-Za-z_]\w*)\s+(.+?)\s*$")
_RANDOM = re.compile(r"^random\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_VAR = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
# What a read starts with; a parenthesised one starts with "(".
READS = ("SELECT", "WITH", "VALUES", "TABLE")
# Every session that runs the app's files: a file that writes fails instead.
READ_ONLY = "SET default_transaction_read_only = on"
READ_ONLY_OPTION = "-c default_transaction_read_only=on"


def load_dir(folder: Path | str) -> dict[str, Query]:
    """Every ``*.sql`` file of ``folder`` as a named query (its file name without .sql),
    in name order. pgbench's custom-script format: ``\\set name random(a, b)`` (or a
    number) lines, then one read (``parse_file``) using ``:name``. Bad input: one
    ConfigError naming every refused file (and line) with its reason."""
    from stage4.errors import ConfigError

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"workload folder {folder} does not exist")
    files = sorted(folder.glob("*.sql"))
    if not files:
        raise ConfigError(f"workload folder {folder} holds no *.sql file")
    out: dict[str, Query] = {}
    refused: list[str] = []
    for path in files:
        try:
            q = parse_file(path)
        except ConfigError as e:
            refused.append(str(e))
            continue
        if is_builtin(q.qid):
            refused.append(f"{path}: {q.qid} is a name of the built-in workload: rename the file")
        else:
            out[q.qid] = q
    if refused:
        n = f"{len(refused)} of {len(files)} workload files refused" if len(refused) > 1 else ""
        raise ConfigError("; ".join([n, *refused] if n else refused))
    return out


def require_measured(run, folder: Path | None, what: str, s: Settings | None = None) -> None:
    """Every query of the app's workload folder (``folder``, else ``[tool.stage4] workload``)
    was measured in ``run`` (a stored bench run); otherwise ConfigError naming the file, with
    its error when it failed. ``what`` names the run in the message."""
    from stage4.config import settings
    from stage4.errors import ConfigError

    folder = folder if folder is not None else (s or settings()).workload_path
    if folder is None:
        return
    errors = run.environment.get("errors", {})
    for qid, q in load_dir(folder).items():
        if qid in errors:
            raise ConfigError(f"{what}: {q.source} failed: {errors[qid]['error']}")
        if qid not in run.samples:
            raise ConfigError(f"{what} did not measure {q.source}: bench with --workload {folder}")


def parse_file(path: Path) -> Query:
    """One pgbench custom script as a ``Query`` (see ``load_dir``): one read, refused
    (ConfigError naming the file and why) when it could write. The bench runs it in
    read-only transactions too (``READ_ONLY``): what a check here misses fails there."""
    from stage4.errors import ConfigError

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from e
    draws: dict[str, Callable[[random.Random], Any]] = {}
    body: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.lstrip().startswith("\\"):
            body.append(line)
            continue
        m = _SET.match(line.strip())
        expr = m.group(2) if m else ""
        if expr == "TODO":  # left by `stage4 workload capture` for the user to complete
            raise ConfigError(f"{path}:{n}: give :{m.group(1)} a value: replace TODO with "
                              "random(a, b) or a number")  # fmt: skip
        rnd, num = _RANDOM.match(expr), _NUMBER.match(expr)
        if not m or not (rnd or num):
            raise ConfigError(f"{path}:{n}: only `\\set name random(a, b)` or `\\set name "
                              f"NUMBER` is understood, not {line.strip()!r}")  # fmt: skip
        if rnd:
            lo, hi = int(rnd.group(1)), int(rnd.group(2))
            if lo > hi:
                raise ConfigError(f"{path}:{n}: random({lo}, {hi}) is an empty range")
            draws[m.group(1)] = lambda rng, lo=lo, hi=hi: rng.randint(lo, hi)
        else:
            value = float(expr) if "." in expr else int(expr)
            draws[m.group(1)] = lambda rng, value=value: value
    try:
        toks = sqltext.tokens("\n".join(body).strip())
    except sqltext.LexError as e:
        raise ConfigError(f"{path}: {e}") from None
    found = sqltext.statements(toks)
    if not found:
        raise ConfigError(f"{path}: holds no SQL statement")
    if len(found) > 1:
        raise ConfigError(f"{path}: holds more than one statement (one per file)")
    (statement,) = found
    meta = [f"\\{w.text}" for b, w in itertools.pairwise(statement) if b.text == "\\"]
    if any(t.text == "\\" for t in statement):
        raise ConfigError(f"{path}: {meta[0] if meta else 'a backslash'} is a meta-command: only "
                          "whole `\\set name random(a, b)` lines are understood")  # fmt: skip
    why = not_a_read(sqltext.code(statement))
    if why:
        raise ConfigError(f"{path}: {why}: a workload file is one read (SELECT, WITH … "
                          "SELECT, VALUES or TABLE), run in a read-only transaction")  # fmt: skip
    refs = _references(statement)
    used = set(refs.values())
    if used - set(draws):
        missing = ", ".join(f":{v}" for v in sorted(used - set(draws)))
        raise ConfigError(f"{path}: {missing} used but never set (\\set name random(a, b))")
    sql = _bind(statement, refs, draws)

    def gen(rng: random.Random, _anchors: Anchors) -> Params:
        return {name: draw(rng) for name, draw in draws.items()}

    words = [t.text.upper() for t in sqltext.code(statement) if t.kind == "word"]
    ordered = any(a == "ORDER" and b == "BY" for a, b in itertools.pairwise(words))
    return Query(path.stem, path.name, sql, gen, ordered=ordered, source=str(path))


def _references(statement: list[sqltext.Token]) -> dict[int, str]:
    """Token index of each ``:`` starting a ``:name`` in code -> name (not a cast ``::``,
    not a slice ``[1:n]``; never inside a literal, a quoted identifier or a comment)."""
    out = {}
    for i, (t, nxt) in enumerate(itertools.pairwise(statement)):
        before = statement[i - 1].text[-1:] if i else ""
        if t.text == ":" and nxt.kind == "word" and not (before == ":" or before.isalnum()
                                                         or before == "_"):  # fmt: skip
            out[i] = nxt.text
    return out


def _bind(statement: list[sqltext.Token], refs: Mapping[int, str], draws) -> str:
    """The statement's text for psycopg: each ``:name`` as ``%(name)s``, every ``%`` doubled."""
    parts, skip = [], -1
    for i, t in enumerate(statement):
        if i in refs and refs[i] in draws:
            parts.append(f"%({refs[i]})s")
            skip = i + 1
        elif i != skip:
            parts.append(t.text.replace("%", "%%"))
    return "".join(parts).strip()


def not_a_read(code: list[sqltext.Token]) -> str | None:
    """Why a statement (its code tokens) is not a plain read, or None."""
    words = [t.text.upper() if t.kind == "word" else t.text for t in code]
    first = next((w for w in words if w != "("), "")
    if first not in READS:
        return f"{first or 'it'} is not a read"
    for i, w in enumerate(words):
        before = words[i - 1] if i else ""
        after = words[i + 1] if i + 1 < len(words) else ""
        if w in ("INSERT", "MERGE") and after == "INTO":
            return f"{w} INTO writes"
        if w == "DELETE" and after == "FROM":
            return "DELETE FROM writes"
        if w == "UPDATE" and before not in ("FOR", "KEY") and "SET" in words[i:]:
            return "UPDATE … SET writes"
        if w == "INTO" and before not in ("INSERT", "MERGE"):
            return "SELECT … INTO creates a table"
        if w == "SET_CONFIG" and after == "(":
            return "set_config() changes the session's settings"
    return None


def still_read_only(conn) -> None:
    """After an app's file ran: the session still refuses writes, else it is put back and
    the file fails (psycopg.Error), so no later query runs where it could write."""
    import psycopg

    if conn.execute("SHOW default_transaction_read_only").fetchone()[0] != "on":
        conn.execute(READ_ONLY)
        raise psycopg.Error("it turned default_transaction_read_only off: a workload file "
                            "may not change the session's settings")  # fmt: skip


def params_digest(sequence: Mapping[str, Sequence[Params]]) -> str:
    """A short hash of a whole parameter sequence (recorded so replays can be checked)."""
    h = hashlib.sha256()
    for qid in sorted(sequence):
        for p in sequence[qid]:
            h.update(repr(sorted((k, str(v)) for k, v in p.items())).encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ rewrites


def registry(s: Settings | None = None) -> dict[str, dict[str, Rewrite]]:
    """Every unit's rewrites: qid -> {unit name: Rewrite} (``optimisations.rewrites``)."""
    from stage4.config import settings

    return optimisations.rewrites(s or settings())


def available(
    conn, extra: Mapping[str, Mapping[str, Rewrite]] | None = None, s: Settings | None = None
) -> dict[str, dict[str, str]]:
    """qid -> {name: SQL} of the rewrites the database offers now (``requires`` holds).

    ``extra`` rewrites (tests, experiments) are listed with the registered ones."""
    out: dict[str, dict[str, str]] = {}
    reg = registry(s)
    for qid in sorted({*reg, *(extra or {})}, key=lambda q: int(q[1:]) if q[1:].isdigit() else 0):
        for name, v in {**reg.get(qid, {}), **(extra or {}).get(qid, {})}.items():
            if _holds(conn, v.requires):
                out.setdefault(qid, {})[name] = v.sql
    return out


def _holds(conn, requires: str) -> bool:
    """A rewrite's ``requires``; one naming a relation or column that does not exist (a
    view not built yet) does not hold."""
    from psycopg import errors

    try:
        with conn.transaction():
            return bool(conn.execute(f"SELECT coalesce(({requires}), false)").fetchone()[0])
    except (errors.UndefinedTable, errors.UndefinedColumn):
        return False


# ------------------------------------------------------------------ fingerprints


def _norm(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else float(f"{v:.9g}")
    if isinstance(v, decimal.Decimal):
        return _norm(float(v)) if v != v.to_integral_value() else int(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return "b:" + hashlib.sha256(bytes(v)).hexdigest()
    if isinstance(v, dt.date | dt.datetime):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in sorted(v.items())}
    return v


def normalise_rows(rows: Iterable[Sequence[Any]], ordered: bool = True) -> list[str]:
    """Rows as canonical strings: floats to 9 significant digits, bytes hashed."""
    out = [repr(_norm(list(r))) for r in rows]
    return out if ordered else sorted(out)


class Fingerprint:
    """Accumulates a query's result sets (in replay order) into one hex digest."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.rows = 0

    def add(self, rows: Iterable[Sequence[Any]], ordered: bool = True) -> None:
        lines = normalise_rows(rows, ordered)
        self.rows += len(lines)
        self._h.update(f"#{len(lines)}\n".encode())
        for line in lines:
            self._h.update(line.encode() + b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:32]


def materialized_views(conn, s: Settings) -> list[str]:
    """The materialized views of the app schema and of stage4's own, qualified, in name order."""
    return [r[0] for r in conn.execute(
        "SELECT format('%%I.%%I', schemaname, matviewname) FROM pg_matviews "
        "WHERE schemaname IN (%s, %s) ORDER BY 1", (s.schema, s.own_schema)).fetchall()]  # fmt: skip


def refresh_materialized_views(conn, s: Settings, fresh: Iterable[str] = ()) -> list[str]:
    """REFRESH every materialized view of the app schema (so results reflect the table),
    except those in ``fresh``: views the caller knows were built from the table as it
    is now (the gate passes the views it saw built on unchanged data).

    A plain REFRESH writes a new heap without visibility map or statistics, so on an
    autocommit connection each view is then ``VACUUM (ANALYZE)``-ed: otherwise the bench
    would time plans made on guesses (and index-only scans reading the heap), which a
    view kept by ``REFRESH … CONCURRENTLY`` and autovacuum never sees."""
    skip = set(fresh)
    names = [n for n in materialized_views(conn, s) if n not in skip]
    for name in names:
        conn.execute(f"REFRESH MATERIALIZED VIEW {name}")
        if conn.autocommit:
            conn.execute(f"VACUUM (ANALYZE) {name}")
    return names
