"""Run the Q1–Q10 workload: fingerprints, interleaved latency samples, throughput, cache hits.

A run, in order:

1. draw the parameters (``workload``: seeded, from the data). Every query runs the
   app's own text (``workload.queries``), the same at every revision: the app contract.
   Materialized views are read as the app finds them, never refreshed first (a stale
   view must show up, not be hidden by the instrument);
2. fingerprint pass, which is also the warm-up: every query on ``FINGERPRINT_SETS``
   fixed parameter sets, results hashed (so "faster but different" is caught
   whatever ``iterations`` is). Each rewrite the database offers
   (``workload.available``: SQL the app would have to adopt) is fingerprinted on the
   same sets and compared with the app's query;
3. throughput phase: pgbench, ``concurrency`` clients for ``duration`` seconds,
   one script file per (query, parameter set) with the literals inlined (pgbench
   variables cannot carry a bbox or a date), picked at random with a fixed
   ``--random-seed``; QPS = pgbench's tps since every script is one query. Without
   a pgbench binary the same scripts run on Python threads (recorded in the run).
   It runs before the latency phase so that every latency phase (baseline or not)
   starts on a machine in the same state: just after a saturating load;
4. latency phase: ``iterations`` rounds; each round runs every query on the same
   ``sets`` parameter sets, queries interleaved and rotated (round i starts at query
   i mod 10), so drift on a shared machine spreads over every query instead of
   hitting one block. Each execution is timed with ``time.perf_counter()`` around
   execute + fetch on one connection (no prepared statements, like pgbench's simple
   protocol) and kept (``executions``: the latency percentiles). The gate compares
   ``samples``: per round, the query's mean over its ``sets`` executions, so every
   sample measures the same work and its spread is the machine's noise, not the
   difference between a 50-metre and a 5-km viewport (with per-execution samples
   that mixture widens the interval of the median until a real regression goes
   unflagged). Before every query a CPU-bound control
   (``CONTROL_SQL``, no table) is timed and recorded (``control_ms``): it tells
   how loaded the machine was, round by round; the comparison uses it to discount the
   machine's own changes of speed (``stats``, "Machine drift");
5. cache hit = shared-buffer hits / block requests over phases 3–4, from
   ``pg_statio_all_tables`` of the app schema (``pg_stat_database`` for the whole
   database is recorded beside it);
6. rewrites, "available if your app adopts it": ``REWRITE_ROUNDS`` rounds alternating
   the app's query and the rewrite on the latency phase's parameter sets; the speedup is
   the ratio of their medians of round means, in the same run. Recorded in
   ``environment["available_rewrites"]``; no verdict reads it.

The app's writes W1–W3 (``stage4.measure.writes``: insert, geometry update, delete, each in a
transaction rolled back, on a connection of their own with prepared statements) go through
the same steps as a query, but the throughput phase: fingerprinted in step 2 (what the
write did, read back before the rollback), and timed in every round of step 4 beside the
reads, each after its control. Their rolled-back rows, which PostgreSQL counts as written,
are taken off the app's load (``environment["load"]``, ``environment["writes_rolled_back"]``).
They are kept out of ``overall`` (the reads' figures) and judged by their own margin and
floor (``stats.rule``).

Defaults (20 rounds of 4 parameter sets, 4 clients, 5 s) keep a run short enough to
bench every step of a rollout; BENCHMARKS.md gives measured durations.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg

from stage4.config import settings
from stage4.errors import Stage4Error
from stage4.measure import store, throughput, workload, writes
from stage4.measure.metrics import BenchRun, export, round_samples
from stage4.plumbing import livewrites, version_table
from stage4.plumbing.db import connect, where
from stage4.queries import WRITES, is_write

__all__ = ["BenchRun", "export", "run"]

ITERATIONS = 20
CONCURRENCY = 4
DURATION = 5.0
SETS = 4  # parameter sets per query, replayed in every round
THROUGHPUT_SETS = 12
PGBENCH_SCRIPTS = 128  # pgbench takes at most this many script files
REWRITE_ROUNDS = 5
# CPU-bound, touches no table: how fast the machine is right now (see the docstring).
CONTROL_SQL = "SELECT sum(i) FROM generate_series(1, 30000) AS i"
Progress = Callable[[str, int, int], None]
_GUCS = (
    "shared_buffers",
    "work_mem",
    "effective_cache_size",
    "random_page_cost",
    "jit",
    "max_parallel_workers_per_gather",
    "parallel_setup_cost",
    "effective_io_concurrency",
    "plan_cache_mode",
)


@dataclass
class _Draw:
    """What a run measures: the queries and their parameter sets, drawn once (step 1)."""

    catalogue: dict[str, workload.Query]
    anchors: workload.Anchors
    fp: dict[str, list[dict]]  # the fingerprint sets of each query
    latency: dict[str, list[dict]]  # the latency phase's sets of each query
    writes: writes.Writes  # W1–W3: their SQL, sets and the rows they wrote (rolled back)


def run(
    url: str,
    *,
    label: str = "RUN",
    iterations: int = ITERATIONS,
    concurrency: int = CONCURRENCY,
    duration: float = DURATION,
    progress: Progress | None = None,
    sets: int = SETS,
    seed: int = 42,
    save: bool = True,
    extra_rewrites: Mapping[str, Mapping[str, workload.Rewrite]] | None = None,
    workload_dir: Path | str | None = None,
) -> BenchRun:
    """Measure the workload on ``url``; store the run in the benchmarking schema (``save``).

    ``extra_rewrites``: rewrites to measure beside the registered ones (tests).
    ``workload_dir``: the app's own queries (``workload.load_dir``), measured and judged
    with Q1–Q10 (default: ``[tool.stage4] workload``). One that fails is recorded in
    ``environment["errors"]`` (qid -> file, error) and left out of the timed phases."""
    if min(iterations, concurrency, sets) < 1 or duration <= 0:
        raise Stage4Error("iterations, concurrency and sets must be >= 1 and duration > 0")
    s = settings()
    tick = progress or (lambda phase, done, total: None)
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    catalogue = _catalogue(s, workload_dir)  # a bad file is refused before connecting
    with connect(url, autocommit=True, prepare_threshold=None) as conn:
        store.ensure(conn, s)
        conn.execute(workload.READ_ONLY)  # from here on the workload cannot write
        offered = workload.available(conn, extra_rewrites)
        catalogue = workload.as_sent(conn, s, catalogue)
        draw = _draw(conn, s, catalogue, sets, seed)
        env = _environment(conn, s, url)
        load_start = livewrites.counters(conn, s)  # the app's writes during the run: its load
        wconn = writes.connect(url)
        rest = _rest_connection(url)
        try:
            fingerprints, errors = _fingerprints(conn, draw, tick, rest)
            fingerprints.update(writes.fingerprints(wconn, draw.writes))
            rewrites = _rewrites(conn, draw, offered, fingerprints)
            scripts = _throughput_scripts(conn, draw, seed)
            before = _cache_counters(conn, s)
            # Throughput first: every latency phase then follows the same saturating load
            # (on a burstable VM the first minute after idling runs faster: a baseline taken
            # on a rested machine would make every later run look slower).
            qps, tool = throughput.measure(url, scripts, concurrency, duration, seed, tick)
            executions, control = _latency(conn, wconn, draw, iterations, tick, rest)
        finally:
            rest.close()
            writes.close(wconn)  # its rolled-back rows counted before the readings below
        errors.update(_write_errors(draw.writes))
        conn.execute("SELECT pg_stat_force_next_flush()")
        _time_rewrites(conn, draw.catalogue, rewrites, draw.latency, tick)
        conn.execute("SELECT 1")
    with connect(url, autocommit=True) as conn:
        after = _wait_counters(conn, s, before)
        own = draw.writes.written
        env["load"] = livewrites.load(load_start, livewrites.counters(conn, s), own=own)
        env["writes_rolled_back"] = own
        env.update(
            _recorded(draw, errors, rewrites, control),
            cache_hit_db=_ratio(before["db"], after["db"]),
            throughput_tool=tool,
            seed=seed,
        )
        result = BenchRun(
            label=label.upper(),
            samples=round_samples(executions, sets),
            executions=executions,
            sets=sets,
            control=control,
            fingerprints=fingerprints,
            variants={q: "base" for q in executions},
            revision=env.get("revision"),
            qps=qps,
            cache_hit=_ratio(before["app"], after["app"]),
            environment=env,
            started_at=started,
            iterations=iterations,
            concurrency=concurrency,
            duration=float(duration),
        )
        result.seconds = time.perf_counter() - t0
        if save:
            store.save_run(conn, result, s)
    return result


def _catalogue(s, workload_dir: Path | str | None) -> dict[str, workload.Query]:
    """Q1–Q10 and the app's own files."""
    catalogue = workload.queries(s)
    folder = workload_dir if workload_dir is not None else s.workload_path
    if folder is not None:
        catalogue.update(workload.load_dir(folder))
    return catalogue


