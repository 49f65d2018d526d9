"""The app during a migration, for the benchmarks and tests: a writer, a reader, a lock
monitor, and the check that nothing the writer committed was lost.

* ``Writer``: INSERT / UPDATE (moving rows between years, so between partitions) / DELETE,
  autocommit, paced or as fast as it can, each statement timed; every statement that
  returned is a committed write, logged client-side (id, values, row hash);
* ``Reader``: a lookup by id, a viewport count + area, a quarter + bbox list, in turn,
  each timed;
* ``Monitor``: every 0.1 s, which of the two waits for a lock, on which session, running
  what, holding which strong table locks;
* ``Live``: the three running together, and ``check``: the writer paused, the whole table
  compared row by row with its state before plus every committed write;
* ``step``: one ``stage4.plumbing.migrations`` step under an unpaced writer and reader.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import date

import psycopg

# The reference columns only: derived columns a later revision adds do not change the hash.
ROW = (
    "md5(ROW(g.id, g.nome, g.categoria, g.data_referencia, g.geom, g.propriedades, "
    "g.descricao, g.created_at, g.updated_at)::text)"
)
CATEGORIES = ["escola", "biblioteca", "rio", "lote", "praca", "parque"]
BBOX = (-46.75, -23.65, -46.55, -23.45)
READS = {
    "by id": "SELECT id, nome, categoria FROM public.geometrias WHERE id = %(id)s",
    "viewport": "SELECT count(*), sum(ST_Area(geom)) FROM public.geometrias "
    "WHERE geom && ST_MakeEnvelope(%(a)s, %(b)s, %(c)s, %(d)s, 4326)",
    "quarter": "SELECT id, nome FROM public.geometrias WHERE data_referencia >= %(d0)s "
    "AND data_referencia < %(d0)s + 91 "
    "AND geom && ST_MakeEnvelope(%(a)s, %(b)s, %(c)s, %(d)s, 4326)",
}
BLOCKED = """
SELECT w.application_name, extract(epoch FROM clock_timestamp() - w.query_start),
       b.pid, coalesce(nullif(b.application_name, ''), b.backend_type),
       left(regexp_replace(b.query, '\\s+', ' ', 'g'), 200), b.wait_event_type,
       (SELECT string_agg(x.mode || ' on ' || CASE
                 WHEN x.named IS NULL THEN x.others || ' relations'
                 WHEN x.others > 0 THEN x.named || ' and ' || x.others || ' more'
                 ELSE x.named END, '; ')
          FROM (SELECT l.mode,
                       string_agg(c.oid::regclass::text, ', ') FILTER (
                         WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition) AS named,
                       count(*) FILTER (
                         WHERE c.oid IS NULL OR c.relkind NOT IN ('r', 'p', 'm')
                            OR c.relispartition) AS others
                  FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation
                 WHERE l.pid = b.pid AND l.granted AND l.locktype = 'relation'
                   AND l.database = (SELECT oid FROM pg_database
                                      WHERE datname = current_database())
                   AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
                                  'AccessExclusiveLock')
                 GROUP BY l.mode) x),
       (SELECT string_agg(coalesce(nullif(x.application_name, ''), x.backend_type) || ' ('
                          || left(regexp_replace(x.query, '\\s+', ' ', 'g'), 80) || ')', '; ')
          FROM pg_stat_activity x WHERE x.pid = ANY (pg_blocking_pids(b.pid)))
  FROM pg_stat_activity w
 CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
  JOIN pg_stat_activity b ON b.pid = bp.pid
 WHERE w.application_name IN ('bench-reader', 'bench-writer') AND w.wait_event_type = 'Lock'
