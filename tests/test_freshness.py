"""Fresh results: the canary check catches a read served from a stale view, passes a fresh one,
leaves nothing behind, and the gate refuses a stale read unless declared and accepted."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from stage4.config import settings
from stage4.ddl import functions
from stage4.errors import GateError
from stage4.measure import freshness, workload
from stage4.plumbing import migrations
from stage4.rollout import gate

S = settings()
MONTHLY = (
    f"SELECT date_trunc('month', {S.time_column})::date AS mes, categoria, count(*) AS total "
    f"FROM {S.qualified_table} GROUP BY 1, 2"
)
# contagem_mensal (Q8) re-pointed at a relation holding MONTHLY, same signature and rows
ON_RELATION = (
    "SELECT m.mes, m.categoria, m.total FROM public.mensal_canary m "
    "WHERE m.mes >= make_date(ano, 1, 1) AND m.mes < make_date(ano + 1, 1, 1) ORDER BY 1, 2"
)


def _check(url: str) -> dict[str, freshness.Result]:
    with psycopg.connect(url) as conn:
        anchors = workload.sample_anchors(conn, S, freshness.CANARY_SEED)
        conn.commit()
        return freshness.check(conn, S, anchors)


def _repoint_q8(url: str, kind: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE {kind} public.mensal_canary AS {MONTHLY}")
        conn.execute(functions.monthly_counts(S, ON_RELATION).create_sql())


class TestCanaries:
    def test_every_query_reads_the_table_fresh_at_schema_and_nothing_is_left(
        self, seeded_url
    ) -> None:
        with psycopg.connect(seeded_url) as conn:
            before = conn.execute("SELECT count(*), min(id) FROM geometrias").fetchone()
        checked = _check(seeded_url)
        assert list(checked) == [f"Q{i}" for i in range(1, 11)]
        assert all(r.fresh for r in checked.values()), {q: r.detail for q, r in checked.items()}
        with psycopg.connect(seeded_url) as conn:
            assert conn.execute("SELECT count(*), min(id) FROM geometrias").fetchone() == before

    def test_a_stale_materialized_view_is_caught(self, seeded_url) -> None:
        _repoint_q8(seeded_url, "MATERIALIZED VIEW")
        checked = _check(seeded_url)
        assert not checked["Q8"].fresh
        assert checked["Q8"].detail.startswith("does not return a row inserted now")
        assert [q for q, r in checked.items() if not r.fresh] == ["Q8"]

    def test_a_fresh_relation_behind_the_same_rpc_passes(self, seeded_url) -> None:
        _repoint_q8(seeded_url, "VIEW")  # a plain view: computed from the table at each read
        assert _check(seeded_url)["Q8"].fresh

    @pytest.mark.slow
    def test_the_chain_serves_every_read_fresh_and_declares_nothing(self, seeded_url) -> None:
        migrations.upgrade(seeded_url, "opt5")
        checked = _check(seeded_url)
        assert [q for q, r in checked.items() if not r.fresh] == []
        assert "Q8" in checked and "Q10" in checked
        assert freshness.declared(migrations.chain()) == {}


STALE_REVISION = '''"""Test-only: contagem_mensal (Q8) reads a materialized view."""
from alembic import op

from stage4.config import settings
from stage4.ddl import functions

revision = "{name}"
down_revision = "schema"
{declaration}

def upgrade() -> None:
    op.execute("CREATE MATERIALIZED VIEW public.mensal_canary AS {monthly}")
    op.execute(functions.monthly_counts(settings(), {body!r}).create_sql())


def downgrade() -> None:
    op.execute(functions.monthly_counts(settings()).create_sql())
    op.execute("DROP MATERIALIZED VIEW public.mensal_canary")
'''


@pytest.fixture
def stale_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """install(declared): a copy of alembic/ with `schema` and a step `stale` whose Q8 reads a
    materialized view, declaring a staleness budget or not."""

    def install(declared: bool) -> None:
        dst = tmp_path / f"alembic-{declared}"
        shutil.copytree(migrations._script_location(), dst,
                        ignore=shutil.ignore_patterns("__pycache__", "opt*"))  # fmt: skip
        declaration = 'STALENESS = {"Q8": "one hour (test)"}' if declared else ""
        (dst / "versions" / "stale.py").write_text(STALE_REVISION.format(
            name="stale", declaration=declaration, monthly=MONTHLY, body=ON_RELATION))  # fmt: skip
        monkeypatch.setattr(migrations, "_script_location", lambda: dst)
        migrations.chain.cache_clear()

    yield install
    migrations.chain.cache_clear()


def _opts(tmp_path: Path, **kw) -> gate.GateOptions:
    return gate.GateOptions(backup=False, reports_dir=tmp_path / "reports", iterations=4,
                            concurrency=1, duration=1.0, threshold=1.0, min_delta_ms=25, **kw)  # fmt: skip


class TestGate:
    @pytest.mark.slow
    def test_a_stale_read_without_a_budget_is_no_go_even_with_accept_stale(
        self, seeded_url, stale_step, tmp_path
    ) -> None:
        stale_step(declared=False)
        with pytest.raises(GateError) as e:
            gate.upgrade(seeded_url, "stale", _opts(tmp_path, accept_stale=True))
        assert "Q8 stale: does not return a row inserted now" in str(e.value)
        assert "no revision declares a staleness budget for it" in str(e.value)
        assert migrations.current(seeded_url) == "schema"

    @pytest.mark.slow
    def test_a_declared_budget_needs_accept_stale(self, seeded_url, stale_step, tmp_path) -> None:
        stale_step(declared=True)
        with pytest.raises(GateError) as e:
            gate.upgrade(seeded_url, "stale", _opts(tmp_path))
        assert "stale declares a staleness budget (one hour (test)): pass --accept-stale" in str(
            e.value
        )
        rollout = gate.upgrade(seeded_url, "stale", _opts(tmp_path, accept_stale=True))
        [step] = rollout.steps
        assert step.verdict == "GO", step.reasons
        assert step.freshness["Q8"] == {
            "fresh": False, "detail": step.freshness["Q8"]["detail"], "budget": "one hour (test)",
            "declared_by": "stale", "accepted": True,
        }  # fmt: skip
        assert all(v["fresh"] for q, v in step.freshness.items() if q != "Q8")
        assert any(n.startswith("Q8 stale, accepted (--accept-stale)") for n in step.notes)


def test_a_table_that_refuses_the_canary_is_not_checked_and_says_why(seeded_url) -> None:
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE geometrias ADD CONSTRAINT no_canary CHECK (id > 0) NOT VALID")
    checked = _check(seeded_url)
    assert {r.fresh for r in checked.values()} == {None}
    assert checked["Q1"].detail == (
        'not checked: the table refused a canary row (new row for relation "geometrias" '
        'violates check constraint "no_canary")'
    )
