"""The desired catalog of a revision, by replaying the chain on an empty copy of the table.

What a revision should leave is whatever its chain does, run: a scratch database gets
the live table's own definition without a row and without what the revisions add (the
app's columns, identity, primary key and indexes, its grants, policies, row level
security, triggers and comments, the app's functions and publications, the RPC bodies as
``schema`` adopted them), PostGIS and pg_cron where the live database has them, and the
Alembic chain up to the revision; ``catalogs.live`` of the scratch is the desired state.
The scratch database is created on the live database's server when its role may create
databases, else on the server of ``scratch_url``, and dropped after; one a killed
process of this host left behind is dropped by the next replay. The result is cached
per revision and digest (the revision files, the optimisations and the SQL they build,
the table definition, the settings, the server version and the year, which sets opt4's
horizon), with the scratch database's name replaced by the live one's, and the role
that ran the chain there by each object's live owner (whoever ran the chain there, which
need not be the role now connected), else the connected role.

pg_cron runs in one database per server, never in a scratch one: where the live database
has it, the replayed state holds no cron job, and ``Replayed.cron`` says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stage4.catalog import catalogs
from stage4.config import Settings, redact, settings
from stage4.errors import Stage4Error
from stage4.plumbing import tools
from stage4.plumbing.db import connect, where

_PLACEHOLDER = "{stage4 replay database}"  # the scratch database's name, as cached
_SCRATCH_PREFIX = "stage4_replay_"


class ReplayError(Stage4Error):
    """The chain could not be replayed; the message names what is missing."""


class NotCached(Stage4Error):
    """The replay is not cached and was not to be built (``desired(build=False)``)."""


@dataclass
class Replayed:
    """A revision's desired catalog (``catalogs.live``'s shape) and whether cron jobs are in it."""

    revision: str
    catalog: dict[str, list[list[Any]]]
    cron: bool  # False: the live database has pg_cron, the scratch could not


@dataclass
class TableDef:
    """The live table's own definition: statements that create it in an empty database."""

    statements: list[str]
    extensions: list[tuple[str, str]]  # (name, schema): the live's postgis and pg_cron
    roles: list[str]
    cron: bool  # pg_cron is installed in the live database
    script: str = ""  # the app's other relations, as pg_dump --schema-only gives them

    def digest(self, revision: str, s: Settings, server: str) -> str:
        h = hashlib.sha256()
        for name, path in chain_sources():
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        h.update(json.dumps(dataclasses.asdict(s), sort_keys=True, default=str).encode())
        fields = [self.statements, self.script, self.extensions, revision, server]
        h.update(json.dumps(fields).encode())
        h.update(str(date.today().year).encode())
        return h.hexdigest()[:20]


def chain_sources() -> list[tuple[str, Path]]:
    """(name, path) of every file whose change changes what the chain builds: the revision
    files alembic runs, the units and the DDL helpers (a unit may be a package)."""
    from stage4 import ddl, optimisations
    from stage4.plumbing import migrations

    versions = migrations._script_location() / "versions"
    units, helpers = (Path(m.__file__).resolve().parent for m in (optimisations, ddl))
    return [
        (path.relative_to(folder).as_posix(), path)
        for folder in (versions, units, helpers)
        for path in sorted(folder.rglob("*.py"))
    ]


