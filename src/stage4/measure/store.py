"""The ``benchmarking`` schema: every run, its samples and the baseline, kept in the database.

stage4 creates and upgrades this schema itself (``ensure``), never an OPT revision,
and no downgrade drops it: the history of measurements survives every rollback.
The schema's version is its comment (``stage4 benchmarking schema v1``); ``ensure``
applies the missing steps of ``_STEPS`` in order, so a later stage4 can add one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from stage4.config import Settings, settings
from stage4.errors import ConfigError
from stage4.queries import WRITES

if TYPE_CHECKING:
    from stage4.measure.metrics import BenchRun

VERSION = 3
CONTROL = "_control"  # query_id of the control query's timings in samples (see bench)
_COMMENT = "stage4 benchmarking schema v{}"


def _v1(b: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {b}.runs (
    run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label text NOT NULL,
    revision text,
    started_at timestamptz NOT NULL DEFAULT now(),
    seconds double precision,
    iterations integer NOT NULL,
    sets integer NOT NULL,
    concurrency integer NOT NULL,
    duration double precision NOT NULL,
    qps double precision,
    cache_hit double precision,
    fingerprints jsonb NOT NULL DEFAULT '{{}}',
    variants jsonb NOT NULL DEFAULT '{{}}',
    environment jsonb NOT NULL DEFAULT '{{}}'
)""",
        f"CREATE INDEX IF NOT EXISTS runs_label_idx ON {b}.runs (label, run_id)",
        f"""CREATE TABLE IF NOT EXISTS {b}.samples (
    run_id bigint NOT NULL REFERENCES {b}.runs ON DELETE CASCADE,
    query_id text NOT NULL,
    seq integer NOT NULL,
    round integer NOT NULL,
    latency_ms double precision NOT NULL CHECK (latency_ms > 0),
    PRIMARY KEY (run_id, query_id, seq)
)""",
        f"""CREATE TABLE IF NOT EXISTS {b}.baselines (
    baseline_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES {b}.runs,
    set_at timestamptz NOT NULL DEFAULT now(),
    forced boolean NOT NULL DEFAULT false
)""",
        f"CREATE INDEX IF NOT EXISTS baselines_run_idx ON {b}.baselines (run_id)",
        f"""CREATE OR REPLACE VIEW {b}.run_summary AS
SELECT r.run_id, r.label, r.revision, r.started_at, count(*) AS samples,
       avg(s.latency_ms) AS mean_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s.latency_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY s.latency_ms) AS p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY s.latency_ms) AS p99_ms,
       r.qps, r.cache_hit
FROM {b}.runs r JOIN {b}.samples s USING (run_id)
WHERE s.query_id <> '{CONTROL}'
GROUP BY r.run_id""",
        f"""CREATE OR REPLACE VIEW {b}.baseline_comparison AS
WITH base AS (SELECT run_id FROM {b}.baselines ORDER BY baseline_id DESC LIMIT 1),
rounds AS (
  SELECT run_id, query_id, round, avg(latency_ms) AS ms
  FROM {b}.samples WHERE query_id <> '{CONTROL}' GROUP BY run_id, query_id, round),
med AS (
  SELECT run_id, query_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50_ms
  FROM rounds GROUP BY run_id, query_id)
SELECT r.run_id, r.label, m.query_id, base.run_id AS baseline_run_id,
       bm.p50_ms AS baseline_p50_ms, m.p50_ms,
       m.p50_ms / bm.p50_ms AS ratio, 100 * (m.p50_ms / bm.p50_ms - 1) AS change_pct,
       r.fingerprints -> m.query_id = b.fingerprints -> m.query_id AS same_result
FROM base JOIN {b}.runs b ON b.run_id = base.run_id
JOIN med bm ON bm.run_id = base.run_id
JOIN med m ON m.query_id = bm.query_id
JOIN {b}.runs r ON r.run_id = m.run_id""",
    ]


def _v2(b: str) -> list[str]:
    # What the app schema's catalog looked like right after stage4 applied or rolled back a
    # revision: the record `stage4 drift` compares the live catalog with (see drift.py).
    return [
        f"""CREATE TABLE IF NOT EXISTS {b}.catalog_records (
    record_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    revision text NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    catalog jsonb NOT NULL
)""",
        f"CREATE INDEX IF NOT EXISTS catalog_records_revision_idx "
        f"ON {b}.catalog_records (revision, record_id)",
    ]