def _draw(conn, s, catalogue: dict[str, workload.Query], sets: int, seed: int) -> _Draw:
    """Step 1: each query's parameter sets, drawn from the data."""
    anchors = workload.sample_anchors(conn, s, seed)
    if not anchors.features:
        raise Stage4Error(f"{s.qualified_table} is empty: seed it before benchmarking")
    n = workload.FINGERPRINT_SETS
    return _Draw(
        catalogue,
        anchors,
        writes=writes.draw(s, anchors, sets, seed),
        fp={
            q: workload.parameters(q, anchors, n, seed, "fp", c.params)
            for q, c in catalogue.items()
        },
        latency={
            q: workload.parameters(q, anchors, sets, seed, gen=c.params)
            for q, c in catalogue.items()
        },
    )


def _rest_connection(url: str):
    """PostgREST's side: R1–R3 are sent as prepared statements (PostgREST prepares each
    query once per connection), read-only like every read of the bench."""
    rest = connect(url, autocommit=True, prepare_threshold=0)
    rest.execute(workload.READ_ONLY)
    return rest


def _sender(conn, rest, q: workload.Query):
    """The connection that sends ``q`` and how: R1–R3 prepared on ``rest``."""
    return (rest, {"prepare": True}) if q.prepared else (conn, {})