def desired(
    url: str,
    revision: str,
    s: Settings | None = None,
    scratch_url: str | None = None,
    bare: bool = False,
    build: bool = True,
) -> Replayed:
    """``Replayed`` of ``revision`` for the database at ``url`` (cached). ``bare``: on the
    reference table ``schema`` creates, without the live table's definition, for the
    app's own objects to show against (``drift.check``). ``build`` False: the cache only
    (no scratch database is created), ``NotCached`` when it has no such replay."""
    s = s or settings()
    if bare:
        table = dataclasses.replace(definition(url, s), statements=[])
    else:  # the functions the chain makes are its own; the others the app's, carried
        made = desired(url, revision, s, scratch_url, bare=True, build=build).catalog
        table = definition(url, s, {tuple(row[:3]) for row in made["functions"]}, revision)
        table.script = others(url, s, {tuple(row[:2]) for row in made["relations"]})
    with connect(url) as conn:
        server = conn.execute("SHOW server_version_num").fetchone()[0]
        database, user = conn.execute("SELECT current_database(), current_user").fetchone()
        owners = _owners(conn)
    cache = s.home_path / "replay" / f"{revision}-{table.digest(revision, s, server)}.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
    elif not build:
        raise NotCached(f"the replay of {revision} is not cached")
    else:
        saved = _replay(url, revision, table, s, scratch_url)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(saved))
        tmp.replace(cache)
    catalog = json.loads(json.dumps(saved["catalog"]).replace(_PLACEHOLDER, database))
    catalog = _as_live(catalog, saved["user"], owners, user)
    return Replayed(revision, catalog, saved["cron"] or not table.cron)


