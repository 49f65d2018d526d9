"""The app's writes W1–W3, measured beside its reads in transactions that roll back.

- What: W1 inserts one feature (a point, or a square polygon of 20–60 m, near a feature
  of the data, so inside its extent) with the columns the app fills; W2 replaces one
  feature's geometry by id; W3 deletes one feature by id (``queries.write_sql``). Each is
  a prepared statement of a connection of their own, prepared once and executed with its
  parameters, as PostgREST runs them. SQL-level ``PREPARE`` and ``EXECUTE`` with the
  values as literals (bound before the clock starts): psycopg deallocates what it prepares
  itself at every rollback, and a utility statement takes no bind parameters.
- Parameters: drawn like Q1–Q10's (``workload.parameters``: seeded, around the anchor
  features), so every run replays the same sequence; W2 and W3 target anchor features.
- Nothing stays: every execution is ``BEGIN READ WRITE``, the statement, ``ROLLBACK``.
  What is timed is the statement alone: row triggers (opt2's derived columns), index
  maintenance (every index of the table, opt3's GIN included, per partition under opt1)
  and partition routing all run inside it. What only a COMMIT pays (deferred constraints
  and triggers, the WAL flush) never runs on a rollback and is not measured.
- W1 names its id (a negative one the app never uses) where the app takes the identity's
  next value: ``nextval`` is not undone by a rollback, so every run would advance the
  sequence, and a rollback the gate proves exact compares sequences too. What that leaves
  out is one ``nextval`` call.
- PostgreSQL counts a rolled-back row as written (``pg_stat_user_tables``): ``Writes.written``
  tallies the rows these transactions wrote, from their own counters, so the bench takes
  them off the app's load, and the statistics are flushed before the connection closes.
- The fingerprint pass writes on fixed parameter sets and reads the row back inside the
  transaction: rows affected, then the row as the app sees it (the columns it fills), so a
  step that changes what a write does is a changed result, as for a read.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field

import psycopg

from stage4.config import Settings
from stage4.measure import workload
from stage4.plumbing import livewrites
from stage4.plumbing.seed import ADJECTIVES, CATEGORIES, FONTES, NOUNS, PROPER, TAGS
from stage4.queries import WRITES, write_sql

INSERT_ID = -930_000_001  # W1's row, never committed (freshness's canaries use -910_000_00x)
LOCK_TIMEOUT = "10s"  # a row the app keeps locked fails the write instead of hanging the run
# PostgreSQL's count of this transaction's writes to the table and its partitions
XACT_WRITES = (
    "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint "
    "FROM pg_stat_xact_user_tables WHERE relid = to_regclass(%(t)s) OR relid IN "
    "(SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%(t)s))"
)


@dataclass
class Writes:
    """The writes of one run: their SQL, their parameter sets, the rows they wrote."""

    sql: dict[str, str]
    read_back: str
    table: str
    fp: dict[str, list[dict]]
    latency: dict[str, list[dict]]
    written: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # qid -> first line of its error
    prepared: dict[str, str] = field(default_factory=dict)  # qid -> its EXECUTE


_PARAM = re.compile(r"%\((\w+)\)s")


def prepare(conn, w: Writes, qid: str) -> None:
    """``PREPARE`` the write on ``conn`` (once per session) and keep the ``EXECUTE`` that
    runs it with a parameter set."""
    if qid in w.prepared:
        return
    names = list(dict.fromkeys(_PARAM.findall(w.sql[qid])))
    body = _PARAM.sub(lambda m: f"${names.index(m.group(1)) + 1}", w.sql[qid])
    statement = f"stage4_{qid.lower()}"
    conn.execute(f"PREPARE {statement} AS {body}")
    w.prepared[qid] = f"EXECUTE {statement}({', '.join(f'%({n})s' for n in names)})"


def draw(s: Settings, anchors: workload.Anchors, sets: int, seed: int) -> Writes:
    """Each write's parameter sets: ``FINGERPRINT_SETS`` for the fingerprints, ``sets`` for
    the latency rounds, from its own seeded generator."""
    t, g, d = s.qualified_table, s.geometry_column, s.time_column
    geom = g if s.srid == 4326 else f"ST_Transform({g}, 4326)"
    n = workload.FINGERPRINT_SETS
    return Writes(
        sql=write_sql(s),
        read_back=f"SELECT id, nome, categoria, {d}, ST_AsText({geom}), propriedades, "
        f"descricao FROM {t} WHERE id = %(id)s",
        table=t,
        fp={q: workload.parameters(q, anchors, n, seed, "fp", _GENERATORS[q]) for q in WRITES},
        latency={
            q: workload.parameters(q, anchors, sets, seed, gen=_GENERATORS[q]) for q in WRITES
        },
    )


def connect(url: str) -> psycopg.Connection:
    """The writes' own connection: autocommit (each write opens and rolls back its own
    transaction); its statements are prepared by ``prepare``, not by psycopg."""
    conn = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    return conn


def close(conn: psycopg.Connection) -> None:
    """Flush this connection's statistics (its rolled-back rows) before it closes, then close it.
    A session that cannot flush (a run interrupted mid-statement) has its counts flushed by
    the server as it exits: the error that stopped the run is the one raised."""
    try:
        livewrites.flush(conn)
    except psycopg.Error:
        pass
    finally:
        conn.close()


def fingerprints(conn, w: Writes) -> dict[str, str]:
    """Each write's fingerprint on its fixed sets (the warm-up of its prepared statement);
    a write that fails is recorded in ``w.errors`` and left out of the timed rounds."""
    out: dict[str, str] = {}
    for qid in WRITES:
        fp = workload.Fingerprint()
        try:
            prepare(conn, w, qid)
            for p in w.fp[qid]:
                fp.add(execute(conn, w, qid, p, read_back=True)[1])
        except psycopg.Error as e:
            w.errors[qid] = (str(e).strip().splitlines() or [type(e).__name__])[0]
            continue
        out[qid] = fp.hexdigest()
    return out


def execute(conn, w: Writes, qid: str, params: dict, read_back: bool = False):
    """One write in a transaction rolled back: (ms of the statement, what it did: rows
    affected and the row read back, when ``read_back``)."""
    conn.execute("BEGIN READ WRITE")
    try:
        # PostgreSQL 15's "xact" counts include the session's earlier transactions not yet
        # flushed: the statement's rows are the difference
        counted = conn.execute(XACT_WRITES, {"t": w.table}).fetchone()[0]
        statement = psycopg.ClientCursor(conn).mogrify(w.prepared[qid], params)
        start = time.perf_counter()
        cur = conn.execute(statement)
        ms = (time.perf_counter() - start) * 1000.0
        did = [(cur.rowcount,), *conn.execute(w.read_back, params).fetchall()] if read_back else []
        w.written += conn.execute(XACT_WRITES, {"t": w.table}).fetchone()[0] - counted
    finally:
        conn.execute("ROLLBACK")
    return ms, did


def timed(conn, w: Writes, qid: str) -> list[float]:
    """One round of ``qid``: its ms on each of its latency sets."""
    return [execute(conn, w, qid, p)[0] for p in w.latency[qid]]


# ------------------------------------------------------------------ parameters


def _near(rng: random.Random, a: workload.Anchor, polygon: bool) -> str:
    """WKT (EPSG:4326) of a point within about 200 m of ``a``, or a square of 20–60 m there."""
    lon = a.lon + rng.uniform(-0.002, 0.002)
    lat = a.lat + rng.uniform(-0.002, 0.002)
    if not polygon:
        return f"POINT({lon:.7f} {lat:.7f})"
    half = rng.uniform(10.0, 30.0) / 110_000.0
    x0, y0, x1, y1 = lon - half, lat - half, lon + half, lat + half
    ring = (
        f"{x0:.7f} {y0:.7f},{x1:.7f} {y0:.7f},{x1:.7f} {y1:.7f},{x0:.7f} {y1:.7f},{x0:.7f} {y0:.7f}"
    )
    return f"POLYGON(({ring}))"


def _anchor(rng: random.Random, an: workload.Anchors) -> workload.Anchor:
    return an.features[rng.randrange(len(an.features))]


_POINT = [c for c, v in CATEGORIES.items() if v[0] == "point"]
_AREA = [c for c, v in CATEGORIES.items() if v[0] in ("quad", "disc")]


def _insert(rng: random.Random, an: workload.Anchors) -> dict:
    """W1: a new feature near an anchor, on the anchor's day, as the app fills it."""
    a = _anchor(rng, an)
    polygon = rng.random() < 0.4
    cat = rng.choice(_AREA if polygon else _POINT)
    words = [rng.choice(NOUNS), rng.choice(ADJECTIVES), rng.choice(NOUNS)]
    props = {"fonte": rng.choice(FONTES), "tags": [rng.choice(TAGS)], "versao": 1}
    return {
        "id": INSERT_ID,
        "nome": f"{rng.choice(CATEGORIES[cat][3])} {rng.choice(PROPER)}",
        "categoria": cat,
        "dia": a.day,
        "wkt": _near(rng, a, polygon),
        "propriedades": json.dumps(props),
        "descricao": " ".join(words).capitalize() + ".",
    }


def _move(rng: random.Random, an: workload.Anchors) -> dict:
    """W2: an anchor feature's new geometry, of its kind (a point stays a point)."""
    a = _anchor(rng, an)
    return {"id": a.id, "wkt": _near(rng, a, polygon=a.gtype != "POINT")}


def _delete(rng: random.Random, an: workload.Anchors) -> dict:
    """W3: an anchor feature, by id."""
    return {"id": _anchor(rng, an).id}


_GENERATORS = {"W1": _insert, "W2": _move, "W3": _delete}