"""


@dataclass
class Op:
    """One committed write: what the client sent and the row the server returned."""

    op: str
    id: int
    values: dict
    row_hash: str | None
    started: float
    seconds: float


# ------------------------------------------------------------------ nothing lost


def table_state(conn: psycopg.Connection) -> dict[int, str]:
    """id -> hash of the reference columns, for the whole table."""
    return dict(conn.execute(f"SELECT g.id, {ROW} FROM public.geometrias g").fetchall())


def expected_after(before: dict[int, str], ops: list[Op]) -> dict[int, str]:
    """The table the log says we should have: the pre-state with each committed write applied."""
    want = dict(before)
    apply_ops(want, ops)
    return want


def apply_ops(state: dict[int, str], ops: list[Op]) -> None:
    for o in ops:
        if o.op == "delete":
            state.pop(o.id, None)
        else:
            state[o.id] = o.row_hash


def differences(want: dict[int, str], after: dict[int, str]) -> list[str]:
    """Differences between the expected and the actual table, one line each (empty: exact)."""
    out = [f"id {i}: committed but missing" for i in sorted(want.keys() - after.keys())]
    out += [f"id {i}: present but never written" for i in sorted(after.keys() - want.keys())]
    out += [
        f"id {i}: row differs from the last committed write"
        for i in sorted(want.keys() & after.keys())
        if want[i] != after[i]
    ]
    return out


def problems(before: dict[int, str], ops: list[Op], after: dict[int, str]) -> list[str]:
    return differences(expected_after(before, ops), after)


def values_match(conn: psycopg.Connection, ops: list[Op]) -> list[str]:
    """The last written values of each surviving id are what the client sent."""
    last = {o.id: o for o in ops}
    sent = {
        i: (o.values["nome"], o.values.get("descricao"), o.values["data_referencia"])
        for i, o in last.items()
        if o.op != "delete"
    }
    rows = conn.execute(
        "SELECT id, nome, descricao, data_referencia FROM public.geometrias WHERE id = ANY(%s)",
        (list(sent),),
    ).fetchall()
    stored = {r[0]: tuple(r[1:]) for r in rows}
    return [
        f"id {i}: {stored.get(i)} in the table, {v} committed"
        for i, v in sent.items()
        if stored.get(i) != v
    ]


# ------------------------------------------------------------------ the app


class Writer(threading.Thread):
    """INSERT / UPDATE / DELETE until stopped or ``max_ops``, ``rate`` a second (None: as
    fast as it can); logs committed writes only. ``pause`` (set, then take ``turn``) holds
    it between two statements."""

    def __init__(
        self,
        url: str,
        ids: list[int],
        seed: int = 7,
        max_ops: int = 10**9,
        rate: float | None = None,
    ):
        super().__init__(daemon=True)
        self.url, self.live, self.rng, self.max_ops = url, list(ids), random.Random(seed), max_ops
        self.rate = rate
        self.ops: list[Op] = []
        self.errors: list[str] = []
        self.failed: list[tuple[float, str]] = []  # (when, error) of each statement refused
        self.returned = 0.0  # start of the latest statement that has returned
        self.stop, self.pause, self.turn = threading.Event(), threading.Event(), threading.Lock()

    def _values(self, n: int) -> dict:
        year = self.rng.randint(2019, 2030)  # 2019 and 2030: the default partition
        return {
            "nome": f"w{n}",
            "categoria": self.rng.choice(CATEGORIES),
            "data_referencia": date(year, self.rng.randint(1, 12), self.rng.randint(1, 28)),
            "descricao": f"escrito {n}",
            "lon": round(self.rng.uniform(BBOX[0], BBOX[2]), 6),
            "lat": round(self.rng.uniform(BBOX[1], BBOX[3]), 6),
        }

    def _one(self, conn: psycopg.Connection, n: int) -> Op | None:
        kind = self.rng.choices(["insert", "update", "delete"], [4, 4, 2])[0]
        if kind != "insert" and not self.live:
            kind = "insert"
        v = self._values(n)
        at = self.rng.randrange(len(self.live)) if self.live else 0
        t0 = time.perf_counter()
        if kind == "insert":
            row = conn.execute(
                "INSERT INTO public.geometrias AS g (nome, categoria, data_referencia, descricao,"
                " geom) VALUES (%(nome)s, %(categoria)s, %(data_referencia)s, %(descricao)s,"
                f" ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)) RETURNING g.id, {ROW}",
                v,
            ).fetchone()
        elif kind == "update":
            v["id"] = self.live[at]
            row = conn.execute(
                "UPDATE public.geometrias AS g SET nome = %(nome)s, descricao = %(descricao)s,"
                " data_referencia = %(data_referencia)s WHERE g.id = %(id)s"
                f" RETURNING g.id, {ROW}",
                v,
            ).fetchone()
        else:
            v = {"id": self.live[at]}
            row = conn.execute(
                "DELETE FROM public.geometrias g WHERE g.id = %(id)s RETURNING g.id, NULL", v
            ).fetchone()
        seconds = time.perf_counter() - t0
        if row is None:  # nothing matched: not a write
            return None
        if kind == "insert":
            self.live.append(row[0])
        elif kind == "delete":  # swap with the last: O(1) on a million ids
            self.live[at] = self.live[-1]
            self.live.pop()
        return Op(kind, row[0], v, row[1], t0, seconds)

    def _pace(self, due: float) -> float:
        """Sleep until ``due``; the next due time (a backlog of over a second is dropped)."""
        if self.rate is None:
            return due
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        return max(due, now - 1.0) + 1 / self.rate

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="bench-writer") as conn:
            due = time.perf_counter()
            for n in range(self.max_ops):
                while self.pause.is_set() and not self.stop.is_set():
                    time.sleep(0.005)
                    due = time.perf_counter()
                if self.stop.is_set():
                    break
                due = self._pace(due)
                with self.turn:
                    at = time.perf_counter()
                    try:
                        op = self._one(conn, n)
                    except psycopg.Error as e:  # not committed: not logged as a write
                        self.errors.append(str(e).splitlines()[0])
                        self.failed.append((at, self.errors[-1]))
                        continue
                    finally:
                        self.returned = at
                    if op is not None:
                        self.ops.append(op)


class Reader(threading.Thread):
    """The kinds of READS in turn, one every ``every`` seconds, each timed as
    (started, seconds, kind)."""

    def __init__(self, url: str, ids: list[int] | None = None, seed: int = 11, every: float = 0.0):
        super().__init__(daemon=True)
        self.url, self.rng, self.every = url, random.Random(seed), every
        self.ids = ids or [4242]
        self.timings: list[tuple[float, float, str]] = []
        self.errors: list[str] = []
        self.failed: list[tuple[float, str]] = []
        self.returned = 0.0
        self.stop = threading.Event()

    def _params(self) -> dict:
        lon, lat = (
            self.rng.uniform(BBOX[0], BBOX[2] - 0.05),
            self.rng.uniform(BBOX[1], BBOX[3] - 0.05),
        )
        return {
            "id": self.rng.choice(self.ids),
            "a": lon,
            "b": lat,
            "c": lon + 0.02,
            "d": lat + 0.02,
            "d0": date(self.rng.randint(2020, 2028), 1, 1),
        }

    def run(self) -> None:
        kinds = list(READS)
        with psycopg.connect(self.url, autocommit=True, application_name="bench-reader") as conn:
            n = 0
            while not self.stop.is_set():
                kind = kinds[n % len(kinds)]
                n += 1
                t0 = time.perf_counter()
                try:
                    conn.execute(READS[kind], self._params()).fetchall()
                except psycopg.Error as e:
                    self.errors.append(str(e).splitlines()[0])
                    self.failed.append((t0, self.errors[-1]))
                    continue
                finally:
                    self.returned = t0
                self.timings.append((t0, time.perf_counter() - t0, kind))
                if self.every:
                    time.sleep(self.every)


class Monitor(threading.Thread):
    """Every ``every`` seconds: the reader's or writer's lock waits, with the session they
    wait for, its statement and its strong table locks (rows of BLOCKED, timestamped)."""

    def __init__(self, url: str, every: float = 0.1):
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.seen: list[tuple] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="bench-monitor") as conn:
            while not self.stop.wait(self.every):
                try:
                    rows = conn.execute(BLOCKED).fetchall()
                except psycopg.Error as e:
                    self.errors.append(str(e).splitlines()[0])
                    continue
                now = time.perf_counter()
                self.seen += [(now, *r) for r in rows]


def overlapping(timings, t0: float, t1: float) -> list:
    """The (started, seconds, kind…) statements that ran at some moment of [t0, t1]."""
    return [t for t in timings if t[0] <= t1 and t[0] + t[1] >= t0]


class Live:
    """The app running against ``url``: writer, reader, monitor; and the table the writer's
    log says there must be (``check`` compares it with the real one)."""

    def __init__(self, url: str, writes_per_s: float | None, read_every: float):
        with psycopg.connect(url) as conn:
            self.expected = table_state(conn)
        ids = list(self.expected)
        self.url, self.checked = url, 0
        self.writer = Writer(url, ids, rate=writes_per_s)
        self.reader = Reader(
            url, random.Random(3).sample(ids, min(len(ids), 10_000)), every=read_every
        )
        self.monitor = Monitor(url)

    def __enter__(self) -> Live:
        for t in (self.writer, self.reader, self.monitor):
            t.start()
        deadline = time.monotonic() + 60
        while len(self.writer.ops) < 5 or len(self.reader.timings) < 3:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the app made no progress: {self.writer.errors[-1:]} {self.reader.errors[-1:]}"
                )
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        for t in (self.writer, self.reader, self.monitor):
            t.stop.set()
        for t in (self.writer, self.reader, self.monitor):
            t.join(60)

    def returned_since(self, t: float, timeout: float = 300) -> None:
        """Wait until the writer and the reader have each had a statement that started
        after ``t`` return: every statement in flight at ``t`` is then in the figures (one
        blocked until a step commits returns just after the step ends)."""
        deadline = time.monotonic() + timeout
        while min(self.writer.returned, self.reader.returned) <= t:
            if time.monotonic() > deadline or not (
                self.writer.is_alive() and self.reader.is_alive()
            ):
                raise TimeoutError("the app has not come back since the step ended")
            time.sleep(0.01)

    def check(self) -> tuple[list[str], int]:
        """Pause the writer, compare the whole table with the log's; (problems, rows)."""
        self.writer.pause.set()
        with self.writer.turn:  # its statement in flight, if any, has returned and is logged
            ops = self.writer.ops[self.checked :]
            self.checked += len(ops)
            apply_ops(self.expected, ops)
            with psycopg.connect(self.url) as conn:
                after = table_state(conn)
                found = differences(self.expected, after) + (values_match(conn, ops) if ops else [])
        self.writer.pause.clear()
        return found, len(after)


