"""Alembic, driven from Python: the revision chain and one-step upgrades/downgrades.

Read-only questions (``chain``, ``current``, ``pending``) are kept apart from
the actions (``upgrade``, ``downgrade``), the way sqlite-utils' migrations.py does.
"""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from functools import cache
from pathlib import Path

from stage4.errors import ConfigError, MigrationError

ROOT = Path(__file__).resolve().parents[2]


@cache
def _script_location() -> Path:
    for candidate in (ROOT / "alembic", Path.cwd() / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError("cannot find the alembic/ folder of stage4 (run from the project root)")


def config(url: str | None = None, **attributes):
    """An Alembic Config for our script folder, with ``-x url=`` set when given."""
    from alembic.config import Config

    ini = _script_location().parent / "alembic.ini"
    cfg = Config(str(ini)) if ini.is_file() else Config()
    cfg.set_main_option("script_location", str(_script_location()))
    if url:
        cfg.cmd_opts = type("Opts", (), {"x": [f"url={url}"]})()
    cfg.attributes.update(attributes)
    return cfg


_REVISION = re.compile(r"^revision(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN = re.compile(r"^down_revision(?::[^=]*)?=\s*(?:None|[\"']([^\"']+)[\"'])", re.M)


@cache
def chain() -> list[str]:
    """Revision ids from base to head (a linear history).

    Read from the revision files' text, not by importing them through Alembic: this
    keeps `stage4 status` well under a second. ``alembic_chain`` is the slow, exact
    answer; a test checks both agree.
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
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def current(url: str) -> str | None:
    """The database's revision, or None when Alembic has never run there."""
    from stage4.db import connect

    with connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0]
        if exists is None:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None


def check_target(target: str) -> str:
    """A valid revision id (``head`` and ``base`` are resolved), else ConfigError listing them."""
    revs = chain()
    if target == "head":
        return revs[-1]
    if target == "base" or target in revs:
        return target
    raise ConfigError(f"unknown target {target!r}: valid revisions are {', '.join(revs)}")


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


def previous(revision: str) -> str:
    revs = chain()
    i = revs.index(revision)
    return revs[i - 1] if i else "base"


def upgrade(url: str, revision: str, **attributes) -> None:
    """Apply the chain up to ``revision`` (one step when it is the next one)."""
    _run("upgrade", url, revision, **attributes)


def downgrade(url: str, revision: str, **attributes) -> None:
    """Undo down to ``revision`` (``previous(rev)`` for one step)."""
    _run("downgrade", url, revision, **attributes)


def offline_sql(command: str, spec: str) -> str:
    """The SQL that ``alembic <command> <spec> --sql`` prints, as text."""
    from alembic import command as alembic_command

    out = io.StringIO()
    cfg = config(output_buffer=out)
    cfg.output_buffer = out
    with redirect_stdout(io.StringIO()):
        getattr(alembic_command, command)(cfg, spec, sql=True)
    return out.getvalue()


def _run(verb: str, url: str, revision: str, **attributes) -> None:
    from alembic import command as alembic_command
    from sqlalchemy.exc import DBAPIError

    from stage4.errors import Stage4Error

    cfg = config(url, **attributes)
    try:
        getattr(alembic_command, verb)(cfg, revision)
    except Stage4Error:
        raise
    except DBAPIError as e:
        from stage4.config import redact

        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e).splitlines()[0]
        raise MigrationError(
            f"{verb} to {revision} failed and was rolled back: {redact(reason)}"
        ) from e
