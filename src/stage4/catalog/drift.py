"""Drift: does the live catalog still hold what the database's revision makes?

What a revision should leave is replayed (``stage4.catalog.replay``): the chain up to it, run in
a scratch database on an empty copy of the live table. Drift is the difference between
that replayed catalog (relations and their partition bounds, columns, indexes,
constraints, views and their definitions, function bodies, grants, policies, triggers,
settings, cron jobs) and the live one, named object by object.

When the chain cannot be replayed (no right to create a database and no scratch server,
PostGIS missing there), ``Drift.warning`` says what is missing and drift falls back to a
record: each time ``upgrade`` reaches a revision (a step kept) the catalog is stored
(``catalog_records`` in the benchmarking schema), tagged with that revision and marked
as reached going up; the newest such record of the current revision is compared.
Nothing is recorded on the way down: a downgrade may keep what the revision above made
(opt4's keeps its partitions and their rows), so the state it leaves is no revision's.
Records without the mark (an older stage4 took them both ways) are not used. Without a
record (plain ``alembic``), drift falls back to the promises ``verify`` checks, of every
revision from ``schema`` to the current one: coarser, but true anywhere.

pg_cron runs in one database per server, never in the scratch one: where the live
database has it, its cron jobs are compared with the record when there is one, else not
compared (the source says which).

Not drift: sequence positions (rows were inserted), cron jobs of other databases (pg_cron
keeps one job table per server), and year partitions after ``last_year`` (one calendar
year each, as opt4's routine makes them) that are not in the reference: at opt4 and above
the routine creates them ahead of time (the revision doing its job); below it, they are
what opt4's downgrade keeps on purpose (dropping one would drop its rows).

The app's own objects are carried, never a reason to refuse: policies, the row level
security switches, grants, comments, and indexes or columns the app added to its table,
on objects no revision creates; and, in any schema, what exists live under a name no
revision creates (a table, view, function or index the replay does not make): not a
change to what the revisions manage (``app_owns`` says which; when unsure, a difference
is the revisions', and refuses). They are listed apart (``Drift.own``). An object under
a name a revision creates is drift; when a pending step would create it, pre-flight
names the collision first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from stage4.catalog.catalogs import (  # also read as drift.live, drift.SECTIONS, drift.recorded
    KINDS,
    REACHED,
    SECTIONS,
    created_names,
    keyed,
    live,
    recorded,
    relation,
)
from stage4.config import Settings, settings

_SHORT = 60  # values longer than this are said to differ, not printed


@dataclass
class Drift:
    """What ``check`` found: the revision, what it was compared with, each difference."""

    revision: str | None
    source: str
    differences: list[str] = field(default_factory=list)  # every one, the app's own too
    own: list[str] = field(default_factory=list)  # those that are the app's own
    warning: str | None = None  # why the chain was not replayed (``source`` is a fallback)

    @property
    def managed(self) -> list[str]:
        """The differences in what the revisions manage: the ones that refuse an upgrade."""
        own = set(self.own)
        return [d for d in self.differences if d not in own]

    @property
    def drifted(self) -> bool:
        return bool(self.managed)


def record(url: str, s: Settings | None = None) -> int | None:
    """Store the live catalog as what the current revision promises, reached going up
    (call it only then); its record id (None when the database is at no revision: there
    is nothing to promise)."""
    from stage4.measure import store
    from stage4.plumbing import migrations
    from stage4.plumbing.db import connect

    s = s or settings()
    revision = migrations.current(url)
    if revision is None:
        return None
    with connect(url, autocommit=True) as conn:
        store.ensure(conn, s)
        return conn.execute(
            f"INSERT INTO {s.bench_schema}.catalog_records (revision, catalog) "
            "VALUES (%s, %s) RETURNING record_id",
            (revision, json.dumps({**live(conn, s), REACHED: "up"})),
        ).fetchone()[0]


def check(
    url: str, s: Settings | None = None, scratch_url: str | None = None, build: bool = True
) -> Drift:
    """Compare the live catalog with the replayed state of its revision, else (the chain
    cannot be replayed: ``warning`` says why) with its record or promises. The live
    database is only read; the replay runs in a scratch database (``scratch_url``'s
    server when the live role may not create one). ``build`` False (``status``, which
    creates nothing): a cached replay only, else the record or promises, and the source
    says so."""
    from stage4.catalog import replay
    from stage4.plumbing import migrations
    from stage4.plumbing.db import connect

    s = s or settings()
    revision = migrations.current(url)
    if revision is None:
        return Drift(None, "the database is at no revision: nothing is promised")
    try:
        wanted = replay.desired(url, revision, s, scratch_url, build=build)
        bare = replay.desired(url, revision, s, scratch_url, bare=True, build=build)
    except replay.NotCached:
        found = against_record(url, revision, s)
        found.source += " (replay not cached: `stage4 drift` builds it)"
        return found
    except replay.ReplayError as e:
        found = against_record(url, revision, s)
        found.warning = f"cannot replay {revision}: {e}; compared with {found.source} instead"
        return found
    source = f"the replay of {revision}"
    with connect(url) as conn:
        now = live(conn, s)
        if not wanted.cron:
            rec = recorded(conn, revision, s)
            if rec is not None:
                wanted.catalog["cron_jobs"] = rec[2].get("cron_jobs", [])
                source += f" (cron jobs: record {rec[0]}, pg_cron cannot run in a scratch database)"
            else:
                wanted.catalog["cron_jobs"] = now["cron_jobs"]
                source += " (cron jobs not compared: pg_cron cannot run in a scratch database)"
    # the replay carries the app's objects on its table (what revisions derive from them,
    # a view's grants, is then compared); the app's own are what the bare replay lacks
    bare.catalog["cron_jobs"] = wanted.catalog["cron_jobs"]
    managed = [line for line, own in differences(wanted.catalog, now, s, "the replay") if not own]
    own = [line for line, own in differences(bare.catalog, now, s, "the replay") if own]
    return Drift(revision, source, managed + own, own)


def against_record(url: str, revision: str, s: Settings | None = None) -> Drift:
    """Drift from the newest record of ``revision`` reached going up, else its promises
    (what ``check`` falls back to when the chain cannot be replayed)."""
    from stage4.plumbing.db import connect

    s = s or settings()
    with connect(url) as conn:
        rec = recorded(conn, revision, s)
        if rec is not None:
            record_id, taken_at, catalog = rec
            found = differences(catalog, live(conn, s), s)
            return Drift(
                revision,
                f"record {record_id} of {revision}, taken {taken_at:%Y-%m-%d %H:%M:%S}",
                [line for line, _ in found],
                [line for line, own in found if own],
            )
    return _promises(url, revision, s)


def compare(
    recorded: dict[str, list], now: dict[str, list], s: Settings | None = None
) -> list[str]:
    """One line per object that is missing, added or changed, recorded → live."""
    return [line for line, _ in differences(recorded, now, s)]


def differences(
    recorded: dict[str, list],
    now: dict[str, list],
    s: Settings | None = None,
    ref: str = "the record",
) -> list[tuple[str, bool]]:
    """``compare``'s lines, each with whether it is the app's own (``app_owns``); a changed
    object whose changes are of both kinds gets a line for each. ``ref`` names what
    ``recorded`` is in the lines."""
    s = s or settings()
    ours = created_names(s)
    old = {sec: keyed(sec, recorded.get(sec, [])) for sec in SECTIONS}
    new = {sec: keyed(sec, now.get(sec, [])) for sec in SECTIONS}
    ahead = _ahead(old["relations"], new["relations"], s)
    gone = {k for k in old["relations"] if k not in new["relations"]}
    came = {k for k in new["relations"] if k not in old["relations"]} - ahead
    lines: list[tuple[str, bool]] = []
    app = _app_table(old["relations"], new["relations"], s)
    for sec, (what, _, fields) in SECTIONS.items():
        for key in sorted(set(old[sec]) | set(new[sec]), key=repr):
            if sec != "relations" and relation(sec, key, old[sec], new[sec]) in gone | came:
                continue  # the relation's own line says it
            if (key if sec == "relations" else relation(sec, key, old[sec], new[sec])) in ahead:
                continue
            a, b = old[sec].get(key), new[sec].get(key)
            name = _name(sec, what, key, a or b)
            if b is None:
                lines.append((f"{name}: missing", app_owns(sec, key, a, "missing", s, ours, app)))
            elif a is None:
                own = app_owns(sec, key, b, "added", s, ours, app)
                lines.append((f"{name}: not in {ref} (added)", own))
            elif a != b:
                changed = [(f, x, y) for f, x, y in zip(fields, a, b, strict=True) if x != y]
                for own in (False, True):
                    part = [c for c in changed if app_owns(sec, key, b, c[0], s, ours, app) is own]
                    if part:
                        text = "; ".join(_change(*c, ref) for c in part)
                        lines.append((f"{name}: {text}", own))
    return lines


_APP_FIELDS = ("row level security", "forced row level security", "grants", "comment")


def app_owns(
    section: str, key: tuple, row: tuple, change: str, s: Settings, ours: set[str], app: set
) -> bool:
    """Is this difference the app's own (listed, never refusing) rather than in what the
    revisions manage? ``change`` is "added", "missing" or the field that changed; ``ours``
    the names the revisions create, ``app`` the app's table and its partitions.

    The app's own, on an object no revision creates (stage4's comments are markers it
    reads, its grants part of its promise) outside stage4's schema: a policy added, dropped
    or changed; a changed row level security switch, grant or comment. Added, in any
    schema, under a name no revision creates: a schema (not stage4's), function, table,
    view or index (what pre-flight names when a step would create it); a column or trigger
    added to the app's table or its partitions.
    Anything else, the revisions' (refuses)."""
    if section == "indexes":
        if f"{key[0]}.{key[1]}" in ours:
            return False
        return change == "added" or (change == "comment" and key[0] != s.own_schema)
    if section == "columns" and change == "added":
        return key[:2] in app and f"{s.qualified_table}.{key[2]}" not in ours
    if section == "policies":
        return key[0] != s.own_schema and f"{key[0]}.{key[1]}" not in ours
    if section == "schemas" and change == "added":
        return key[0] != s.own_schema
    if section == "relations" and change == "added":  # a table or view, not a partition
        return ".".join(key) not in ours and key not in app and not row[5]
    if section == "functions" and change == "added":
        return not any(n.startswith(f"{key[0]}.{key[1]}(") for n in ours)
    if section == "triggers" and change == "added":
        return key[:2] in app
    if change not in _APP_FIELDS or key[0] == s.own_schema:
        return False
    if section == "functions":
        return not any(n.startswith(f"{key[0]}.{key[1]}(") for n in ours)
    if section in ("relations", "columns", "schemas"):
        return ".".join(key) not in ours
    return False


def _app_table(old: dict, new: dict, s: Settings) -> set[tuple]:
    """The app's table and its partitions (named after it, with a bound), in either."""
    out = {(s.schema, s.table)}
    for (nsp, rel), row in {**old, **new}.items():
        if nsp in (s.schema, s.own_schema) and rel.startswith(f"{s.table}_") and row[5]:
            out.add((nsp, rel))
    return out


def refusal(found: Drift) -> str:
    """The one line ``upgrade`` refuses a drifted database with."""
    return (
        f"the database has drifted from what {found.revision} promises ({found.source}): "
        f"{'; '.join(found.managed)}. Put it back (see `stage4 drift`), or upgrade anyway "
        "with --accept-drift"
    )


def _promises(url: str, revision: str, s: Settings) -> Drift:
    from stage4.catalog import verify
    from stage4.plumbing import migrations
    from stage4.plumbing.db import Session

    chain = migrations.chain()
    revs = chain[: chain.index(revision) + 1] if revision in chain else [revision]
    lines = []
    with Session(url) as db:  # one connection for every revision's promises
        for rev in revs:
            _kept, broken = verify.revision(db, s, rev)
            lines += [f"{rev} promises {text}: broken" for text in broken]
    return Drift(
        revision,
        f"the promises of {', '.join(revs)} (no record of {revision} kept on the way up)",
        lines,
    )


def _ahead(old: dict, new: dict, s: Settings) -> set[tuple]:
    """Year partitions of the table after ``last_year`` that are not in the record, each
    bounded by its calendar year (what opt4's routine creates, and its downgrade keeps)."""
    pattern = re.compile(rf"{re.escape(s.table)}_p(\d{{4}})")
    out = set()
    for nsp, rel in set(new) - set(old):
        m = pattern.fullmatch(rel)
        if nsp not in (s.own_schema, s.schema) or not m or int(m.group(1)) <= s.last_year:
            continue
        y = int(m.group(1))
        bound = new[(nsp, rel)][5] or ""  # "partition bound", as pg_get_expr prints it
        if re.fullmatch(
            rf"FOR VALUES FROM \('{y}-01-01[^']*'\) TO \('{y + 1}-01-01[^']*'\)", bound
        ):
            out.add((nsp, rel))
    return out


def _name(section: str, what: str, key: tuple, row: tuple) -> str:
    if section == "relations":
        what = "partition" if row[5] else KINDS.get(row[0], what)
    if section == "functions":
        return f"{what} {key[0]}.{key[1]}({key[2]})"
    if section == "database_settings":
        return f"{what} {key[1]}" + (f" for role {key[0]}" if key[0] else "")
    if section in ("columns", "constraints", "policies", "triggers"):
        return f"{what} {key[2]} of {key[0]}.{key[1]}"
    if section == "indexes":
        return f"{what} {key[0]}.{key[1]} on {row[0]}"
    return f"{what} {'.'.join(str(k) for k in key)}"


def _change(what: str, old: Any, new: Any, ref: str = "the record") -> str:
    if len(str(old)) > _SHORT or len(str(new)) > _SHORT:
        return f"{what} differs from {ref}"
    return f"{what} {old!r} in {ref}, {new!r} now"
