"""Pre-flight: everything the runbook checked by hand before touching the database.

Read-only. Each check yields one line; a failing check refuses the upgrade
with that line (PreflightError) before anything is changed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from stage4 import optimisations
from stage4.config import Settings
from stage4.errors import ConfigError, PreflightError
from stage4.plumbing import migrations

# Years outside this window are data errors, not history: refuse them.
SANE_YEARS = (1900, 2200)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fatal: bool = True

    def line(self) -> str:
        mark = "ok" if self.ok else ("FAIL" if self.fatal else "warn")
        return f"[{mark}] {self.name}: {self.detail}"


@dataclass
class Preflight:
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)

    def add(self, name: str, ok: bool, detail: str, fatal: bool = True) -> None:
        self.checks.append(Check(name, ok, detail, fatal))

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.fatal]

    def raise_for_failures(self) -> None:
        if self.failures:  # every reason on the one line: fixing one should not reveal another
            reasons = "; ".join(f"{c.name}: {c.detail}" for c in self.failures)
            raise PreflightError(f"pre-flight refused (nothing was changed): {reasons}")


def run(
    conn,
    s: Settings,
    *,
    steps: list[str],
    expect_features: int | None = None,
    workload: Path | None = None,
) -> Preflight:
    """Run every check on an open psycopg connection; ``steps`` are the revisions to apply,
    ``workload`` the app's workload folder (default: ``[tool.stage4] workload``)."""
    p = Preflight()
    _workload_files(p, workload if workload is not None else s.workload_path)
    one = lambda sql, *a: conn.execute(sql, a or None).fetchone()[0]  # noqa: E731
    p.facts["postgres"] = one("SHOW server_version")
    postgis = conn.execute(
        "SELECT installed_version, default_version FROM pg_available_extensions "
        "WHERE name = 'postgis'"
    ).fetchone()
    if postgis is None:
        p.add(
            "postgis",
            False,
            "PostGIS is not available on the server (install postgresql-15-postgis-3 there)",
        )
    elif postgis[0] is None and migrations.chain()[0] not in steps:
        p.add(
            "postgis",
            False,
            "the postgis extension is not installed in this database (CREATE EXTENSION postgis)",
        )
    else:
        p.facts["postgis"] = postgis[0] or f"{postgis[1]} (available)"
        p.add("postgis", True, str(p.facts["postgis"]))
    preload = one("SHOW shared_preload_libraries")
    cron = "pg_cron" in preload
    p.facts["pg_cron"] = cron
    p.add(
        "pg_cron",
        True,
        "preloaded: scheduled refreshes"
        if cron
        else "not preloaded: refresh will be manual (stage4 refresh)",
        fatal=False,
    )
    table_exists = one("SELECT to_regclass(%s) IS NOT NULL", s.qualified_table)
    if table_exists:
        _table_checks(p, conn, s, one, expect_features)
        if rebuilder := optimisations.rebuilder(steps):
            _blockers(p, conn, s, rebuilder)
            _parallel_start(p, conn, one, rebuilder)
    elif migrations.chain()[0] not in steps:  # the first revision creates the table
        p.add("table", False, f"{s.qualified_table} does not exist")
    _names(p, conn, s, steps)
    # stage4's own objects (partitions, views, routines) go in its own schema
    lacking = conn.execute(
        "SELECT x FROM unnest(ARRAY[%(a)s, %(o)s]) x WHERE NOT (SELECT rolsuper FROM pg_roles "
        "WHERE rolname = current_user) AND CASE WHEN to_regnamespace(x) IS NULL "
        "THEN NOT has_database_privilege(current_database(), 'CREATE') "
        "ELSE NOT has_schema_privilege(x, 'CREATE') END",
        {"a": s.schema, "o": s.own_schema},
    ).fetchall()
    p.add(
        "privileges",
        not lacking,
        f"current user may not CREATE in {', '.join(r[0] for r in lacking)}"
        if lacking
        else "may create objects",
    )
    if table_exists:
        _disk(p, conn, s, one)
    return p