def _v3(b: str) -> list[str]:
    # The app's writes (W1–W3, rolled back) are stored as queries; a run's summary is its
    # reads', as METRICS' "overall" is.
    writes = ", ".join(f"'{q}'" for q in WRITES)
    return [
        f"""CREATE OR REPLACE VIEW {b}.run_summary AS
SELECT r.run_id, r.label, r.revision, r.started_at, count(*) AS samples,
       avg(s.latency_ms) AS mean_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s.latency_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY s.latency_ms) AS p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY s.latency_ms) AS p99_ms,
       r.qps, r.cache_hit
FROM {b}.runs r JOIN {b}.samples s USING (run_id)
WHERE s.query_id <> '{CONTROL}' AND s.query_id NOT IN ({writes})
GROUP BY r.run_id""",
        f"COMMENT ON VIEW {b}.run_summary IS 'each run over its reads: the writes W1-W3 "
        "(rolled back) are in samples, not here'",
    ]


_STEPS = {1: _v1, 2: _v2, 3: _v3}


def version(conn, s: Settings | None = None) -> int:
    """The schema's version: 0 when it does not exist (or carries no stage4 comment)."""
    b = (s or settings()).bench_schema
    row = conn.execute(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", (b,)
    ).fetchone()
    if row is None or not row[0] or not row[0].startswith(_COMMENT.format("")):
        return 0
    return int(row[0].removeprefix(_COMMENT.format("")))


def ensure(conn, s: Settings | None = None) -> int:
    """Create the schema if absent, upgrade it if older; return its version (idempotent)."""
    s = s or settings()
    b = s.bench_schema
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"stage4:{b}",))
        have = version(conn, s)
        if have > VERSION:
            raise ConfigError(
                f"schema {b} is at version {have}, newer than this stage4 ({VERSION}): "
                "upgrade stage4"
            )
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {b}")
        for v in range(have + 1, VERSION + 1):
            for statement in _STEPS[v](b):
                conn.execute(statement)
        conn.execute(f"COMMENT ON SCHEMA {b} IS '{_COMMENT.format(VERSION)}'")
    return VERSION


