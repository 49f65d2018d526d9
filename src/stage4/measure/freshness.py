"""Fresh results: does each query return what the table holds *now*? Proved with canaries.

A read served from a materialized view returns what the view held at its last refresh.
The gate proves per query that this is not so, or names it: inside a transaction that is
always rolled back, it inserts into the table a canary row the query must return (placed
at the query's own point, box, window or tile, with its search term and categories)
and one it must not (far away, or in another year for the monthly counts), and runs the
query after each. Fresh: the first canary changes the answer, the second does not. A
query whose answer ignores the first canary reads something older than the table: stale.

The three answers are taken in one REPEATABLE READ snapshot, so rows the app commits
meanwhile do not move them: on a database in use, only the canaries can.

The canaries carry negative ids (never handed out by the identity sequence), so Q2's and
Q6's order by id puts them first, and nothing of them survives the rollback: no row, no
sequence value (explicit ids), no trigger side effect, nothing decoded for replication.

A revision that serves queries from a view declares its staleness budget in its unit
(``STALENESS = {"Q8": "15 minutes: pg_cron refresh"}``; a revision without a unit, in its
own module); ``declared`` gathers the budgets
of every revision applied, up to the database's revision (a step judged below a view's
revision still reads through it). A stale query is NO-GO unless it is declared and the
user passed ``--accept-stale``, and is blamed on the revision that declares it
(``judging._freshness``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import psycopg

from stage4.config import Settings
from stage4.measure import workload
from stage4.plumbing import livewrites

CANARY_IDS = (-910_000_001, -910_000_002)  # (must return, must not return)
CANARY_SEED = 42
FAR = 40.0  # degrees: the "must not" canary is moved this far in longitude


@dataclass(frozen=True)
class Canary:
    nome: str
    categoria: str
    day: str  # ISO date
    wkt: str  # EPSG:4326


@dataclass
class Result:
    qid: str
    fresh: bool | None  # None: not checked (the table refused the canary rows)
    detail: str
    # canary rows this check inserted (rolled back): PostgreSQL counts them as written
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"fresh": self.fresh, "detail": self.detail}


def _centre(p: dict) -> tuple[float, float]:
    if "lon" in p:
        return float(p["lon"]), float(p["lat"])
    if "z" in p:  # the tile's centre, in degrees
        n = 2 ** int(p["z"])
        lon = (int(p["x"]) + 0.5) / n * 360.0 - 180.0
        lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (int(p["y"]) + 0.5) / n))))
        return lon, lat
    return (float(p["min_lon"]) + float(p["max_lon"])) / 2, (
        float(p["min_lat"]) + float(p["max_lat"])
    ) / 2


def canaries(qid: str, p: dict) -> tuple[list[Canary], list[Canary]]:
    """(rows the query must return, rows it must not) for parameters ``p``."""
    lon, lat = _centre(p) if qid != "Q8" else (-46.6, -23.5)
    day = str(p.get("d0") or (f"{p['ano']}-06-15" if "ano" in p else "2024-06-15"))
    word = p.get("termo", "canario")
    name = f"{word} {word} {word} canario"  # ranked first by the search
    point = f"POINT({lon} {lat})"
    must = [Canary(name, p.get("cat_point", "canario"), day, point)]
    if qid == "Q9":  # a point of cat_point inside a polygon of cat_poly
        d = 0.0001
        square = (f"POLYGON(({lon - d} {lat - d},{lon + d} {lat - d},{lon + d} {lat + d},"
                  f"{lon - d} {lat + d},{lon - d} {lat - d}))")  # fmt: skip
        must.append(Canary(name, p["cat_poly"], day, square))
    if qid == "Q8":  # same place, another year: not in that year's counts
        other = f"{int(p['ano']) + 7}-06-15"
        return must, [Canary(name, "canario", other, point)]
    far = [Canary(c.nome, c.categoria, c.day, _shift(c.wkt)) for c in must]
    return must, far


def _shift(wkt: str) -> str:
    head, coords = wkt.split("(", 1)
    out = []
    for token in coords.replace("(", "").replace(")", "").split(","):
        x, y = token.split()
        out.append(f"{float(x) + FAR} {y}")
    body = ",".join(out)
    return f"{head}(({body}))" if head.startswith("POLYGON") else f"{head}({body})"


def _insert(conn, s: Settings, rows: list[Canary], first_id: int, written: list[int]) -> None:
    geom = "ST_GeomFromText(%(wkt)s, 4326)"
    if s.srid != 4326:
        geom = f"ST_Transform({geom}, {s.srid})"
    for i, c in enumerate(rows):
        conn.execute(
            f"INSERT INTO {s.qualified_table} (id, nome, descricao, categoria, {s.time_column}, "
            f"{s.geometry_column}) OVERRIDING SYSTEM VALUE VALUES (%(id)s, %(nome)s, %(nome)s, "
            f"%(cat)s, %(day)s::date, {geom})",
            {"id": first_id - 10 * i, "nome": c.nome, "cat": c.categoria, "day": c.day,
             "wkt": c.wkt},
        )  # fmt: skip
        written[0] += 1


class _Rollback(Exception):
    pass


def check(conn, s: Settings, anchors: workload.Anchors) -> dict[str, Result]:
    """Each query's freshness on one parameter set (stream ``canary``), on a connection
    not in a transaction; nothing is left behind."""
    out: dict[str, Result] = {}
    for qid, q in workload.as_sent(conn, s, workload.queries(s)).items():
        if q.prepared:  # R1–R3 read the table itself: no revision puts anything between
            continue
        [p] = workload.parameters(qid, anchors, 1, CANARY_SEED, "canary") or [None]
        if p is None:
            continue
        must, must_not = canaries(qid, p)
        written = [0]

        def answer(q=q, p=p) -> str:
            fp = workload.Fingerprint()
            fp.add(conn.execute(q.sql, p).fetchall(), q.ordered)
            return fp.hexdigest()

        try:
            with conn.transaction(force_rollback=True):
                # one snapshot: the app's commits meanwhile do not move the answer, only
                # the canaries (this transaction's own rows) can
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                before = answer()
                _insert(conn, s, must_not, CANARY_IDS[1], written)
                ignored = answer() == before
                _insert(conn, s, must, CANARY_IDS[0], written)
                seen = answer() != before
        except psycopg.Error as e:  # a constraint or trigger of the app refused the canary
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            out[qid] = Result(qid, None, f"not checked: the table refused a canary row ({first})",
                              written[0])  # fmt: skip
            continue
        if seen and ignored:
            out[qid] = Result(qid, True, "returns a row inserted now, and not one outside it",
                              written[0])  # fmt: skip
        elif not seen:
            out[qid] = Result(qid, False, "does not return a row inserted now: it reads "
                              "something older than the table (a materialized view)",
                              written[0])  # fmt: skip
        else:
            out[qid] = Result(qid, False, "its answer changed for a row it must not return",
                              written[0])  # fmt: skip
    livewrites.flush(conn)  # the canaries' inserts are counted apart from the app's writes
    return out


def declared(revisions: list[str]) -> dict[str, tuple[str, str]]:
    """qid -> (revision, budget) from ``STALENESS`` of the revisions given (their units',
    else their modules'), in chain order: the lowest revision declaring a query is the one
    that serves it stale (those above it only inherit that), so its budget is the one a
    stale read is judged against and it is the revision the read is blamed on."""
    from stage4 import optimisations
    from stage4.plumbing import migrations

    script = migrations.script()
    found: dict[str, tuple[str, str]] = {}
    for rev in revisions:
        budgets = optimisations.staleness(rev)
        if budgets is None:
            budgets = getattr(script.get_revision(rev).module, "STALENESS", None) or {}
        for qid, budget in budgets.items():
            found.setdefault(qid, (rev, budget))
    return found


def applied(current: str | None) -> list[str]:
    """The revisions applied at ``current`` (the database's revision), in chain order: the
    ones whose budgets judge a stale read, whichever step is being judged."""
    from stage4.plumbing import migrations

    chain = migrations.chain()
    return chain[: chain.index(current) + 1] if current in chain else []