def definition(
    url: str, s: Settings, made: set[tuple] | None = None, revision: str = "base"
) -> TableDef:
    """The live table's own definition, read from its catalog: the columns no revision
    creates (type, identity, default, not null), the primary key (without the time column
    a partitioned table needs in it), CHECK and FOREIGN KEY constraints, the indexes no
    revision creates, the functions (none when ``made`` is None), then what
    ``privileges.capture`` carries (owner, grants, RLS, policies, triggers, comments).
    Nothing when the table does not exist.

    Functions outside stage4's schemas that the chain does not make (``made``: their
    (schema, name, arguments)) are the app's: carried as they are. One the chain makes
    (an RPC) is carried as it was when ``schema`` adopted the table, which creates it only
    where absent and after which a revision re-points only the body it created: as it
    is live at ``schema`` (or base), else as the record of ``schema`` has it; without
    such a record, ``schema`` creates it in the scratch."""
    from stage4.ddl import privileges
    from stage4.plumbing.db import engine

    t = s.qualified_table
    ours = catalogs.created_names(s)
    with connect(url) as conn:
        extensions = [
            tuple(r)
            for r in conn.execute(
                "SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n "
                "ON n.oid = e.extnamespace WHERE e.extname IN ('postgis', 'pg_cron') ORDER BY e.oid"
            )
        ]
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_'")]
        cron = any(name == "pg_cron" for name, _ in extensions)
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (t,)
        ).fetchone()
        if kind is None:
            return TableDef([], extensions, roles, cron)
        columns = conn.execute(
            """SELECT quote_ident(a.attname), a.attname, format_type(a.atttypid, a.atttypmod),
                      a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity,
                      a.attgenerated
               FROM pg_attribute a LEFT JOIN pg_attrdef d
                    ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum""",
            (t,),
        ).fetchall()
        keep = {name for _, name, *_ in columns if f"{t}.{name}" not in ours}
        constraints = conn.execute(
            """SELECT quote_ident(conname), contype, pg_get_constraintdef(oid),
                      ARRAY(SELECT attname FROM pg_attribute
                            WHERE attrelid = conrelid AND attnum = ANY (conkey))
               FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'c', 'f')
               ORDER BY conname""",
            (t,),
        ).fetchall()
        indexes = conn.execute(
            """SELECT n.nspname || '.' || c.relname, pg_get_indexdef(i.indexrelid)
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE i.indrelid = %s::regclass AND NOT EXISTS
                     (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
               ORDER BY 1""",
            (t,),
        ).fetchall()
        functions = conn.execute(
            """SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
                      pg_get_functiondef(p.oid)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE p.prokind IN ('f', 'p') AND n.nspname NOT IN (%s, %s, 'pg_catalog',
                     'information_schema') AND n.nspname !~ '^pg_'
                 AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                 AND d.objid = p.oid AND d.deptype = 'e')
               ORDER BY p.oid""",
            (s.own_schema, s.bench_schema),
        ).fetchall()
        if revision in ("base", "schema"):
            adopted_rows = [f for f in functions if f[0] == s.schema]
        else:
            rec = catalogs.recorded(conn, "schema", s)
            adopted_rows = [f for f in (rec[2]["functions"] if rec else []) if f[0] == s.schema]
        publications = conn.execute(
            """SELECT quote_ident(pubname), puballtables, pubviaroot,
                      concat_ws(', ', CASE WHEN pubinsert THEN 'insert' END,
                                CASE WHEN pubupdate THEN 'update' END,
                                CASE WHEN pubdelete THEN 'delete' END,
                                CASE WHEN pubtruncate THEN 'truncate' END)
               FROM pg_publication ORDER BY pubname"""
        ).fetchall()
    statements, cols = [], []
    for quoted, name, typ, notnull, default, identity, generated in columns:
        if name not in keep:
            continue
        col = f"{quoted} {typ}"
        if identity:
            col += f" GENERATED {'ALWAYS' if identity == 'a' else 'BY DEFAULT'} AS IDENTITY"
        elif generated == "s":
            col += f" GENERATED ALWAYS AS ({default}) STORED"
        elif default:
            seq = re.match(r"nextval\('([^']+)'::regclass\)", default)
            if seq:
                statements.append(f"CREATE SEQUENCE IF NOT EXISTS {seq.group(1)}")
            col += f" DEFAULT {default}"
        cols.append(col + (" NOT NULL" if notnull else ""))
    for name, contype, _def, conkeys in constraints:
        if contype == "p":
            pk = [c for c in conkeys if c in keep and not (kind[0] == "p" and c == s.time_column)]
            cols.append(f"CONSTRAINT {name} PRIMARY KEY ({', '.join(pk)})")
    statements.append(f"CREATE TABLE {t} ({', '.join(cols)})")
    statements += [
        f"ALTER TABLE {t} ADD CONSTRAINT {name} {condef}"
        for name, contype, condef, keys in constraints
        if contype != "p" and set(keys) <= keep
    ]
    statements += [d.replace(" ON ONLY ", " ON ", 1) for name, d in indexes if name not in ours]
    adopted = {tuple(row[:3]): row[3] for row in adopted_rows}
    for nsp, name, args, body in functions:
        key = (nsp, name, args)
        if made is not None and key not in made:
            statements += [f'CREATE SCHEMA IF NOT EXISTS "{nsp}"', body]
        elif made is not None and key in adopted:
            statements += [f'CREATE SCHEMA IF NOT EXISTS "{nsp}"', adopted[key]]
    eng = engine(url)
    try:
        with eng.connect() as bind:
            carry = privileges.capture(bind, t, None)
    finally:
        eng.dispose()
    carry.column_acl = [c for c in carry.column_acl if c[0].strip('"') in keep]
    carry.comments = [
        (kind, name, text)
        for kind, name, text in carry.comments
        if kind in ("TABLE", "POLICY", "CONSTRAINT", "TRIGGER")
        or (kind == "COLUMN" and name.strip('"') in keep)
        or (kind == "INDEX" and f"{s.schema}.{name.strip(chr(34))}" not in ours)
    ]
    # the publications, empty, as before the chain: a partitioned table's publishes via
    # the root because a revision made it so (it says so in a comment)
    for name, every, via_root, actions in publications:
        statements.append(
            f"CREATE PUBLICATION {name}{' FOR ALL TABLES' if every else ''} WITH (publish = "
            f"'{actions}', publish_via_partition_root = {via_root and kind[0] != 'p'!s})"
        )
    statements += privileges.replay(carry, _NoAcl(), t, None)
    return TableDef(statements, extensions, roles, cron)