def step(
    url: str,
    verb: str,
    target: str,
    *,
    batch_rows: int | None = None,
    max_ops: int = 100_000,
    after_s: float = 0.3,
) -> dict:
    """One ``stage4.plumbing.migrations`` step (so a test can pass ``batch_rows``) under an unpaced
    writer and reader, the table compared with its state before plus the writer's log."""
    from stage4.plumbing import migrations

    with psycopg.connect(url) as conn:
        before = table_state(conn)
    writer, reader = Writer(url, list(before), max_ops=max_ops), Reader(url, list(before)[:1000])
    writer.start()
    reader.start()
    deadline = time.monotonic() + 30
    while len(writer.ops) < 20 or len(reader.timings) < 5:
        if time.monotonic() > deadline:
            raise TimeoutError("the writer made no progress")
        time.sleep(0.01)
    metrics: dict = {}
    kw = {"metrics": metrics} | ({"batch_rows": batch_rows} if batch_rows else {})
    t0 = time.perf_counter()
    getattr(migrations, verb)(url, target, **kw)
    t1 = time.perf_counter()
    time.sleep(after_s)
    for t in (writer, reader):
        t.stop.set()
        t.join()
    with psycopg.connect(url) as conn:
        after = table_state(conn)
        diffs = problems(before, writer.ops, after) + values_match(conn, writer.ops)
    return {
        "step": f"{verb} {target}",
        "migration_wall_s": round(t1 - t0, 3),
        "migration_metrics": metrics,
        "writes_during_migration": sum(1 for o in writer.ops if t0 <= o.started <= t1),
        "reads_during_migration": len(overlapping(reader.timings, t0, t1)),
        "writer_errors": writer.errors,
        "reader_errors": reader.errors,
        "problems": diffs[:20],
        "exact": not diffs,
    }
