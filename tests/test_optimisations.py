"""The registry of optimisation units: chain order, the interface, promises that follow the
settings, and each unit's reference running on a real database."""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pytest

from stage4 import optimisations
from stage4.config import settings
from stage4.ddl import functions
from stage4.measure import workload
from stage4.optimisations import Promise, Reference, Rewrite
from stage4.plumbing import migrations
from stage4.plumbing.db import connect

S = settings()


def test_the_registry_lists_the_chain_in_order():
    assert optimisations.revisions() == [r for r in migrations.chain() if r != "schema"]
    assert optimisations.by_revision("schema") is None
    assert optimisations.by_revision("opt3").REVISION == "opt3"


@pytest.mark.parametrize("unit", optimisations.UNITS, ids=optimisations.name)
def test_every_unit_has_every_name_the_protocol_declares(unit):
    from stage4.optimisations.base import Unit

    members = {n for n in vars(Unit) if not n.startswith("_")} | set(Unit.__annotations__)
    assert members >= {"REVISION", "REBUILDS_TABLE", "repoints", "reference"}
    missing = sorted(n for n in members if not hasattr(unit, n))
    assert not missing, f"{unit.__name__} lacks {missing}"
    assert isinstance(unit.REBUILDS_TABLE, bool) and isinstance(unit.STALENESS, dict)
    assert all(callable(getattr(unit, n)) for n in members if n not in Unit.__annotations__)


@pytest.mark.parametrize("unit", optimisations.UNITS, ids=optimisations.name)
def test_every_unit_declares_the_interface(unit):
    promises, rewrites, views = unit.promises(S), unit.rewrites(S), unit.views(S)
    assert promises and all(isinstance(p, Promise) for p in promises)
    assert all(isinstance(r, Rewrite) for r in rewrites.values())
    repoints = unit.repoints(S)
    # a body it re-points keeps the signature; what it re-points it does not also offer
    assert not set(rewrites) & set(repoints)
    base = {f.name: f for f in functions.baseline(S)}
    for fn in repoints.values():
        assert (fn.identity, fn.returns) == (base[fn.name].identity, base[fn.name].returns)
    assert all(workload.CONTRACT[qid] == "RPC" for qid in repoints)
    assert all(v.qualified.startswith(f"{S.own_schema}.") for v in views)


@pytest.mark.parametrize("unit", optimisations.UNITS, ids=optimisations.name)
def test_promises_follow_the_configured_names(unit):
    """Another table name in the settings: no promise still names the default table."""
    other = replace(S, table="parcelas")
    for p in unit.promises(other):
        assert f"{S.table}_" not in p.sql and f".{S.table} " not in p.sql, p.text


def test_opt5_promises_exactly_its_own_refresh_jobs():
    (jobs,) = [p for p in optimisations.promises(S, "opt5") if "refresh jobs" in p.text]
    assert jobs.condition is not None  # checked only where pg_cron is installed
    for view in optimisations.by_revision("opt5").views(S):
        assert f"'stage4_refresh_{view.name}'" in jobs.sql


def test_settle_learns_the_views_from_the_registry():
    names = [v.name.removeprefix(S.table) for v in optimisations.views(S)]
    assert names == ["_tile_mv", "_pontos_mv"]


def _run(conn, ref: Reference) -> None:
    for stmt in ref.setup:
        conn.execute(stmt)
    with conn.transaction(force_rollback=not ref.committed):
        for stmt in ref.statements:
            conn.execute(stmt)


@pytest.mark.slow
def test_every_reference_runs_up_and_down(seeded_url):
    """Each step's reference (what the scale benchmark times beside it) runs on the database
    as the step finds it: the upgrade's before the step, the downgrade's after it."""
    for unit in optimisations.UNITS:
        with connect(seeded_url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA scratch")
            _run(conn, unit.reference(conn, S, "up", "scratch"))
            conn.execute("DROP SCHEMA scratch CASCADE")
        migrations.upgrade(seeded_url, unit.REVISION)
        with connect(seeded_url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA scratch")
            _run(conn, unit.reference(conn, S, "down", "scratch"))
            views = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'scratch'::regnamespace "
                "AND relkind = 'm'"
            ).fetchone()[0]
            assert views == 0, unit.REVISION  # a committed downgrade dropped its copies
            conn.execute("DROP SCHEMA scratch CASCADE")
    with psycopg.connect(seeded_url) as conn:  # the references left the app's objects alone
        assert conn.execute(f"SELECT count(*) FROM {S.qualified_table}").fetchone()[0] > 0
