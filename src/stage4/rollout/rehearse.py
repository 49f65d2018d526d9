"""Rehearsal: the gated rollout on a copy of the database, before it runs on the real one.

A revision that passes every check on a test database can run for minutes on
millions of rows. ``rehearse`` copies the app schema and the benchmarking schema
(``pg_dump``: an ACCESS SHARE lock on each table, the weakest there is, and not one
write) into a scratch database, on the embedded cluster unless ``--scratch-url`` names
one, and runs ``gate.upgrade`` there: the same steps, verdicts and report, on the
source's rows (or ``--sample N`` of them). The scratch copy measures its own baseline:
the source's stored one was taken on other hardware (and, with a sample, other data),
so it is compared with the scratch's, and reported, never used as the gate's.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stage4.config import Settings, redact, settings
from stage4.ddl import counts, nearest
from stage4.errors import ConfigError, GateError, PreflightError, Stage4Error
from stage4.plumbing.db import connect, where

_OTHER = "on {scratch}, not on the source's server: other hardware, other cache, other load"
_SAME = (
    "in {scratch}, on the source's own server: the same hardware, but not the source's "
    "cache, and the load of a rehearsal, not of production"
)


def hardware(source: str, scratch: str) -> str:
    """What the rehearsal's figures are worth, said in its output and report."""
    same = source.rsplit("/", 1)[0] == scratch.rsplit("/", 1)[0]
    where_ = (_SAME if same else _OTHER).format(scratch=scratch)
    return (
        f"The rehearsal ran {where_}. Its verdicts say what each step does to this "
        "workload; its milliseconds are the scratch server's."
    )


class RehearsalError(Stage4Error):
    """The copy could not be made; the source was only read."""


@dataclass
class Rehearsal:
    source: str
    scratch: str
    revision: str | None
    target: str
    sample: int | None
    copy_seconds: float = 0.0
    rows: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = ""
    report: str | None = None
    baselines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    no_go: bool = False


def run(
    url: str,
    target: str,
    opts: Any = None,
    *,
    scratch_url: str | None = None,
    sample: int | None = None,
    keep: bool = False,
    phase=None,
    progress=None,
) -> Rehearsal:
    """Copy the source into a scratch database and run the gated rollout to ``target`` there,
    judged as ``opts`` says (the upgrade's own options). Already at ``target``: nothing is
    copied, the outcome says so (as an upgrade's does)."""
    from stage4.catalog import drift
    from stage4.plumbing import migrations
    from stage4.rollout import gate

    s = settings()
    opts = opts or gate.GateOptions()
    say = phase or (lambda step, text: None)
    if sample is not None and sample < 1:
        raise ConfigError(f"--sample takes a number of rows (1 or more), not {sample}")
    target = migrations.check_target(target)
    revision = migrations.current(url)
    if not migrations.steps(url, target):
        return Rehearsal(
            where(url),
            "",
            revision,
            target,
            sample,
            outcome=f"already at {revision}: nothing to do",
        )
    found = drift.check(url)  # read-only
    if found.drifted and not opts.accept_drift:
        raise PreflightError(drift.refusal(found))
    _expect_features(url, s, opts.expect_features)

    created = scratch_url is None
    scratch = _embedded_scratch(s) if created else _check_scratch(url, scratch_url, s)
    result = Rehearsal(where(url), where(scratch), revision, target, sample)
    if found.drifted:
        result.notes += [f"source drift accepted (--accept-drift): {d}" for d in found.differences]
    try:
        say("copy", f"pg_dump {where(url)} → {where(scratch)}")
        t0 = time.perf_counter()
        result.notes += copy(url, scratch, s, sample)
        result.copy_seconds = time.perf_counter() - t0
        source_base = _reset_baseline(scratch, s)
        with connect(scratch) as conn:
            result.rows = conn.execute(f"SELECT count(*) FROM {s.qualified_table}").fetchone()[0]
        say("copy", f"{result.rows} rows in {result.copy_seconds:.1f} s")
        # the copy differs from the source's record in what pg_dump does not carry (cron
        # jobs live in another database): the source's drift was checked above
        # --expect-features was the source's count (checked above); a sample holds fewer
        scratch_opts = replace(
            opts,
            backup=False,
            accept_drift=True,
            expect_features=None if sample is not None else opts.expect_features,
        )
        try:
            gate.upgrade(scratch, target, scratch_opts, phase=phase, progress=progress)
        except GateError:
            result.no_go = True
        _collect(result, scratch, opts.reports_dir, source_base, s)
    finally:
        if created and not keep:
            _drop(scratch)
    return result