def save_run(conn, run: BenchRun, s: Settings | None = None) -> int:
    """Insert a run and its samples; set and return ``run.run_id``."""
    b = (s or settings()).bench_schema
    with conn.transaction():
        run.run_id = conn.execute(
            f"INSERT INTO {b}.runs (label, revision, seconds, iterations, sets, concurrency, "
            "duration, qps, cache_hit, fingerprints, variants, environment) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING run_id",
            (
                run.label,
                run.revision,
                run.seconds,
                run.iterations,
                run.sets,
                run.concurrency,
                run.duration,
                run.qps,
                run.cache_hit,
                json.dumps(run.fingerprints),
                json.dumps(run.variants),
                json.dumps(run.environment, default=str),
            ),
        ).fetchone()[0]
        with conn.cursor().copy(
            f"COPY {b}.samples (run_id, query_id, seq, round, latency_ms) FROM STDIN"
        ) as copy:
            for qid, values in (run.executions or run.samples).items():
                per_round = run.sets if run.executions else 1
                for i, ms in enumerate(values):
                    copy.write_row((run.run_id, qid, i, i // per_round, ms))
            per_round = len(run.control) // max(1, run.iterations)
            for i, ms in enumerate(run.control):
                copy.write_row((run.run_id, CONTROL, i, i // max(1, per_round), ms))
    return run.run_id


def load_run(conn, run_id: int, s: Settings | None = None) -> BenchRun:
    """A stored run, samples included; ConfigError when there is no such run."""
    from stage4.measure.metrics import BenchRun, round_samples

    b = (s or settings()).bench_schema
    row = conn.execute(
        f"SELECT run_id, label, revision, started_at, seconds, iterations, concurrency, "
        f"duration, qps, cache_hit, fingerprints, variants, environment, sets "
        f"FROM {b}.runs WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    if row is None:
        raise ConfigError(f"no benchmark run {run_id} in {b}.runs (see `stage4 compare --help`)")
    executions: dict[str, list[float]] = {}
    for qid, ms in conn.execute(
        f"SELECT query_id, latency_ms FROM {b}.samples WHERE run_id = %s ORDER BY seq",
        (run_id,),
    ):
        executions.setdefault(qid, []).append(ms)
    control = executions.pop(CONTROL, [])
    order = sorted(executions, key=_qkey)
    executions = {q: executions[q] for q in order}
    env, sets = row[12], row[13]
    return BenchRun(
        run_id=row[0],
        label=row[1],
        revision=row[2],
        started_at=row[3].isoformat(),
        seconds=row[4],
        iterations=row[5],
        concurrency=row[6],
        duration=row[7],
        qps=row[8],
        cache_hit=row[9],
        fingerprints=row[10],
        variants=row[11],
        environment=env,
        sets=sets,
        executions=executions,
        control=control,
        samples=round_samples(executions, sets),
    )


def _qkey(qid: str) -> tuple[bool, int, str]:
    """Reads in their order (Q2 before Q10), then the writes."""
    digits = "".join(ch for ch in qid if ch.isdigit())
    return (qid in WRITES, int(digits) if digits else 0, qid)


def latest_runs(conn, limit: int = 20, s: Settings | None = None) -> list[dict[str, Any]]:
    """The newest runs (summary rows from the ``run_summary`` view), newest first."""
    return _summaries(conn, s, "ORDER BY v.run_id DESC LIMIT %s", limit)


def baseline_summary(conn, s: Settings | None = None) -> dict[str, Any] | None:
    """The baseline's summary row, the run ``baseline_run_id`` names (as `stage4 compare`
    finds it), however many runs were stored after it; None when none was set."""
    run_id = baseline_run_id(conn, s)
    found = None if run_id is None else _summaries(conn, s, "WHERE v.run_id = %s", run_id)
    return found[0] if found else None


def _summaries(conn, s: Settings | None, where: str, arg: int) -> list[dict[str, Any]]:
    b = (s or settings()).bench_schema
    base = baseline_run_id(conn, s)
    cur = conn.execute(
        f"SELECT v.*, v.run_id IS NOT DISTINCT FROM %s::bigint AS is_baseline "
        f"FROM {b}.run_summary v {where}",
        (base, arg),
    )
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def baseline_run_id(conn, s: Settings | None = None) -> int | None:
    """The baseline: the newest row of the baselines table (every command reads it here)."""
    b = (s or settings()).bench_schema
    row = conn.execute(
        f"SELECT run_id FROM {b}.baselines ORDER BY baseline_id DESC LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def load_baseline(conn, s: Settings | None = None) -> BenchRun | None:
    """The current baseline run, or None when none was ever set."""
    run_id = baseline_run_id(conn, s)
    return None if run_id is None else load_run(conn, run_id, s)


def set_baseline(conn, run_id, force: bool = False, *, s: Settings | None = None) -> int:
    """Make ``run_id`` the baseline; refuse to replace an existing one unless ``force``.

    Earlier baselines stay in the table (history); the newest row is the baseline.
    Also accepts the gate's ``set_baseline(conn, settings, run_id)`` order.
    """
    if isinstance(run_id, Settings):  # set_baseline(conn, s, run_id[, force])
        s, run_id, force = run_id, force, False
    b = (s or settings()).bench_schema
    with conn.transaction():
        conn.execute(f"LOCK TABLE {b}.baselines IN SHARE ROW EXCLUSIVE MODE")
        if conn.execute(f"SELECT 1 FROM {b}.runs WHERE run_id = %s", (run_id,)).fetchone() is None:
            raise ConfigError(f"no benchmark run {run_id} in {b}.runs: cannot make it the baseline")
        current = baseline_run_id(conn, s)
        if current is not None and current != run_id and not force:
            raise ConfigError(
                f"a baseline already exists (run {current}); pass --force to replace it "
                f"with run {run_id}"
            )
        if current != run_id:
            conn.execute(
                f"INSERT INTO {b}.baselines (run_id, forced) VALUES (%s, %s)",
                (run_id, current is not None),
            )
    return run_id


def latest_run_id(conn, s: Settings | None = None) -> int | None:
    b = (s or settings()).bench_schema
    row = conn.execute(f"SELECT max(run_id) FROM {b}.runs").fetchone()
    return row[0]


def baseline_and_run(
    conn, run_id: int | None = None, s: Settings | None = None
) -> tuple[BenchRun, BenchRun]:
    """The baseline and run ``run_id`` (default: the latest run) to compare, the schema made
    current first; ConfigError when no baseline is stored."""
    s = s or settings()
    ensure(conn, s)
    base = load_baseline(conn, s)
    if base is None:
        raise ConfigError("no baseline stored: run `stage4 baseline` first")
    return base, load_run(conn, run_id if run_id is not None else latest_run_id(conn, s), s)
