"""pytest-alembic's standard checks on a seeded database, and the chain's shape."""

from __future__ import annotations

from pytest_alembic.tests import (  # noqa: F401 - collected as tests
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from stage4 import migrations


def test_chain_is_linear_with_the_mission_ids() -> None:
    chain = migrations.chain()
    assert chain[0] == "schema"
    assert chain == ["schema", "opt1", "opt2", "opt3", "opt4", "opt5"][: len(chain)]


def test_fast_chain_agrees_with_alembic() -> None:
    assert migrations.chain() == migrations.alembic_chain()


def test_every_revision_renders_offline_sql() -> None:
    sql = migrations.offline_sql("upgrade", f"base:{migrations.chain()[-1]}")
    for rev in migrations.chain():
        assert f"-> {rev}" in sql