def others(url: str, s: Settings, made: set[tuple]) -> str:
    """The app's relations besides its table (tables, views, sequences the chain does not
    make, outside stage4's schemas), as ``pg_dump --schema-only`` writes them: a revision
    may read or change them, and what the revisions derive is compared."""
    with connect(url) as conn:
        rows = conn.execute(
            """SELECT n.nspname, c.relname, format('%%I.%%I', n.nspname, c.relname)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND NOT c.relispartition
                 AND n.nspname NOT IN (%s, %s, 'information_schema', 'cron', 'partman',
                                       'topology', 'tiger', 'tiger_data')
                 AND n.nspname !~ '^pg_' AND c.oid <> to_regclass(%s)
                 AND c.relname <> 'alembic_version'
                 AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                 AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
               ORDER BY 1, 2""",
            (s.own_schema, s.bench_schema, s.qualified_table),
        ).fetchall()
    tables = [f"--table={name}" for nsp, rel, name in rows if (nsp, rel) not in made]
    try:
        # a table the app holds locked makes pg_dump wait: as long as a migration would
        # (lock_timeout), then the replay falls back with a warning instead of hanging
        wait = f"--lock-wait-timeout={s.lock_timeout}"
        return tools.run("pg_dump", url, ["--schema-only", wait, *tables]) if tables else ""
    except Stage4Error as e:
        raise ReplayError(f"the app's other relations could not be read: {e}") from None


class _NoAcl:
    """A bind for ``privileges.replay`` that says the new table has no ACL yet (it is
    rendered before the table exists)."""

    def exec_driver_sql(self, *_args, **_kw):
        return self

    def all(self) -> list:
        return []


def _replay(url: str, revision: str, table: TableDef, s: Settings, scratch_url: str | None):
    scratch, admin = _create(url, scratch_url)
    try:
        cron = _prepare(scratch, table)
        if revision != "base":
            from stage4.plumbing import migrations

            try:
                migrations.upgrade(scratch, revision)
            except Stage4Error as e:
                raise ReplayError(f"the chain up to {revision} failed there: {e}") from None
        with connect(scratch) as conn:
            catalog = catalogs.live(conn, s)
            user = conn.execute("SELECT current_user").fetchone()[0]
    finally:
        _drop(admin, scratch)
    name = urlsplit(scratch).path.lstrip("/")
    text = json.dumps(catalog).replace(name, _PLACEHOLDER)
    return {"catalog": json.loads(text), "user": user, "cron": cron}


def _create(url: str, scratch_url: str | None) -> tuple[str, str]:
    """A new empty database (its URL) and the URL it was created from (to drop it)."""
    import psycopg

    admin = scratch_url or url
    with connect(admin, autocommit=True) as conn:
        may = conn.execute(
            "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]
        if not may:
            who = conn.execute("SELECT current_user").fetchone()[0]
            where_ = f"--scratch-url {where(admin)}" if scratch_url else where(url)
            hint = "" if scratch_url else " and no --scratch-url was given"
            raise ReplayError(f"role {who} may not create a database on {where_}{hint}")
        _drop_abandoned(conn)
        name = f"{_SCRATCH_PREFIX}{os.getpid()}_{_host_tag()}_{secrets.token_hex(4)}"
        try:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        except psycopg.Error as e:
            reason = redact(str(e).strip().splitlines()[0])
            raise ReplayError(
                f"cannot create a scratch database on {where(admin)}: {reason}"
            ) from None
    return urlunsplit(urlsplit(admin)._replace(path=f"/{name}")), admin


def _host_tag() -> str:
    """This host, in a scratch database's name: its pid means something here only."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _drop_abandoned(conn) -> list[str]:
    """Drop the scratch databases of this host's processes that are gone (killed mid-
    replay), as ``backup.clean_partials`` deletes their dumps; a running replay's, or
    another host's, stays. A database the role may not drop stays too. What was dropped."""
    import psycopg

    pattern = re.compile(rf"{_SCRATCH_PREFIX}(\d+)_{_host_tag()}_[0-9a-f]+")
    names = conn.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (_SCRATCH_PREFIX,)
    ).fetchall()
    gone = []
    for (name,) in names:
        m = pattern.fullmatch(name)
        if m is None or tools.alive(int(m.group(1)), socket.gethostname()):
            continue
        try:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            gone.append(name)
        except psycopg.Error:  # not its owner: another role's leftover
            pass
    return gone


