"""Writers and readers during opt1 (and opt2 when the chain has it): nothing lost, how long blocked.

    .venv/bin/python -m benchmarks.writers_during_opt1 --features 100000

Creates a scratch database on the embedded cluster (STAGE4_HOME; or --url SERVER_URL),
seeds it at revision ``schema`` with stage4.seed, then for each step (upgrade opt1,
[upgrade opt2, downgrade opt1,] downgrade schema) runs, over loopback:

* a writer thread: INSERT / UPDATE (moving rows between years, so between partitions)
  / DELETE in a bounded loop, autocommit, each statement timed; every statement that
  returned is a COMMITTED write and is logged client-side (id, op, values, row hash);
* a reader thread: Q1-like (bbox count + area) and Q5-like (quarter + bbox) SELECTs, timed.

Afterwards the table must equal the state before the step plus the log (id -> hash of
the reference columns): every committed write present, nothing else changed. Writes
result to benchmarks/results/writers_during_opt1.json. The longest statement of each
thread that overlapped the migration is the block the app would see.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

# The reference columns only: derived columns a later revision adds do not change the hash.
ROW = "md5(ROW(g.id, g.nome, g.categoria, g.data_referencia, g.geom, g.propriedades, " \
      "g.descricao, g.created_at, g.updated_at)::text)"  # fmt: skip
CATEGORIES = ["escola", "biblioteca", "rio", "lote", "praca", "parque"]
BBOX = (-46.75, -23.65, -46.55, -23.45)


@dataclass
class Op:
    """One committed write: what the client sent and the row the server returned."""

    op: str
    id: int
    values: dict
    row_hash: str | None
    started: float
    seconds: float


def table_state(conn: psycopg.Connection) -> dict[int, str]:
    """id -> hash of the reference columns, for the whole table."""
    return dict(conn.execute(f"SELECT g.id, {ROW} FROM public.geometrias g").fetchall())


def expected_after(before: dict[int, str], ops: list[Op]) -> dict[int, str]:
    """The table the log says we should have: the pre-state with each committed write applied."""
    want = dict(before)
    for o in ops:
        if o.op == "delete":
            want.pop(o.id, None)
        else:
            want[o.id] = o.row_hash
    return want


def problems(before: dict[int, str], ops: list[Op], after: dict[int, str]) -> list[str]:
    """Differences between the expected and the actual table, one line each (empty: exact)."""
    want = expected_after(before, ops)
    out = [f"id {i}: committed but missing" for i in sorted(want.keys() - after.keys())]
    out += [f"id {i}: present but never written" for i in sorted(after.keys() - want.keys())]
    out += [f"id {i}: row differs from the last committed write"
            for i in sorted(want.keys() & after.keys()) if want[i] != after[i]]  # fmt: skip
    return out


def values_match(conn: psycopg.Connection, ops: list[Op]) -> list[str]:
    """The last written values of each surviving id are what the client sent."""
    last: dict[int, Op] = {}
    for o in ops:
        last[o.id] = o
    bad = []
    for i, o in last.items():
        if o.op == "delete":
            continue
        row = conn.execute(
            "SELECT nome, descricao, data_referencia FROM public.geometrias WHERE id = %s", (i,)
        ).fetchone()
        sent = (o.values["nome"], o.values.get("descricao"), o.values["data_referencia"])
        if row != sent:
            bad.append(f"id {i}: {row} in the table, {sent} committed")
    return bad


class Writer(threading.Thread):
    """INSERT / UPDATE / DELETE until stopped or ``max_ops``; logs committed writes only."""

    def __init__(self, url: str, ids: list[int], seed: int = 7, max_ops: int = 100_000):
        super().__init__(daemon=True)
        self.url, self.live, self.rng, self.max_ops = url, list(ids), random.Random(seed), max_ops
        self.ops: list[Op] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

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
        t0 = time.perf_counter()
        if kind == "insert":
            row = conn.execute(
                "INSERT INTO public.geometrias AS g (nome, categoria, data_referencia, descricao,"
                " geom) VALUES (%(nome)s, %(categoria)s, %(data_referencia)s, %(descricao)s,"
                f" ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)) RETURNING g.id, {ROW}",
                v,
            ).fetchone()
        elif kind == "update":
            v["id"] = self.rng.choice(self.live)
            row = conn.execute(
                "UPDATE public.geometrias AS g SET nome = %(nome)s, descricao = %(descricao)s,"
                " data_referencia = %(data_referencia)s WHERE g.id = %(id)s"
                f" RETURNING g.id, {ROW}",
                v,
            ).fetchone()
        else:
            v = {"id": self.live[self.rng.randrange(len(self.live))]}
            row = conn.execute(
                "DELETE FROM public.geometrias g WHERE g.id = %(id)s RETURNING g.id, NULL", v
            ).fetchone()
        seconds = time.perf_counter() - t0
        if row is None:  # nothing matched: not a write
            return None
        if kind == "insert":
            self.live.append(row[0])
        elif kind == "delete":
            self.live.remove(row[0])
        return Op(kind, row[0], v, row[1], t0, seconds)

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="bench-writer") as conn:
            for n in range(self.max_ops):
                if self.stop.is_set():
                    break
                try:
                    op = self._one(conn, n)
                except psycopg.Error as e:  # not committed: not logged as a write
                    self.errors.append(str(e).splitlines()[0])
                    continue
                if op is not None:
                    self.ops.append(op)


class Reader(threading.Thread):
    """Q1-like and Q5-like SELECTs in a loop, each timed as (started, seconds)."""

    def __init__(self, url: str, seed: int = 11):
        super().__init__(daemon=True)
        self.url, self.rng = url, random.Random(seed)
        self.timings: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="bench-reader") as conn:
            while not self.stop.is_set():
                lon, lat = self.rng.uniform(-46.75, -46.6), self.rng.uniform(-23.65, -23.5)
                q = {"a": lon, "b": lat, "c": lon + 0.05, "d": lat + 0.05,
                     "d0": date(self.rng.randint(2020, 2028), 1, 1)}  # fmt: skip
                sql = self.rng.choice([
                    "SELECT count(*), sum(ST_Area(geom)) FROM public.geometrias "
                    "WHERE geom && ST_MakeEnvelope(%(a)s, %(b)s, %(c)s, %(d)s, 4326)",
                    "SELECT id, nome FROM public.geometrias WHERE data_referencia >= %(d0)s "
                    "AND data_referencia < %(d0)s + 91 "
                    "AND geom && ST_MakeEnvelope(%(a)s, %(b)s, %(c)s, %(d)s, 4326)",
                ])  # fmt: skip
                t0 = time.perf_counter()
                try:
                    conn.execute(sql, q).fetchall()
                except psycopg.Error as e:
                    self.errors.append(str(e).splitlines()[0])
                    continue
                self.timings.append((t0, time.perf_counter() - t0))


def _overlapping(timings: list[tuple[float, float]], t0: float, t1: float) -> list[float]:
    return [s for start, s in timings if start <= t1 and start + s >= t0]


def _wait_for(cond, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the writer made no progress")
        time.sleep(0.01)


def step(url: str, verb: str, target: str, *, batch_rows: int | None = None,
         max_ops: int = 100_000, after_s: float = 0.3) -> dict:  # fmt: skip
    """One migration under a live writer and reader; returns figures and the check's verdict."""
    from stage4 import migrations

    with psycopg.connect(url) as conn:
        before = table_state(conn)
    writer, reader = Writer(url, list(before), max_ops=max_ops), Reader(url)
    writer.start()
    reader.start()
    _wait_for(lambda: len(writer.ops) >= 20 and len(reader.timings) >= 5)
    metrics: dict = {}
    kw = {"metrics": metrics} | ({"batch_rows": batch_rows} if batch_rows else {})
    t0 = time.perf_counter()
    getattr(migrations, verb)(url, target, **kw)
    t1 = time.perf_counter()
    during = sum(1 for o in writer.ops if t0 <= o.started <= t1)
    time.sleep(after_s)
    writer.stop.set()
    reader.stop.set()
    writer.join()
    reader.join()
    with psycopg.connect(url) as conn:
        after = table_state(conn)
        diffs = problems(before, writer.ops, after) + values_match(conn, writer.ops)
    w = _overlapping([(o.started, o.seconds) for o in writer.ops], t0, t1)
    r = _overlapping(reader.timings, t0, t1)
    outside = [o.seconds for o in writer.ops if not t0 <= o.started <= t1]
    return {
        "step": f"{verb} {target}",
        "rows_before": len(before),
        "migration_wall_s": round(t1 - t0, 3),
        "migration_metrics": metrics,
        "writes_committed": len(writer.ops),
        "writes_during_migration": during,
        "writer_errors": writer.errors,
        "reader_errors": reader.errors,
        "writer_longest_block_s": round(max(w, default=0.0), 4),
        "writer_statement_median_s_outside": round(statistics.median(outside), 5)
        if outside
        else None,
        "reads_during_migration": len(r),
        "reader_longest_block_s": round(max(r, default=0.0), 4),
        "reader_median_s": round(statistics.median(s for _, s in reader.timings), 5),
        "problems": diffs[:20],
        "exact": not diffs,
    }


