"""Read-only answers for `stage4 status`: where the database stands and what was decided.

Kept apart from every action (sqlite-utils' ``pending()``/``applied()`` habit).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from stage4.config import Settings
from stage4.plumbing import migrations
from stage4.plumbing.db import connect, where
from stage4.plumbing.tools import alive  # also backup's: whether a pid of this host runs


def collect(url: str, s: Settings, reports_dir: Path = Path("reports")) -> dict[str, Any]:
    """Revision, pending steps, rows, baseline, latest runs, cron jobs, drift, last verdicts."""
    info: dict[str, Any] = {"database": where(url), "revision": migrations.current(url)}
    info["pending"] = migrations.steps(url, "head")
    with connect(url) as conn:
        one = lambda sql, *a: conn.execute(sql, a or None).fetchone()[0]  # noqa: E731
        info["rows"] = table_rows(conn, s)
        from stage4.plumbing import version_table

        info["version_table"] = version_table.located(conn, s)
        info["strays"] = strays(conn, s)
        runs: list[dict[str, Any]] = []
        info["baseline"] = None
        if one("SELECT to_regclass(%s)", f"{s.bench_schema}.run_summary"):
            from stage4.measure import store

            runs = store.latest_runs(conn, 20, s)
            info["baseline"] = store.baseline_summary(conn, s)
        latest: dict[str, dict[str, Any]] = {}
        for r in runs:
            latest.setdefault(r["label"], r)
        info["latest_runs"] = list(latest.values())
        info["cron_jobs"] = (
            conn.execute(
                "SELECT jobname, schedule, active FROM cron.job "
                "WHERE jobname LIKE 'stage4%%' ORDER BY jobname"
            ).fetchall()
            if one("SELECT to_regclass('cron.job')")
            else None
        )
    from stage4.catalog import drift
    from stage4.plumbing import locks

    info["drift"] = drift.check(url, s, build=False)  # read-only: no scratch database
    info["last_rollout"] = roll = last_rollout(reports_dir, info["database"])
    info["rollout_running"] = locks.running(url)
    finished = roll is not None and roll["outcome"] != "running"
    info["unjudged"] = unjudged(roll, info["revision"]) if finished else []
    return info


def summary(url: str, s: Settings) -> dict[str, Any]:
    """Where the database stands after a command that changed it: database, revision, rows."""
    with connect(url) as conn:
        rows = table_rows(conn, s)
    return {"database": where(url), "revision": migrations.current(url), "rows": rows}


def strays(conn, s: Settings) -> list[str]:
    """stage4's own objects that an earlier stage4 made in the app's schema (where the API
    shows them): its partitions of the table there (as a count), and each view or routine
    of the steps found there under its own-schema name."""
    from stage4 import optimisations

    n = conn.execute(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s) AND c.relnamespace = to_regnamespace(%s)",
        (s.qualified_table, s.schema),
    ).fetchone()[0]
    out = [f"{n} partitions of {s.qualified_table}"] if n else []
    own = f"{s.own_schema}."
    for _, c in optimisations.creates(s, migrations.chain()):
        if not c.name.startswith(own):
            continue
        there = s.schema + "." + c.name[len(own) :]
        found = (
            "SELECT to_regprocedure(%s) IS NOT NULL"
            if "(" in there
            else "SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass(%s) "
            "AND relkind <> 'i' AND NOT relispartition)"
        )
        if conn.execute(found, (there,)).fetchone()[0] and there not in out:
            out.append(there)
    return out


def table_rows(conn, s: Settings) -> int | None:
    """Rows in the configured table; None when there is no such table."""
    present = conn.execute("SELECT to_regclass(%s)", (s.qualified_table,)).fetchone()[0]
    if not present:
        return None
    return conn.execute(f"SELECT count(*) FROM {s.qualified_table}").fetchone()[0]


def judged(verdict: str) -> bool:
    """A step's verdict that decided its fate (GO, NO-GO, FAILED, rolled back …)."""
    return verdict.startswith(("GO", "NO-GO", "FAILED", "rolled back"))


def unjudged(rollout: dict[str, Any], revision: str | None) -> list[str]:
    """The steps of a rollout (as in its rollout.json) that were committed but never judged
    and that the catalog still has applied (at or below ``revision``)."""
    revs = migrations.chain()
    if revision not in revs:
        return []
    steps = rollout.get("steps", [])
    verdicts = {st["revision"]: st["verdict"] for st in steps}
    return [
        st["revision"]
        for st in steps
        if st["revision"] in revs
        and revs.index(st["revision"]) <= revs.index(revision)
        and not judged(st["verdict"])
        and not _judged_in_package(st["verdict"], verdicts)
    ]


_PACKAGE = re.compile(r"^measured \(judged at (\S+)\)$")


def _judged_in_package(verdict: str, verdicts: dict[str, str]) -> bool:
    """A step of a ``--judge target`` package (measured, judged at the target) was judged
    once the target's verdict was GO: the package was kept as a whole."""
    m = _PACKAGE.match(verdict)
    return bool(m) and verdicts.get(m.group(1), "").startswith("GO")


def last_rollout(reports_dir: Path, database: str | None = None) -> dict[str, Any] | None:
    """The newest rollout.json under ``reports_dir`` (its verdict per step), if any; with
    ``database`` (as ``db.where`` names it), the newest of that database only: one reports/
    folder often serves several databases, and another one's run says nothing about this."""
    for path in sorted(Path(reports_dir).glob("*/rollout.json"), reverse=True):
        data = json.loads(path.read_text())
        if database is None or data.get("database") == database:
            break
    else:
        return None
    data["path"] = str(path.parent)
    if data.get("outcome") == "running":
        if not data.get("pid"):  # written before rollouts recorded their process
            data["outcome"] = "running, or interrupted (this rollout did not record its process)"
        elif not alive(data["pid"], data.get("host")):
            data["outcome"] = (
                f"did not finish (its process, pid {data['pid']}, is gone: interrupted or "
                "killed); each step commits or rolls back whole, so the revision above is "
                "where it stopped"
            )
    return data