def _expect_features(url: str, s: Settings, expected: int | None) -> None:
    """``--expect-features`` holds for the source's table, before anything is copied."""
    if expected is None:
        return
    with connect(url) as conn:
        conn.execute("SET default_transaction_read_only = on")
        present = conn.execute("SELECT to_regclass(%s)", (s.qualified_table,)).fetchone()[0]
        n = (
            conn.execute(f"SELECT count(*) FROM {s.qualified_table}").fetchone()[0]
            if present
            else 0
        )
    if n != expected:
        raise PreflightError(
            f"pre-flight failed: feature count: {n} features in {s.qualified_table}, expected "
            f"{expected} (--expect-features); nothing was copied"
        )


def copy(url: str, scratch: str, s: Settings, sample: int | None = None) -> list[str]:
    """Restore the source's app and benchmarking schemas into ``scratch`` (empty); with
    ``sample``, only that many of the table's rows (the same ones each time)."""
    notes = _prepare(url, scratch)
    with tempfile.TemporaryDirectory(prefix="stage4-rehearse-") as tmp:
        dump = Path(tmp) / "source.dump"
        args = ["-Fc", "--no-sync", "-f", str(dump)]
        for schema in dict.fromkeys((s.schema, "public", s.bench_schema, s.own_schema)):
            args.append(f"--schema={schema}")
        if sample is not None:
            t = s.qualified_table
            args.append(f"--exclude-table-data={t}")
            for schema in (s.own_schema, s.schema):  # the partitions (an earlier stage4's too)
                args += [f"--exclude-table-data={schema}.{s.table}_{p}" for p in ("p*", "default")]
            # derived from the table's rows: the sample's own fill it through its trigger
            args.append(f"--exclude-table-data={nearest.table(s)}")
            args.append(f"--exclude-table-data={counts.of(s).qualified}")
        _tool("pg_dump", url, args)
        # every entry but the schemas the scratch database already has (public)
        with connect(scratch) as conn:
            have = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
        listing = Path(tmp) / "restore.list"
        toc = _tool("pg_restore", None, ["--list", str(dump)])
        listing.write_text(
            "".join(
                line for line in toc.splitlines(keepends=True) if not _existing_schema(line, have)
            )
        )
        _tool(
            "pg_restore",
            scratch,
            [
                "--no-owner",
                "--exit-on-error",
                "--single-transaction",
                "--use-list",
                str(listing),
                str(dump),
            ],
        )
    if sample is not None:
        notes.append(_sample(url, scratch, s, sample))
    return notes