def plan() -> list[tuple[str, str]]:
    """opt1 up and down; opt2 too when the chain has it."""
    from stage4 import migrations

    if "opt2" in migrations.chain():
        return [("upgrade", "opt1"), ("upgrade", "opt2"), ("downgrade", "opt1"),
                ("downgrade", "schema")]  # fmt: skip
    return [("upgrade", "opt1"), ("downgrade", "schema")]


def main() -> None:
    from stage4 import migrations, seed
    from stage4.config import redact, settings
    from stage4.db import resolve_url

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", type=int, default=100_000)
    ap.add_argument("--url", help="server URL (a scratch database is created next to it)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/writers_during_opt1.json"))
    args = ap.parse_args()
    base = resolve_url(args.url)
    name = "writers_bench"
    url = urlunsplit(urlsplit(base)._replace(path="/" + name))  # keeps ?passfile=
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        migrations.upgrade(url, "schema")
        with psycopg.connect(url) as conn:
            seed.seed(conn, settings(), features=args.features, seed=42)
        results = []
        for verb, target in plan():
            r = step(url, verb, target)
            print(f"{r['step']:18} wall {r['migration_wall_s']:.2f} s | writer longest "
                  f"{r['writer_longest_block_s']:.3f} s | reader longest "
                  f"{r['reader_longest_block_s']:.3f} s | writes during {r['writes_during_migration']}"
                  f" | exact {r['exact']}", flush=True)  # fmt: skip
            results.append(r)
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    doc = {
        "command": f".venv/bin/python -m benchmarks.writers_during_opt1 --features {args.features}",
        "server": redact(urlunsplit(urlsplit(base)._replace(path="", query=""))),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "features": args.features,
        "steps": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    if not all(r["exact"] and not r["writer_errors"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