def _table_checks(p: Preflight, conn, s: Settings, one, expect_features: int | None) -> None:
    from stage4.ddl.table import contract_violations

    problems = contract_violations(conn, s)
    p.add("table contract", not problems, "; ".join(problems) or f"{s.qualified_table} matches")
    if problems:
        return
    n = one(f"SELECT count(*) FROM {s.qualified_table}")
    p.facts["features"] = n
    if expect_features is not None and n != expect_features:
        p.add("feature count", False, f"{n} features, expected {expect_features}")
    elif n == 0:
        p.add(
            "feature count",
            False,
            "the table is empty: the benchmark will measure an empty workload",
            fatal=False,
        )
    else:
        p.add("feature count", True, f"{n} features")
    g, t = s.geometry_column, s.time_column
    bad = conn.execute(
        f"SELECT count(*) FILTER (WHERE {g} IS NULL), "
        f"count(*) FILTER (WHERE {g} IS NOT NULL AND NOT ST_IsValid({g})), "
        f"min(id) FILTER (WHERE {g} IS NULL OR NOT ST_IsValid({g})), "
        f"array_agg(DISTINCT ST_SRID({g})) FILTER (WHERE {g} IS NOT NULL), "
        f"count(*) FILTER (WHERE {t} < make_date(%s, 1, 1) OR {t} >= make_date(%s, 1, 1)), "
        f"min({t}), max({t}) FROM {s.qualified_table}",
        SANE_YEARS,
    ).fetchone()
    nulls, invalid, example, srids, insane, lo, hi = bad
    p.add(
        "geometries",
        not (nulls or invalid),
        f"{nulls} NULL and {invalid} invalid geometries (first id {example}): fill or delete "
        f"the NULL ones and repair the invalid ones (UPDATE … SET {g} = ST_MakeValid({g}) "
        f"WHERE NOT ST_IsValid({g})) before migrating"
        if nulls or invalid
        else "all valid",
    )
    srids = sorted(srids or [])
    p.add(
        "SRID",
        srids in ([], [s.srid]),
        f"mixed SRIDs {srids}; every geometry must be SRID {s.srid}"
        if srids not in ([], [s.srid])
        else f"all {s.srid}",
    )
    p.add(
        "dates",
        not insane,
        f"{insane} rows dated outside {SANE_YEARS[0]}–{SANE_YEARS[1] - 1} (from {lo} to {hi}): "
        "fix the data first"
        if insane
        else f"from {lo} to {hi}",
    )


def _workload_files(p: Preflight, folder: Path | None) -> None:
    """The app's workload files, read as every bench will: one refused (it could write, it
    is not one statement…) stops the rollout here, not after the backup."""
    from stage4.measure import workload

    if folder is None:
        return
    try:
        found = workload.load_dir(folder)
    except ConfigError as e:
        p.add("workload files", False, str(e))
        return
    p.add("workload files", True, f"{len(found)} read{'s' * (len(found) != 1)} in {folder}")


def _names(p: Preflight, conn, s: Settings, steps: list[str]) -> None:
    """Every name the steps create (``optimisations.creates``) that an object holds which
    the step would not have made: the step would fail on it after the baseline bench, or
    (a future partition) skip that year for good and leave its rows in the default."""
    wanted = optimisations.creates(s, steps)
    if not wanted:
        return
    taken = []
    for rev, c in wanted:
        row = conn.execute(c.found).fetchone()
        if row is None or (c.mine is not None and _holds(conn, c.mine)):
            continue
        taken.append(f"{c.name} is {row[0]}, not {c.what} that {rev} creates")
    p.add(
        "names",
        not taken,
        "; ".join(taken) + ": rename, move or drop it first"
        if taken
        else f"none of the {len(wanted)} names {', '.join(steps)} create is taken",
    )


def _holds(conn, sql: str) -> bool:
    """A SQL boolean; one that fails (a table it names is absent) does not hold."""
    import psycopg

    try:
        with conn.transaction():
            return bool(conn.execute(sql).fetchone()[0])
    except psycopg.Error:
        return False


