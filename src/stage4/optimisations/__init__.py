"""The optimisations, one unit (module) each, and the registry that lists them in chain order.

A unit owns everything about one optimisation: the SQL its revision runs up and down
(the revision file in ``alembic/versions`` imports its unit and orchestrates that SQL),
and what the generic modules need to know about it. Every unit exposes:

``REVISION``
    the Alembic revision id it belongs to (``opt1`` … ``opt5``);
``promises(s) -> list[Promise]``
    what holds on the live database once the revision is applied (``stage4.verify``);
``views(s) -> list[MatView]``
    the materialized views it creates, vacuumed and analyzed once the step has committed
    (``stage4.migrations.settle``);
``repoints(s) -> dict[qid, Function]``
    the app's RPCs its revision re-points (same signature, same rows: ``stage4.ddl.functions``),
    where their bodies are the ones ``schema`` creates;
``rewrites(s) -> dict[qid, Rewrite]``
    faster SQL it makes available if the app adopts it (``stage4.workload``: measured
    beside the app's query, never judged), for a query it does not re-point;
``reference(conn, s, direction, scratch) -> Reference``
    the bare work of its step ``up`` or ``down``, for the scale benchmark to time beside
    the step (``scratch``: a schema it may build copies in).

``creates(s) -> list[Creates]``
    the objects its step creates by name, which pre-flight refuses to let it meet when
    someone else's object already holds the name;

and, optionally, ``REBUILDS_TABLE = True`` when its step rebuilds the app's table (pre-flight
then checks what would stop the rebuild); ``STALENESS`` (qid -> budget) when its step serves
queries from a view (``stage4.freshness.declared``); ``CLAIMS`` (figure -> value) for the
figures MISSION.md claims after its step, shown beside the measured ones (``stage4.report``).

Generic modules import this package, never a unit by name (``tests/test_imports.py``);
the kinds of object units build (partitioned tables, materialized views, grants, pg_cron
jobs, functions) have one helper each in ``stage4.ddl``.
"""

from __future__ import annotations

from types import ModuleType

from stage4.config import Settings
from stage4.ddl.matviews import MatView
from stage4.optimisations import (
    aggregates,
    future_partitions,
    gis_columns,
    partition_by_year,
    search_matview,
)
from stage4.optimisations.base import Creates, Promise, Reference, Rewrite

__all__ = ["UNITS", "Creates", "Promise", "Reference", "Rewrite", "by_revision", "revisions"]

# Chain order: each revision's down_revision is the one before it (``schema`` first).
UNITS: tuple[ModuleType, ...] = (
    partition_by_year,
    gis_columns,
    search_matview,
    future_partitions,
    aggregates,
)


def revisions() -> list[str]:
    """The optimisations' revision ids, in chain order."""
    return [u.REVISION for u in UNITS]


def by_revision(rev: str) -> ModuleType | None:
    """The unit of revision ``rev``; None for a revision without one (``schema``, ``base``)."""
    return next((u for u in UNITS if rev == u.REVISION), None)


def name(unit: ModuleType) -> str:
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


def creates(s: Settings, revs: list[str]) -> list[tuple[str, Creates]]:
    """(revision, object) for every object the steps ``revs`` create by name, in order."""
    return [(r, c) for r in revs if (u := by_revision(r)) for c in u.creates(s)]


def rebuilds_table(revs: list[str]) -> bool:
    """Does any of ``revs`` rebuild the app's table?"""
    return rebuilder(revs) is not None


def rebuilder(revs: list[str]) -> str | None:
    """The first of ``revs`` whose step rebuilds the app's table; None when none does."""
    return next((r for r in revs if getattr(by_revision(r), "REBUILDS_TABLE", False)), None)


def staleness(rev: str) -> dict[str, str] | None:
    """qid -> staleness budget the unit of ``rev`` declares; None for a revision without a
    unit (its own module may declare them)."""
    unit = by_revision(rev)
    return None if unit is None else dict(getattr(unit, "STALENESS", {}))


def claims() -> list[tuple[str, dict[str, float]]]:
    """(revision, figure -> claimed value) of every unit with claims, in chain order."""
    return [(u.REVISION, dict(u.CLAIMS)) for u in UNITS if getattr(u, "CLAIMS", None)]
