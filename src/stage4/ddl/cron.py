"""pg_cron, where present: say whether jobs can run here, schedule and unschedule named jobs.

The schedule/unschedule statements are DO blocks that look for the extension when
they run, so one SQL text works online, in offline ``--sql`` output and on servers
without pg_cron (there it raises one NOTICE saying that the work is manual).
``status()`` gives the same answer, with the reason, to Python callers that want
to log it or record it in Alembic's ``config.attributes["notes"]``.

pg_cron runs jobs only in the one database named by ``cron.database_name`` and
only when it is in ``shared_preload_libraries``; stage4 never creates the
extension itself (that needs a superuser and outlives any revision).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from stage4.ddl import literal

log = logging.getLogger("alembic.runtime.migration")

INSTALLED = "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')"


@dataclass(frozen=True)
class Job:
    """A named pg_cron job: ``cron.schedule(name, schedule, command)``."""

    name: str
    schedule: str
    command: str


@dataclass(frozen=True)
class CronStatus:
    """Can jobs be scheduled here (``installed``) and will they run (``runs``)? ``reason`` says why not."""

    installed: bool
    runs: bool
    reason: str


def _fetch(bind: Any, sql: str) -> list[tuple]:
    """Rows from a SQLAlchemy Connection (revisions) or a psycopg connection (library, tests)."""
    if hasattr(bind, "exec_driver_sql"):
        return [tuple(r) for r in bind.exec_driver_sql(sql).all()]
    return [tuple(r) for r in bind.execute(sql).fetchall()]


def status(bind: Any) -> CronStatus:
    """pg_cron's state for the current database, with a one-line reason when jobs cannot run."""
    installed, available, preloaded, cron_db, here = _fetch(
        bind,
        f"""SELECT {INSTALLED},
                  EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron'),
                  'pg_cron' = ANY (string_to_array(
                      replace(current_setting('shared_preload_libraries'), ' ', ''), ',')),
                  current_setting('cron.database_name', true), current_database()""",
    )[0]
    if installed and preloaded:
        return CronStatus(True, True, "pg_cron is installed and preloaded")
    if installed:
        return CronStatus(
            True,
            False,
            "pg_cron is installed but not in shared_preload_libraries, so its jobs do not run",
        )
    if not available:
        reason = "pg_cron is not installed on this server"
    elif not preloaded:
        reason = "pg_cron is not in shared_preload_libraries"
    elif cron_db and cron_db != here:
        reason = f"pg_cron runs in database {cron_db!r}, not in {here!r}"
    else:
        reason = "CREATE EXTENSION pg_cron has not been run in this database"
    return CronStatus(False, False, reason)


def schedule_sql(jobs: Iterable[Job], manual: str) -> str:
    """Schedule (or update, by name) every job when pg_cron is installed; else one NOTICE.

    ``manual`` is what to tell the operator instead, e.g. "run `stage4 refresh`".
    """
    calls = "\n".join(
        f"    PERFORM cron.schedule({literal(j.name)}, {literal(j.schedule)}, {literal(j.command)});"
        for j in jobs
    )
    notice = literal(f"stage4: pg_cron is not installed in this database; {manual}")
    return (
        f"DO $cron$\nBEGIN\n  IF {INSTALLED} THEN\n{calls}\n"
        f"  ELSE\n    RAISE NOTICE {notice};\n  END IF;\nEND\n$cron$"
    )


def unschedule_sql(names: Iterable[str]) -> str:
    """Remove the named jobs (whoever scheduled them) when pg_cron is installed; else nothing."""
    wanted = ", ".join(literal(n) for n in names)
    return (
        f"DO $cron$\nBEGIN\n  IF {INSTALLED} THEN\n"
        f"    PERFORM cron.unschedule(jobid) FROM cron.job WHERE jobname IN ({wanted});\n"
        f"  END IF;\nEND\n$cron$"
    )


def jobs(bind: Any, names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(name, schedule, command) of the named jobs present in ``cron.job`` (empty without pg_cron)."""
    if not _fetch(bind, f"SELECT {INSTALLED}")[0][0]:
        return []
    wanted = ", ".join(literal(n) for n in names)
    return _fetch(
        bind,
        f"SELECT jobname, schedule, command FROM cron.job WHERE jobname IN ({wanted}) ORDER BY 1",
    )


def note(attributes: MutableMapping[str, Any], message: str) -> None:
    """Tell the operator once: a warning on Alembic's logger, and a line in ``notes`` if kept."""
    log.warning(message)
    notes = attributes.get("notes")
    if isinstance(notes, list):
        notes.append(message)