def _drop(admin: str, scratch: str) -> None:
    name = urlsplit(scratch).path.lstrip("/")
    with connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _prepare(scratch: str, table: TableDef) -> bool:
    """Roles, PostGIS and pg_cron (where the live database has them; the chain creates
    any other it needs, as it would on the live one) and the table in the scratch
    database; whether pg_cron is there. PostGIS missing stops the replay."""
    import psycopg

    with connect(scratch, autocommit=True) as conn:
        have = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
        for role in table.roles:
            if role not in have:  # grants name them: NOLOGIN, no password, no rights
                conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
        cron = False
        for ext, schema in table.extensions:
            try:
                with conn.transaction():
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                    conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}" SCHEMA "{schema}"')
                cron = cron or ext == "pg_cron"
            except psycopg.Error as e:
                if ext == "postgis":
                    reason = redact(str(e).strip().splitlines()[0])
                    raise ReplayError(f"extension postgis is missing there ({reason})") from None
        for sql in table.statements:
            try:
                with conn.transaction():
                    conn.execute(sql)
            except psycopg.Error:  # what names an object the chain creates: it will
                pass
    if table.script:  # psql goes on past a statement that fails, as above
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="stage4-replay-") as f:
            f.write(table.script)
            f.flush()
            try:
                tools.run("psql", scratch, ["-X", "-q", "-f", f.name])
            except Stage4Error as e:
                raise ReplayError(f"the app's other relations could not be made: {e}") from None
    return cron


def _owners(conn) -> dict[tuple, str]:
    """The live owner of each schema (its name), relation (schema, name) and function
    (schema, name, arguments): what ``_as_live`` reads the replay's role as."""
    rows = conn.execute(
        """SELECT ARRAY[nspname], pg_get_userbyid(nspowner) FROM pg_namespace
           UNION ALL
           SELECT ARRAY[n.nspname, c.relname], pg_get_userbyid(c.relowner)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
             AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           UNION ALL
           SELECT ARRAY[n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)],
                  pg_get_userbyid(p.proowner)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"""
    ).fetchall()
    return {tuple(key): owner for key, owner in rows}


def _as_live(catalog: dict, role: str, owners: dict[tuple, str], user: str) -> dict:
    """The replay's objects as the live database has them: the role that ran the chain in
    the scratch (``role``: their owner, the grantor of their grants) read, object by
    object, as the live owner (``owners``: of the schema, of the relation a row belongs
    to, of the function), else as the connected role ``user``. The live objects are owned
    by whoever ran the chain there, often not the role connected now."""
    pattern = re.compile(rf'(?<=[{{,/"=]){re.escape(role)}(?=[=/,}}"])|^{re.escape(role)}$')
    out = {}
    for sec, rows in catalog.items():
        named = catalogs.SECTIONS[sec][1] if sec in catalogs.SECTIONS else 0  # kept as is
        width = 1 if sec == "schemas" else 3 if sec == "functions" else 2
        out[sec] = []
        for row in rows:
            owner = owners.get(tuple(row[:width]), user)
            out[sec].append(
                [
                    pattern.sub(owner, v) if i >= named and isinstance(v, str) else v
                    for i, v in enumerate(row)
                ]
            )
    return out


# ------------------------------------------------------------------ a plan's catalog diff
_PLURAL = {
    "partition": "partitions",
    "table": "tables",
    "partitioned table": "partitioned tables",
    "view": "views",
    "materialized view": "materialized views",
    "sequence": "sequences",
    "foreign table": "foreign tables",
    "index": "indexes",
    "column": "columns",
    "constraint": "constraints",
    "function": "functions",
    "trigger": "triggers",
    "cron job": "cron jobs",
    "database setting": "database settings",
    "schema": "schemas",
    "policy": "policies",
    "publication": "publications",
}
_SKIPPED = ("sequences",)  # a sequence follows its table; its position is no state


