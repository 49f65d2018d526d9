"""The optimisations, one unit (module or package) each, and the registry that lists them in order.

A unit owns everything about one optimisation: the SQL its revision runs up and down
(the revision file in ``alembic/versions`` imports its unit and runs that SQL), and what
the generic modules need to know about it: the names ``base.Unit`` declares, every one of
them in every unit (``tests/test_optimisations.py`` checks it):

``REVISION``, ``REBUILDS_TABLE``, ``STALENESS``, ``CLAIMS``
    its Alembic revision; whether its step rebuilds the app's table (pre-flight checks what
    would stop it); qid -> staleness budget of a read it serves from a view
    (``stage4.measure.freshness``); figure -> what MISSION.md claims after it (``stage4.measure.report``);
``promises(s)``, ``views(s)``, ``creates(s)``
    what holds once applied (``stage4.catalog.verify``); the materialized views to settle after the
    step (``stage4.plumbing.migrations.settle``); the names it creates (pre-flight refuses collisions);
``jobs(s)``
    the pg_cron jobs its step schedules (``stage4.ddl.cron``);
``repoints(s)``, ``rewrites(s)``
    the app's RPCs its revision re-points (same signature, same rows; only a body that is
    the baseline's), and SQL the app could adopt for a query it does not re-point
    (``stage4.measure.workload``: measured beside the app's query, never judged);
``reference(conn, s, direction, scratch)``
    the bare work of its step, for the scale benchmark to time beside it.

Generic modules import this package, never a unit by name (``tests/test_imports.py``);
the kinds of object units build (partitioned tables, materialized views, grants, pg_cron
jobs, functions) have one helper each in ``stage4.ddl``.
"""

from __future__ import annotations

from stage4.config import Settings
from stage4.ddl import functions
from stage4.ddl.cron import Job
from stage4.ddl.matviews import MatView
from stage4.optimisations import (
    aggregates,
    future_partitions,
    gis_columns,
    partition_by_year,
    search_matview,
)
from stage4.optimisations.base import Creates, Promise, Reference, Rewrite, Unit

__all__ = [
    "UNITS", "Creates", "Promise", "Reference", "Rewrite", "Unit", "by_revision", "claims",
    "creates", "jobs", "name", "promises", "rebuilder", "rebuilds_table", "revisions", "rewrites",
    "staleness", "views",
]  # fmt: skip

# Chain order: each revision's down_revision is the one before it (``schema`` first).
UNITS: tuple[Unit, ...] = (
    partition_by_year,
    gis_columns,
    search_matview,
    future_partitions,
    aggregates,
)


def revisions() -> list[str]:
    """The optimisations' revision ids, in chain order."""
    return [u.REVISION for u in UNITS]


def by_revision(rev: str) -> Unit | None:
    """The unit of revision ``rev``; None for a revision without one (``schema``, ``base``)."""
    return next((u for u in UNITS if rev == u.REVISION), None)


def name(unit: Unit) -> str:
    """The unit's short name (its module's), which labels its rewrites in reports."""
    return unit.__name__.rsplit(".", 1)[-1]


def promises(s: Settings, rev: str) -> list[Promise]:
    """What revision ``rev`` promises (nothing for a revision without a unit)."""
    unit = by_revision(rev)
    return unit.promises(s) if unit else []


def views(s: Settings) -> list[MatView]:
    """Every materialized view the units create, in chain order."""
    return [v for u in UNITS for v in u.views(s)]


def rewrites(s: Settings) -> dict[str, dict[str, Rewrite]]:
    """qid -> {unit name: Rewrite} of every unit, units in name order (a stable listing)."""
    found: dict[str, dict[str, Rewrite]] = {}
    for unit in sorted(UNITS, key=name):
        for qid, rewrite in unit.rewrites(s).items():
            found.setdefault(qid, {})[name(unit)] = rewrite
    return found


def jobs(s: Settings, revs: list[str]) -> list[tuple[str, Job]]:
    """(revision, job) for every pg_cron job the steps ``revs`` schedule, in order."""
    return [(r, j) for r in revs if (u := by_revision(r)) for j in u.jobs(s)]


def creates(s: Settings, revs: list[str]) -> list[tuple[str, Creates]]:
    """(revision, object) for every object the steps ``revs`` create by name, in order."""
    return [(r, c) for r in revs if (u := by_revision(r)) for c in u.creates(s)]


def rebuilds_table(revs: list[str]) -> bool:
    """Does any of ``revs`` rebuild the app's table?"""
    return rebuilder(revs) is not None


def rebuilder(revs: list[str]) -> str | None:
    """The first of ``revs`` whose step rebuilds the app's table; None when none does."""
    return next((r for r in revs if (u := by_revision(r)) and u.REBUILDS_TABLE), None)


def staleness(rev: str) -> dict[str, str] | None:
    """qid -> staleness budget the unit of ``rev`` declares; None for a revision without a
    unit (its own module may declare them)."""
    unit = by_revision(rev)
    return None if unit is None else dict(unit.STALENESS)


def repoint_sql(s: Settings, rev: str) -> list[str]:
    """The RPCs the unit of ``rev`` re-points (``repoints``), each where its body is the
    baseline's: what its revision's upgrade runs."""
    unit = by_revision(rev)
    return functions.repoint_reads_sql(s, unit.repoints(s), rev) if unit else []


def restore_rpcs_sql(s: Settings, rev: str) -> list[str]:
    """Those RPCs back to the definitions they had where revision ``rev`` re-pointed them:
    what its downgrade runs."""
    unit = by_revision(rev)
    return functions.restore_reads_sql(unit.repoints(s), rev) if unit else []


def claims() -> list[tuple[str, dict[str, float]]]:
    """(revision, figure -> claimed value) of every unit with claims, in chain order."""
    return [(u.REVISION, dict(u.CLAIMS)) for u in UNITS if u.CLAIMS]