def _blockers(p: Preflight, conn, s: Settings, rev: str) -> None:
    """Dependent views and inbound foreign keys stop step ``rev`` (it recreates the table)."""
    views = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT dv.oid::regclass::text FROM pg_depend d "
            "JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class dv ON dv.oid = r.ev_class "
            "WHERE d.refobjid = %s::regclass AND dv.oid <> d.refobjid ORDER BY 1",
            (s.qualified_table,),
        ).fetchall()
    ]
    fks = [
        r[0]
        for r in conn.execute(
            "SELECT conname || ' on ' || conrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = %s::regclass AND conrelid <> confrelid ORDER BY 1",
            (s.qualified_table,),
        ).fetchall()
    ]
    if views:
        p.add(
            "dependent views",
            False,
            f"{rev} recreates {s.qualified_table}; drop or "
            f"recreate these views around it: {', '.join(views)}",
        )
    if fks:
        p.add(
            "inbound foreign keys",
            False,
            f"{rev} recreates {s.qualified_table}; these "
            f"foreign keys reference it: {', '.join(fks)}",
        )


SLOW_WORKER_MS = 3.0


def _parallel_start(p: Preflight, conn, one, rev: str) -> None:
    """What starting a parallel worker costs here: once step ``rev`` has partitioned the
    table, the planner runs short viewport queries as a Gather over a Parallel Append
    (PostGIS's costly functions make splitting look worth ``parallel_setup_cost``); where a
    worker takes milliseconds to start, a query of a few milliseconds can take several
    times as long and the gate may call ``rev`` slower. A worker running PostGIS also loads
    it first, so the figure measured here on a trivial query is a lower bound. Said, not
    refused: ``rev``'s unit carries the remedy (its ``SETTING`` and ``VALUE``)."""
    if int(one("SHOW max_parallel_workers_per_gather")) == 0:
        p.add(
            "parallel workers",
            True,
            "parallel queries are off (max_parallel_workers_per_gather = 0)",
            fatal=False,
        )
        return
    startup = worker_start_ms(conn)
    unit = optimisations.by_revision(rev)
    p.facts["parallel_worker_ms"] = round(startup, 2)
    if startup <= SLOW_WORKER_MS:
        p.add("parallel workers", True, f"one worker starts in {startup:.1f} ms", fatal=False)
        return
    p.add(
        "parallel workers",
        False,
        f"one worker starts in {startup:.1f} ms here: a parallel "
        f"plan over the partitions would cost short queries more than they take; {rev} sets "
        f"{unit.SETTING} = {unit.VALUE} for this database (new sessions; its downgrade "
        "restores the previous value)",
        fatal=False,
    )


def worker_start_ms(conn, n: int = 7) -> float:
    """Median ms one parallel worker adds to a trivial query (``force_parallel_mode``)."""
    version = conn.execute("SHOW server_version_num").fetchone()[0]
    force = "debug_parallel_query" if int(version) >= 160000 else "force_parallel_mode"

    def median_ms() -> float:  # never prepared: a cached plan ignores the SET
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("SELECT count(*) FROM pg_class", prepare=False).fetchone()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    serial = median_ms()
    conn.execute(f"SET {force} = on")
    try:
        return max(0.0, median_ms() - serial)
    finally:
        conn.execute(f"RESET {force}")


def _disk(p: Preflight, conn, s: Settings, one) -> None:
    """The copy needs about the table's total size again; check where we can see the disk."""
    need = one("SELECT pg_total_relation_size(%s::regclass)", s.qualified_table)
    p.facts["table_bytes"] = need
    free = free_bytes(conn)
    if free is None:
        p.add(
            "disk",
            True,
            f"copy needs ~{_mb(need)}; free space not visible from here (remote server)",
            fatal=False,
        )
        return
    p.facts["free_bytes"] = free
    ok = free > need * 1.2
    p.add(
        "disk",
        ok,
        f"copy needs ~{_mb(need)}, {_mb(free)} free"
        if ok
        else f"the migration copies the table ({_mb(need)}) and needs ~{_mb(int(need * 1.2))} free "
        f"on the database server's disk, which has {_mb(free)}: free space first",
    )


def free_bytes(conn) -> int | None:
    """Free bytes on the data directory's disk, when the server is on this machine."""
    override = os.environ.get("STAGE4_FREE_BYTES")  # lets tests and dry runs simulate a full disk
    if override:
        return int(override)
    import psycopg

    try:
        with conn.transaction():  # a savepoint: SHOW may be refused to non-superusers
            data_dir = conn.execute("SHOW data_directory").fetchone()[0]
        return shutil.disk_usage(data_dir).free
    except (psycopg.Error, OSError):
        return None


def _mb(n: int) -> str:
    if n < 1e3:
        return f"{n} bytes"
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"
