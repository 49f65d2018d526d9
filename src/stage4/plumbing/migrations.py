"""Alembic, driven from Python: the revision chain and one-step upgrades/downgrades.

Read-only questions (``chain``, ``current``, ``pending``) are kept apart from
the actions (``upgrade``, ``downgrade``), the way sqlite-utils' migrations.py does.
"""

from __future__ import annotations

import io
import logging
import re
import time
from contextlib import contextmanager, nullcontext, redirect_stdout
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from stage4.errors import ConfigError, MigrationError

if TYPE_CHECKING:
    from stage4.plumbing.db import Session

ROOT = Path(__file__).resolve().parents[3]  # the checkout (src/stage4/plumbing/ is below it)


@cache
def _script_location() -> Path:
    for candidate in (ROOT / "alembic", Path.cwd() / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError("cannot find the alembic/ folder of stage4 (run from the project root)")


def config(url: str | None = None, **attributes):
    """An Alembic Config for our script folder, with ``-x url=`` set when given (as the
    alembic command line would: env.py reads it with ``get_x_argument``)."""
    from argparse import Namespace

    from alembic.config import Config

    ini = _script_location().parent / "alembic.ini"
    opts = Namespace(x=[f"url={url}"]) if url else None
    cfg = Config(str(ini) if ini.is_file() else None, cmd_opts=opts)
    cfg.set_main_option("script_location", str(_script_location()))
    cfg.attributes.update(attributes)
    return cfg


_REVISION = re.compile(r"^revision(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN = re.compile(r"^down_revision(?::[^=]*)?=\s*(?:None|[\"']([^\"']+)[\"'])", re.M)


@cache
def chain() -> list[str]:
    """Revision ids from base to head (a linear history).

    Read from the revision files' text, not through Alembic's ScriptDirectory, which
    imports every revision module (and with them stage4.ddl and Alembic's operations):
    over a thousand times slower, the most of what `stage4 status` and `stage4 plan`
    would take. ``alembic_chain`` is the exact answer; a test checks both agree.
    """
    parent: dict[str | None, str] = {}
    for path in sorted((_script_location() / "versions").glob("*.py")):
        text = path.read_text()
        rev, down = _REVISION.search(text), _DOWN.search(text)
        if not rev or not down or down.group(1) in parent:
            return alembic_chain()  # unusual file or a branch: let Alembic decide
        parent[down.group(1)] = rev.group(1)
    revs, node = [], None
    while node in parent:
        node = parent[node]
        revs.append(node)
    return revs if len(revs) == len(parent) else alembic_chain()


def alembic_chain() -> list[str]:
    """The chain as Alembic itself walks it."""
    return [r.revision for r in reversed(list(script().walk_revisions()))]


def current(db: str | Session) -> str | None:
    """The database's revision, or None when Alembic has never run there (``db``: a URL or
    a session)."""
    from stage4.plumbing import version_table
    from stage4.plumbing.db import lend

    with lend(db) as conn:
        return version_table.revision(conn)


def check_target(target: str) -> str:
    """A valid revision id (``head`` and ``base`` are resolved), else ConfigError listing them."""
    revs = chain()
    if target == "head":
        return revs[-1]
    if target == "base" or target in revs:
        return target
    raise ConfigError(
        f"unknown target {target!r}: valid revisions are {', '.join(revs)}, head (= {revs[-1]})"
    )


def steps(url: str, target: str) -> list[str]:
    """The revisions to apply (up) from the current one to ``target``, in order."""
    revs = chain()
    target = check_target(target)
    now = current(url)
    start = revs.index(now) + 1 if now else 0
    end = 0 if target == "base" else revs.index(target) + 1
    return revs[start:end]


def down_steps(url: str, target: str) -> list[str]:
    """The revisions to undo from the current one down to (not including) ``target``."""
    revs = chain()
    now = current(url)
    if now is None:
        return []
    target = check_target(target)
    stop = 0 if target == "base" else revs.index(target) + 1
    return list(reversed(revs[stop : revs.index(now) + 1]))


def downgrade_target(url: str, steps: int | None = None, to: str | None = None) -> str:
    """Where ``downgrade -N`` (``steps``) or ``downgrade --to REV`` goes from the current
    revision, refused before anything changes when it is out of reach (as Alembic refuses
    ``downgrade -5`` up front): past base, above the current revision, or below ``schema``
    while the table holds rows (``schema``'s downgrade drops it). The message gives the
    reachable range."""
    from stage4.config import settings
    from stage4.plumbing.db import connect

    now = current(url)
    if now is None:
        raise ConfigError("the database is at no revision: nothing to roll back")
    revs = chain()
    below = ["base", *revs[: revs.index(now)]][::-1]  # nearest first
    if to is None:
        n = 1 if steps is None else steps
        to = below[n - 1] if n <= len(below) else None
        asked = f"downgrade -{n}"
    else:
        to = check_target(to)
        if to == now:
            return now  # nothing to roll back
        asked = f"downgrade --to {to}"
    t = settings().qualified_table
    with connect(url) as conn:
        present = conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is not None
        rows = present and conn.execute(f"SELECT EXISTS (SELECT FROM {t})").fetchone()[0]
        reachable = below if not rows else below[:-1]
        if to in reachable:
            return to
        if to == "base":
            rows = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    reach = _reach(reachable)
    if to == "base":
        raise MigrationError(
            f"refusing to drop {t}: it holds {rows} rows (back it up, then run "
            f"`alembic -x force=1 downgrade base` to drop it anyway){reach}"
        )
    where = "past base" if to is None else f"{to} is not below {now}"
    raise ConfigError(f"{asked} from {now}: {where}{reach or ', nothing was changed'}")


def _reach(reachable: list[str]) -> str:
    """How far `stage4 downgrade` reaches (nearest first), for a refusal's message."""
    if not reachable:
        return ""
    span = f"-1 ({reachable[0]})"
    if len(reachable) > 1:
        span = f"-1 … -{len(reachable)} ({reachable[0]} … {reachable[-1]})"
    return f"; `stage4 downgrade` reaches {span}, nothing was changed"


def previous(revision: str) -> str:
    revs = chain()
    i = revs.index(revision)
    return revs[i - 1] if i else "base"


def upgrade(url: str, revision: str, **attributes) -> dict[str, float]:
    """Apply the chain up to ``revision`` (one step when it is the next one); returns what
    ``settle`` did after it ({relation: seconds}), which callers timing the step leave out."""
    return _run("upgrade", url, revision, **attributes)


def downgrade(url: str, revision: str, **attributes) -> dict[str, float]:
    """Undo down to ``revision`` (``previous(rev)`` for one step); returns as ``upgrade``."""
    return _run("downgrade", url, revision, **attributes)


def timed(step, url: str, revision: str, **attributes) -> tuple[float, dict[str, float]]:
    """Run ``step`` (``upgrade`` or ``downgrade``): (seconds of the step itself, what
    ``settle`` did after it), the VACUUM left out as every caller reports it apart."""
    t0 = time.perf_counter()
    settled = step(url, revision, **attributes)
    return time.perf_counter() - t0 - sum(settled.values()), settled


def offline_sql(command: str, spec: str) -> str:
    """The SQL that ``alembic <command> <spec> --sql`` prints, as text."""
    from alembic import command as alembic_command

    out = io.StringIO()
    cfg = config(output_buffer=out)
    cfg.output_buffer = out
    with redirect_stdout(io.StringIO()):
        getattr(alembic_command, command)(cfg, spec, sql=True)
    return out.getvalue()


def offline_plan(start: str, target: str) -> tuple[str | None, str | None]:
    """The SQL going from ``start`` to ``target`` would run and the SQL of its rollback
    (``alembic upgrade start:target --sql``, ``alembic downgrade target:start --sql``);
    (None, None) when they are the same revision. ``start`` is checked like a target."""
    check_target(start)
    if start == target:
        return None, None
    up = offline_sql("upgrade", f"{start}:{target}")
    return up, offline_sql("downgrade", f"{target}:{start}")


_SESSIONS: dict = {}  # url -> (Engine, Config) of an open ``session`` (one pooled connection)
# Where env.py records, in a pooled connection's ``info``, the timeouts it has SET on it.
SETTINGS_KEY = "stage4_settings"


@contextmanager
def session(url: str):
    """Run the steps inside on one connection (``upgrade``/``downgrade`` use it for ``url``).

    Alembic opens a new engine per command: connecting and the dialect's first-connect
    queries cost more than the whole DDL of a light step (opt4's downgrade is one DROP
    FUNCTION). A multi-step rollout or rollback connects once: a pool of one connection,
    handed to env.py the documented way (``config.attributes["connection"]``), pinged
    before each step (a server that dropped it while the gate benchmarked gets a new one),
    with one Alembic Config (alembic.ini parsed once) and its session settings set once
    (env.py). Each step still commits on its own; between steps the connection holds no
    transaction (so no lock), and it is closed on leaving.
    """
    if url in _SESSIONS:
        yield
        return
    from sqlalchemy.pool import QueuePool

    from stage4.plumbing.db import engine

    eng = engine(url, poolclass=QueuePool, pool_size=1, max_overflow=0, pool_pre_ping=True)
    _SESSIONS[url] = (eng, config(url))
    try:
        yield
    finally:
        _SESSIONS.pop(url, None)
        eng.dispose()


@cache
def _script_for(_versions: str, _files: tuple):
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config())


def script():
    """Alembic's ScriptDirectory, its revision modules imported once per process while the
    files are unchanged: for read-only questions (a revision's module and its declarations)."""
    versions = _script_location() / "versions"
    files = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in versions.glob("*.py")))
    return _script_for(str(versions), files)