def summary(old: dict[str, list], new: dict[str, list]) -> list[str]:
    """What going from catalog ``old`` to ``new`` adds, changes and removes: one line per
    kind of object and verb, each object named (what belongs to an added or removed
    relation goes with it; the partitions' own indexes, constraints and triggers are
    counted)."""
    before = {sec: catalogs.keyed(sec, old.get(sec, [])) for sec in catalogs.SECTIONS}
    after = {sec: catalogs.keyed(sec, new.get(sec, [])) for sec in catalogs.SECTIONS}
    rels = set(before["relations"]) | set(after["relations"])
    both = set(before["relations"]) & set(after["relations"])
    partitions = {k for k in rels if (after["relations"].get(k) or before["relations"].get(k))[5]}
    groups: dict[tuple[str, str], list[str]] = {}
    counted: dict[tuple[str, str], int] = {}
    for sec, (what, _, fields) in catalogs.SECTIONS.items():
        if sec in _SKIPPED:
            continue
        for key in sorted(set(before[sec]) | set(after[sec]), key=repr):
            a, b = before[sec].get(key), after[sec].get(key)
            if a == b:
                continue
            verb = "added" if a is None else "removed" if b is None else "changed"
            row = b if b is not None else a
            if sec == "relations":
                kind = "partition" if row[5] else catalogs.KINDS.get(row[0], what)
            else:
                kind = what
                rel = catalogs.relation(sec, key, before[sec], after[sec])
                if rel is not None and rel not in both:
                    continue  # the relation's own line says it
                if rel in partitions and sec != "views":
                    counted[(verb, kind)] = counted.get((verb, kind), 0) + 1
                    continue
            name = _short(sec, key)
            if verb == "changed":
                diff = [f for f, x, y in zip(fields, a, b, strict=True) if x != y]
                name += f" ({', '.join(diff)})"
            groups.setdefault((verb, kind), []).append(name)
    lines = []
    for verb in ("added", "changed", "removed"):
        for kind, plural in _PLURAL.items():
            names = groups.get((verb, kind), [])
            n = counted.get((verb, kind), 0)
            if not names and not n:
                continue
            parts = ([f"{n} of the partitions"] if n else []) + names
            lines.append(f"{verb} {plural} ({len(names) + n}): {', '.join(parts)}")
    return lines


def _short(section: str, key: tuple) -> str:
    if section == "functions":
        return f"{key[0]}.{key[1]}({key[2]})"
    if section in ("columns", "constraints", "triggers", "policies"):
        return f"{key[0]}.{key[1]}.{key[2]}"
    if section == "database_settings":
        return key[1] + (f" for role {key[0]}" if key[0] else "")
    return ".".join(str(k) for k in key)


def _declared_jobs(start: str, target: str, s: Settings) -> str:
    """The pg_cron jobs the steps between ``start`` and ``target`` schedule (added going up,
    removed going down), as the revisions declare them: pg_cron cannot run in a scratch
    database, so they are not replayed."""
    from stage4 import optimisations
    from stage4.plumbing import migrations

    order = ["base", *migrations.chain()]
    lo, hi = sorted((order.index(start), order.index(target)))
    found = optimisations.jobs(s, order[lo + 1 : hi + 1])
    verb = "added" if order.index(target) > order.index(start) else "removed"
    named = ", ".join(f"{j.name} ({j.schedule}, {rev})" for rev, j in found)
    return (f"cron jobs {verb} where pg_cron is installed: {named or 'none'} "
            "(as the revisions declare them: pg_cron cannot run in a scratch database)")  # fmt: skip


def diff(url: str, start: str, target: str, s: Settings | None = None, scratch_url=None):
    """``plan``'s catalog diff, as SQL comments: ``summary`` of the replayed ``start`` and
    ``target``, and what is carried."""
    s = s or settings()
    old, new = (desired(url, rev, s, scratch_url) for rev in (start, target))
    lines = summary(old.catalog, new.catalog) or ["nothing"]
    lines.append(
        f"carried: grants, policies, row level security and comments of {s.qualified_table} "
        "(the app's own, not replayed here)"
    )
    if not (old.cron and new.cron):
        lines.append(_declared_jobs(start, target, s))
    head = f"-- catalog {start} -> {target} (replayed on an empty copy of {s.qualified_table}):"
    return [head, *(f"--   {line}" for line in lines)]