def _fingerprints(
    conn, draw: _Draw, tick, rest=None
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Step 2, the warm-up: (fingerprint per query, the app's files that failed); a file
    that fails is taken out of ``draw.catalogue``: after a step that is a finding, not a crash."""
    fingerprints: dict[str, str] = {}
    errors: dict[str, dict[str, str]] = {}
    total = workload.FINGERPRINT_SETS * len(draw.catalogue)
    for qid, q in list(draw.catalogue.items()):
        try:
            c, how = _sender(conn, rest or conn, q)
            fingerprints[qid] = _fingerprint(c, q.sql, draw.fp[qid], q.ordered, True, how)
            if q.source is not None:
                workload.still_read_only(conn)
        except psycopg.Error as e:
            if q.source is None:  # Q1–Q10 are ours: an error is a bug, raised as it is
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            errors[qid] = {"file": q.source, "error": first}
            del draw.catalogue[qid]
        tick("fingerprints", len(fingerprints) * workload.FINGERPRINT_SETS, total)
    tick("fingerprints", total, total)
    return fingerprints, errors


def _rewrites(conn, draw: _Draw, offered, fingerprints) -> dict[str, dict[str, dict]]:
    """Step 2 for each rewrite the database offers: its SQL and whether it returns what
    the app's query returns on the same sets (its timing comes in step 6)."""
    found: dict[str, dict[str, dict]] = {}
    for qid, rewrites in offered.items():
        if qid not in draw.catalogue:
            continue
        ordered = draw.catalogue[qid].ordered
        found[qid] = {
            name: {
                "sql": sql,
                "same_results": _fingerprint(conn, sql, draw.fp[qid], ordered) == fingerprints[qid],
            }
            for name, sql in rewrites.items()
        }
    return found


def _throughput_scripts(conn, draw: _Draw, seed: int) -> list[str]:
    """Step 3's scripts: each query on its own parameter sets, literals inlined."""
    per_query = max(1, min(THROUGHPUT_SETS, PGBENCH_SCRIPTS // len(draw.catalogue)))
    return [
        _literal(conn, c.sql, p)
        for q, c in draw.catalogue.items()
        for p in workload.parameters(q, draw.anchors, per_query, seed, "tp", c.params)
    ]


def _latency(
    conn, wconn, draw: _Draw, iterations: int, tick, rest=None
) -> tuple[dict[str, list[float]], list[float]]:
    """Step 4: (every execution's ms per query, the control query's ms before each query).
    The writes that ran in step 2 take their turn in the rounds, on ``wconn``."""
    w = draw.writes
    order = [*draw.catalogue, *(q for q in w.sql if q not in w.errors)]
    executions: dict[str, list[float]] = {q: [] for q in order}
    control: list[float] = []
    for i in range(iterations):
        shift = i % len(order)
        for qid in order[shift:] + order[:shift]:
            start = time.perf_counter()
            conn.execute(CONTROL_SQL).fetchall()
            control.append((time.perf_counter() - start) * 1000.0)
            if qid in w.sql:
                executions[qid] += writes.timed(wconn, w, qid)
                continue
            q = draw.catalogue[qid]
            c, how = _sender(conn, rest or conn, q)
            for p in draw.latency[qid]:
                start = time.perf_counter()
                c.execute(q.sql, p, **how).fetchall()
                executions[qid].append((time.perf_counter() - start) * 1000.0)
        tick("latency", i + 1, iterations)
    return executions, control


def _write_errors(w: writes.Writes) -> dict[str, dict[str, str]]:
    """The writes that failed, in the shape of a workload file's error (named, not timed)."""
    return {q: {"file": f"the app's {WRITES[q]}, rolled back", "error": e}
            for q, e in w.errors.items()}  # fmt: skip


def _recorded(draw: _Draw, errors, rewrites, control: list[float]) -> dict:
    """What the run records beside its timings: the SQL measured, the files, the rewrites."""
    catalogue = draw.catalogue
    files = {q: c.source for q, c in catalogue.items() if c.source}
    failed = {q: e["file"] for q, e in errors.items() if not is_write(q)}
    return {
        "workload_sql": {q: c.sql for q, c in catalogue.items()} | draw.writes.sql,
        "contract": {q: workload.sends(c) for q, c in catalogue.items()}
        | dict.fromkeys(draw.writes.sql, "write, rolled back"),
        "workload_files": files | failed,
        "errors": errors,
        "available_rewrites": rewrites,
        "anchors": len(draw.anchors.features),
        "params_digest": workload.params_digest(draw.latency | draw.writes.latency),
        "fingerprint_sets": workload.FINGERPRINT_SETS,
        "control_ms": statistics.median(control),
        "load_average_end": os.getloadavg(),
    }


def _literal(conn, sql: str, params: dict) -> str:
    return psycopg.ClientCursor(conn).mogrify(sql, params)


def _fingerprint(
    conn, sql: str, params: list[dict], ordered: bool, raising: bool = False, how=None
):
    """A query's fingerprint on its parameter sets; a rewrite that errors gets None."""
    fp = workload.Fingerprint()
    try:
        for p in params:
            fp.add(conn.execute(sql, p, **(how or {})).fetchall(), ordered)
    except psycopg.Error:
        if raising:
            raise
        return None
    return fp.hexdigest()


def _time_rewrites(conn, catalogue, rewrites, lat_params, tick) -> None:
    """Each rewrite against the app's query, alternating in the same rounds (step 6)."""
    todo = [(q, n) for q, found in rewrites.items() for n, r in found.items() if r["same_results"]]
    for k, (qid, name) in enumerate(todo):
        r = rewrites[qid][name]
        rounds: dict[str, list[float]] = {"app": [], "rewrite": []}
        for i in range(REWRITE_ROUNDS):
            pair = [("app", catalogue[qid].sql), ("rewrite", r["sql"])]
            for which, sql in pair if i % 2 == 0 else pair[::-1]:
                start = time.perf_counter()
                for p in lat_params[qid]:
                    conn.execute(sql, p).fetchall()
                rounds[which].append((time.perf_counter() - start) * 1000.0 / len(lat_params[qid]))
        app, new = statistics.median(rounds["app"]), statistics.median(rounds["rewrite"])
        r.update(
            app_ms=round(app, 3),
            rewrite_ms=round(new, 3),
            speedup=round(app / new, 2) if new > 0 else None,
        )
        tick("rewrites", k + 1, len(todo))


# ------------------------------------------------------------------ cache hits, environment


def _cache_counters(conn, s) -> dict[str, tuple[int, int]]:
    app = conn.execute(
        "SELECT coalesce(sum(coalesce(heap_blks_hit, 0) + coalesce(idx_blks_hit, 0) "
        "+ coalesce(toast_blks_hit, 0) + coalesce(tidx_blks_hit, 0)), 0), "
        "coalesce(sum(coalesce(heap_blks_read, 0) + coalesce(idx_blks_read, 0) "
        "+ coalesce(toast_blks_read, 0) + coalesce(tidx_blks_read, 0)), 0) "
        "FROM pg_statio_all_tables WHERE schemaname IN (%s, %s)",  # partitions: stage4's
        (s.schema, s.own_schema),
    ).fetchone()
    db = conn.execute(
        "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return {"app": (int(app[0]), int(app[1])), "db": (int(db[0]), int(db[1]))}


def _wait_counters(conn, s, before) -> dict[str, tuple[int, int]]:
    """Counters after the run: backends flush their stats on exit, so poll briefly."""
    last = None
    for _ in range(10):
        now = _cache_counters(conn, s)
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    return last


def _ratio(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    hit, read = after[0] - before[0], after[1] - before[1]
    return hit / (hit + read) if hit + read > 0 else None


def _git_sha() -> str | None:
    root = Path(__file__).resolve().parents[3]  # the checkout
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _environment(conn, s, url: str) -> dict:
    one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    revision = version_table.revision(conn, s)
    gucs = dict(
        conn.execute(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)",
            (list(_GUCS),),
        ).fetchall()
    )
    return {
        "database": where(url),
        "revision": revision,
        "postgresql": one("SELECT version()"),
        "postgis": one("SELECT postgis_lib_version()"),
        "row_count": one(f"SELECT count(*) FROM {s.qualified_table}"),
        "settings": gucs,
        "git_sha": _git_sha(),
        "machine": {
            "python": platform.python_version(),
            "system": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "load_average_start": os.getloadavg(),
    }