def _prepare(url: str, scratch: str) -> list[str]:
    """The source's extensions and roles, which a dump of some schemas does not carry."""
    notes = []
    with connect(url) as src:
        src.execute("SET default_transaction_read_only = on")
        extensions = [
            r[0]
            for r in src.execute(
                "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY oid"
            )
        ]
        roles = [r[0] for r in src.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_'")]
    with connect(scratch, autocommit=True) as dst:
        have = {r[0] for r in dst.execute("SELECT rolname FROM pg_roles")}
        for role in roles:
            if role not in have:  # grants name them: NOLOGIN, no password, no rights of its own
                dst.execute(f'CREATE ROLE "{role}" NOLOGIN')
        for ext in extensions:
            try:
                dst.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"')
            except Exception as e:  # pg_cron runs in one database per server: not this one
                notes.append(
                    f"extension {ext} not available in the scratch database: "
                    f"{redact(str(e).strip().splitlines()[0])}"
                )
    return notes


def _sample(url: str, scratch: str, s: Settings, rows: int) -> str:
    from stage4.plumbing.refresh import refresh_all

    t = s.qualified_table
    with connect(url) as src, connect(scratch) as dst:
        src.execute("SET default_transaction_read_only = on")
        cols = ", ".join(
            r[0]
            for r in src.execute(
                "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                (t,),
            )
        )
        total = src.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        # the rows whose hashed id comes first: a spread over the whole table, the same
        # rows on every rehearsal of the same data (a Bernoulli sample is neither exact in
        # size nor, on a partitioned table, sized from the right row estimate)
        query = (
            f"COPY (SELECT {cols} FROM {t} ORDER BY hashint8extended(id, 42) "
            f"LIMIT {rows}) TO STDOUT"
        )
        with (
            src.cursor().copy(query) as out,
            dst.cursor().copy(f"COPY {t} ({cols}) FROM STDIN") as into,
        ):
            for chunk in out:
                into.write(chunk)
        dst.commit()
        copied = dst.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    refresh_all(scratch)
    with connect(scratch, autocommit=True) as dst:
        dst.execute(f"ANALYZE {t}")
    return f"sample: {copied} of {total} rows (the first by a hash of their id)"


def _reset_baseline(scratch: str, s: Settings):
    """The source's stored baseline (as copied), then none in the scratch: the gate
    measures its own there."""
    from stage4.measure import store

    with connect(scratch, autocommit=True) as conn:
        store.ensure(conn, s)
        base = store.load_baseline(conn, s)
        conn.execute(f"DELETE FROM {s.bench_schema}.baselines")
    return base


def _collect(result: Rehearsal, scratch: str, reports_dir: Path, source_base, s) -> None:
    from stage4.measure import stats, store
    from stage4.rollout.status import last_rollout

    rollout = last_rollout(reports_dir, where(scratch))
    if rollout is None:
        return
    result.steps = rollout["steps"]
    result.outcome = rollout["outcome"]
    folder = Path(rollout["path"])
    result.report = str(folder / "REPORT.md")
    if rollout.get("baseline_run_id") is not None:
        with connect(scratch) as conn:
            mine = store.load_run(conn, rollout["baseline_run_id"], s)
        if source_base is None:
            result.baselines.append("the source has no stored baseline to compare with")
        else:
            comps = stats.compare_bench(source_base, mine)
            mean_ratio = stats.geometric_mean([c.ratio for c in comps.values()])
            result.baselines.append(
                f"scratch baseline (run {mine.run_id}, {mine.overall['mean']:.2f} ms mean) vs "
                f"the source's stored one (run {source_base.run_id}, "
                f"{source_base.overall['mean']:.2f} ms mean): geometric mean of per-query "
                f"ratios x{mean_ratio:.2f}"
            )
            result.baselines += [
                f"{q}: {c.baseline_median:.2f} → {c.candidate_median:.2f} ms ({stats.ratio_text(c)})"
                for q, c in comps.items()
            ]
    _append_report(folder, result)


def _append_report(folder: Path, r: Rehearsal) -> None:
    """A rehearsal section under the gate's REPORT.md, and rehearsal.json beside it."""
    (folder / "rehearsal.json").write_text(redact(json.dumps(r.__dict__, indent=2, default=str)))
    lines = [
        "",
        "## Rehearsal",
        "",
        f"A rehearsal of {r.source} (at {r.revision}) to {r.target}, on a copy in "
        f"{r.scratch}: {r.rows} rows"
        + (f" (a sample of {r.sample} asked)" if r.sample else "")
        + f", copied in {r.copy_seconds:.1f} s. The source was only read (pg_dump).",
        "",
        hardware(r.source, r.scratch),
        "",
        *(f"- {n}" for n in r.notes),
        *(f"- {b}" for b in r.baselines),
    ]
    report = folder / "REPORT.md"
    if report.is_file():
        report.write_text(report.read_text() + redact("\n".join(lines)) + "\n")


def _embedded_scratch(s: Settings) -> str:
    from stage4.plumbing.cluster import Cluster

    cluster = Cluster.from_settings(s)
    cluster.ensure_started()
    name = f"stage4_rehearsal_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
    with connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return cluster.url(name)


def _check_scratch(url: str, scratch: str, s: Settings) -> str:
    """Refuse a scratch database that is the source or holds anything of the app."""
    if where(scratch) == where(url):
        raise ConfigError(f"the scratch database is the source ({where(url)}): name another one")
    with connect(scratch) as conn:
        held = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL OR to_regclass('public.alembic_version') "
            "IS NOT NULL OR to_regnamespace(%s) IS NOT NULL OR to_regnamespace(%s) IS NOT NULL",
            (s.qualified_table, s.bench_schema, s.own_schema),
        ).fetchone()[0]
    if held:
        raise ConfigError(
            f"the scratch database {where(scratch)} is not empty (it holds {s.qualified_table}, "
            f"{s.own_schema}, alembic_version or {s.bench_schema}): rehearse restores into an "
            "empty database"
        )
    return scratch


def _drop(scratch: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from stage4.config import check_url

    parts = urlsplit(check_url(scratch))
    with connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def _existing_schema(toc_line: str, have: set[str]) -> bool:
    """A ``pg_restore --list`` line creating a schema the target already has."""
    parts = toc_line.split()
    return (
        len(parts) > 5
        and not toc_line.startswith(";")
        and parts[3:5] == ["SCHEMA", "-"]
        and parts[5] in have
    )


def _tool(name: str, url: str | None, args: list[str]) -> str:
    """``tools.run``, failing as the rehearsal's own error (the source was only read)."""
    from stage4.plumbing import tools

    return tools.run(name, url, args, RehearsalError)