def _command(verb: str, cfg, revision: str) -> None:
    """``alembic.command.upgrade``/``downgrade``: the public verbs, as the alembic command
    line runs them. Each reads the revision files and env.py again. Caching them (a
    ScriptDirectory kept across steps, driven through its private ``_upgrade_revs``) made
    a light step (opt4 down and up on one pooled connection) about twice as fast, which is
    still far below what one gated step's benchmark takes: the public verbs stay."""
    from alembic import command

    getattr(command, verb)(cfg, revision)


def _run(verb: str, url: str, revision: str, **attributes) -> dict[str, float]:
    from sqlalchemy.exc import DBAPIError

    from stage4.errors import Stage4Error
    from stage4.plumbing import locks

    if attributes.get("lock_timeout") is not None:
        attributes["lock_timeout"] = check_timeout(str(attributes["lock_timeout"]))
    if url and locks.held(url):  # env.py need not take the rollout lock again
        attributes.setdefault("rollout_lock_held", True)
    pooled = _SESSIONS.get(url) if "connection" not in attributes else None
    try:
        # back in the pool, the connection is rolled back: no transaction left open
        with pooled[0].connect() if pooled is not None else nullcontext() as conn:
            if conn is None:
                cfg = config(url, **attributes)
            else:
                cfg = pooled[1]
                cfg.attributes.clear()
                cfg.attributes.update(attributes, connection=conn)
            _command(verb, cfg, revision)
            return settle(url, attributes.get("progress"), conn) if url else {}
    except Stage4Error:
        raise
    except DBAPIError as e:
        from stage4.config import redact

        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e).splitlines()[0]
        if _is_lock_timeout(e):
            reason = locks.explain_timeout(url, attributes.get("lock_timeout"), e.statement)
        raise MigrationError(
            f"{verb} to {revision} failed and was rolled back: {redact(reason)}"
        ) from e


def settle(url: str, progress=None, connection=None) -> dict[str, float]:
    """VACUUM (ANALYZE), once a step has committed, what it left without statistics or
    visibility map; returns {relation: seconds}.

    - The app's table when it has never been analyzed: the one opt1 builds (and its
      downgrade restores) is new. Autovacuum reaches its partitions about a minute later,
      in the middle of the gate's bench (whose first rounds were planned on no statistics
      and the rest on real ones, which can differ several times over), and
      never analyzes a partitioned table itself (PostgreSQL leaves that to a manual
      ANALYZE). VACUUM of a partitioned table covers every partition.
    - Materialized views never vacuumed: created WITH DATA, they have neither until
      autovacuum passes, so the bench would time plans made on guesses (and index-only
      scans reading the heap).

    VACUUM cannot run in the step's transaction; it blocks neither readers nor writers,
    and interrupted it loses nothing. A failure is logged, never raised: the step is
    committed. ``connection``: a session's SQLAlchemy connection, reused (a new one costs
    more than a light step's DDL).
    """
    import psycopg
    from psycopg import sql
    from sqlalchemy.exc import DBAPIError

    from stage4 import optimisations
    from stage4.config import settings
    from stage4.errors import Stage4Error

    s = settings()
    ours = [v.qualified for v in optimisations.views(s)]
    done: dict[str, float] = {}
    try:
        with _autocommit(url, connection) as conn:
            todo = conn.execute(
                # the pg_stat_get_* functions of the view pg_stat_all_tables, called for
                # these relations only (the view computes them for every relation)
                """SELECT c.oid::regclass::text FROM pg_class c
                   WHERE (c.oid = to_regclass(%s)
                          AND pg_stat_get_last_analyze_time(c.oid) IS NULL
                          AND pg_stat_get_last_autoanalyze_time(c.oid) IS NULL)
                      OR (c.oid = ANY (ARRAY(SELECT to_regclass(unnest(%s::text[]))))
                          AND c.relispopulated
                          AND pg_stat_get_last_vacuum_time(c.oid) IS NULL
                          AND pg_stat_get_last_autovacuum_time(c.oid) IS NULL)
                   ORDER BY c.relkind = 'm'""",  # the table first
                (s.qualified_table, ours),
            ).fetchall()
            if todo and connection is not None:  # a session's: the step's timeouts are set
                # VACUUM waits for no reader or writer; as on a connection of its own, let
                # it wait for another VACUUM and take as long as it needs; env.py sets the
                # step's timeouts again before the next step
                connection.info.pop(SETTINGS_KEY, None)
                for name in ("lock_timeout", "statement_timeout"):  # one statement each:
                    conn.execute(f"SET {name} = 0")  # a prepared query holds only one
            tick = progress if progress and todo else (lambda *_: None)
            tick("VACUUM (ANALYZE) after the step", 0, len(todo))
            for i, (relation,) in enumerate(todo, 1):
                t0 = time.perf_counter()
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.SQL(relation)))
                done[relation] = time.perf_counter() - t0
                tick("VACUUM (ANALYZE) after the step", i, len(todo))
    except (psycopg.Error, DBAPIError, Stage4Error) as e:  # the step is committed: say so
        logging.getLogger("stage4").warning("after the step, VACUUM (ANALYZE) failed (autovacuum "
                    "will do it): %s", str(e).strip().splitlines()[0])  # fmt: skip
    return done


@contextmanager
def _autocommit(url: str, connection=None):
    """A psycopg connection in autocommit: the driver's of ``connection`` (a SQLAlchemy
    Connection, committed first; its autocommit restored after), else a new one."""
    if connection is None:
        from stage4.plumbing.db import connect

        with connect(url, autocommit=True) as conn:
            yield conn
        return
    connection.commit()
    raw = connection.connection.driver_connection
    raw.autocommit = True
    try:
        yield raw
    finally:
        raw.autocommit = False


_DURATION = re.compile(r"^\d+\s*(us|ms|s|min|h|d)?$")


def check_timeout(value: str) -> str:
    """A PostgreSQL duration (``5s``, ``500ms``, ``2min``, ``0`` = wait forever), else ConfigError."""
    value = value.strip()
    if not _DURATION.match(value):
        raise ConfigError(
            f"lock timeout {value!r} is not a duration: use e.g. 5s, 500ms, 2min (0 waits forever)"
        )
    return value


def _is_lock_timeout(e) -> bool:
    import psycopg

    return isinstance(e.orig, psycopg.errors.LockNotAvailable)
