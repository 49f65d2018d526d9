"""An upgrade never ends below the revision it started from, and a stale read is blamed on the
revision that introduced it, found before the bench.

Deterministic cases run on test-only revisions in a copy of the script folder: ``lower`` and
``upper`` change nothing, ``stale`` between them serves Q8 (``contagem_mensal``) from a
materialized view and declares its staleness budget, as a real view revision does. The real
chain is driven too, where the rule must hold whatever the verdicts are.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from conftest import revision
from stage4.config import settings
from stage4.errors import GateError
from stage4.plumbing import migrations
from stage4.rollout import gate

S = settings()
MONTHLY = (
    f"SELECT date_trunc('month', {S.time_column})::date AS mes, categoria, count(*) AS total "
    f"FROM {S.qualified_table} GROUP BY 1, 2"
)
ON_VIEW = (
    "SELECT m.mes, m.categoria, m.total FROM public.mensal_floor m "
    "WHERE m.mes >= make_date(ano, 1, 1) AND m.mes < make_date(ano + 1, 1, 1) ORDER BY 1, 2"
)
BUDGET = "one hour (test)"
IDLE = 'op.execute("SELECT 1")'  # a step that changes nothing
# schema → lower → stale → upper: stale serves Q8 from a materialized view, within a budget
FLOOR = {
    "lower": revision("lower", "schema", IDLE, IDLE),
    "stale": revision(
        "stale",
        "lower",
        f"""
        op.execute("CREATE MATERIALIZED VIEW public.mensal_floor AS {MONTHLY}")
        op.execute(functions.monthly_counts(settings(), {ON_VIEW!r}).create_sql())
        """,
        """
        op.execute(functions.monthly_counts(settings()).create_sql())
        op.execute("DROP MATERIALIZED VIEW public.mensal_floor")
        """,
        head=f'STALENESS = {{"Q8": "{BUDGET}"}}',
    ),
    "upper": revision("upper", "stale", IDLE, IDLE),
}
# wide margins: these tests are about which revision ends where, not about the statistics
# (test_stats.py); the noise of a 2,000-row database never clears them
WIDE = {"threshold": 1.0, "min_delta_ms": 25}


def _opts(tmp_path: Path, **kw) -> gate.GateOptions:
    return gate.GateOptions(backup=False, reports_dir=tmp_path / "reports", iterations=3,
                            concurrency=1, duration=0.5, **kw)  # fmt: skip


def _saved(rollout_folder: Path) -> dict:
    return json.loads((rollout_folder / "rollout.json").read_text())


def _newest(tmp_path: Path) -> Path:
    return sorted((tmp_path / "reports").glob("*/rollout.json"))[-1].parent


class TestBlame:
    @pytest.mark.slow
    def test_a_stale_read_below_the_start_is_blamed_on_its_revision_and_kept(
        self, seeded_url, chain, tmp_path
    ) -> None:
        chain(**FLOOR)
        migrations.upgrade(seeded_url, "stale")  # by hand: no rollout judged lower or stale
        with pytest.raises(GateError) as e:
            gate.upgrade(seeded_url, "upper", _opts(tmp_path, **WIDE))
        message = str(e.value)
        assert message.startswith("NO-GO at stale: Q8 stale: does not return a row inserted now")
        assert f"stale declares a staleness budget ({BUDGET}): pass --accept-stale" in message
        assert "upper was rolled back in" in message
        assert "stale was applied before this rollout and is kept: to roll it back: stage4 " \
               "downgrade --to lower" in message  # fmt: skip
        assert "; the database is at stale. Report: " in message
        assert migrations.current(seeded_url) == "stale"
        saved = _saved(_newest(tmp_path))
        [upper] = saved["steps"]
        assert upper["verdict"] == "rolled back (NO-GO at stale)"
        assert upper["blamed"] == "stale"
        assert upper["freshness"]["Q8"]["declared_by"] == "stale"
        assert upper["freshness"]["Q8"]["budget"] == BUDGET
        # found in the canary check: the step's bench and the re-bench were skipped
        assert upper["run_id"] is None and upper["after_rollback"] == {}
        assert not (_newest(tmp_path) / "METRICS_UPPER.json").exists()
        assert saved["outcome"] == "NO-GO at stale: upper rolled back; the database is at stale"

    @pytest.mark.slow
    def test_a_package_never_rolls_back_below_its_start(self, seeded_url, chain, tmp_path) -> None:
        chain(**FLOOR)
        migrations.upgrade(seeded_url, "stale")
        with pytest.raises(GateError) as e:
            gate.upgrade(seeded_url, "upper", _opts(tmp_path, judge="target", **WIDE))
        assert str(e.value).startswith("NO-GO at stale: Q8 stale")
        assert "; the database is at stale. Report: " in str(e.value)
        assert migrations.current(seeded_url) == "stale"


class TestCarried:
    """Steps an earlier rollout committed without judging them (a package interrupted before
    its target was judged, kept with --keep-unjudged), a downgrade into them, an upgrade
    again. (A package judged GO at its target is judged: the next upgrade carries nothing.)"""

    def _package_then_down(self, url: str, tmp_path: Path) -> None:
        from stage4.plumbing import interrupts

        def phase(step: str, text: str) -> None:
            if (step, text) == ("upper", "benchmarking"):
                raise KeyboardInterrupt

        with pytest.raises(interrupts.Interrupted):
            gate.upgrade(url, "upper", _opts(tmp_path, judge="target", accept_stale=True,
                                             keep_unjudged=True, **WIDE), phase=phase)  # fmt: skip
        assert migrations.current(url) == "upper"
        gate.downgrade(url, "stale")
        assert migrations.current(url) == "stale"

    @pytest.mark.slow
    def test_a_package_judged_go_carries_nothing(self, seeded_url, chain, tmp_path) -> None:
        chain(**FLOOR)
        rollout = gate.upgrade(seeded_url, "upper", _opts(tmp_path, judge="target",
                                                          accept_stale=True, **WIDE))  # fmt: skip
        assert rollout.outcome == "GO: at upper", [s.reasons for s in rollout.steps]
        gate.downgrade(seeded_url, "stale")
        said: list[tuple[str, str]] = []
        with contextlib.suppress(GateError):  # a verdict of the bench on upper: either way
            gate.upgrade(seeded_url, "upper", _opts(tmp_path, accept_stale=True, **WIDE),
                         phase=lambda step, text: said.append((step, text)))  # fmt: skip
        assert not any("did not judge it" in text for _, text in said), said
        assert migrations.current(seeded_url) in ("stale", "upper")

    @pytest.mark.slow
    def test_a_no_go_on_a_carried_step_keeps_it(self, seeded_url, chain, tmp_path) -> None:
        chain(**FLOOR)
        self._package_then_down(seeded_url, tmp_path)
        said: list[tuple[str, str]] = []
        with pytest.raises(GateError) as e:
            gate.upgrade(seeded_url, "upper", _opts(tmp_path, **WIDE),
                         phase=lambda step, text: said.append((step, text)))  # fmt: skip
        assert ("lower", "applied by a rollout that did not judge it: judging it now") in said
        assert not any(text.endswith("rolling back") for _, text in said), said
        message = str(e.value)
        # lower is judged with stale applied above it: stale's budget, blamed on stale
        assert message.startswith("NO-GO at stale: Q8 stale: does not return a row inserted now")
        assert f"stale declares a staleness budget ({BUDGET})" in message
        assert "no revision declares" not in message
        assert "to roll it back: stage4 downgrade --to lower" in message
        assert "rolled back in" not in message
        assert message.split(". Report: ")[0].endswith("; the database is at stale")
        assert migrations.current(seeded_url) == "stale"
        saved = _saved(_newest(tmp_path))
        verdicts = {st["revision"]: st["verdict"] for st in saved["steps"]}
        assert verdicts["lower"].startswith("kept, not judged (applied before this rollout)")
        assert verdicts["stale"].startswith("kept, not judged (applied before this rollout)")
        assert saved["steps"][0]["run_id"] is None  # refused before its bench

        # accepted: judged against stale's budget, and the rollout goes on from there
        try:
            rollout = gate.upgrade(seeded_url, "upper", _opts(tmp_path, accept_stale=True, **WIDE))
            final = rollout.outcome
        except GateError as no_go:  # a verdict of the bench: the rule holds either way
            final = str(no_go)
        now = migrations.current(seeded_url)
        assert now in ("stale", "upper")
        assert f"at {now}" in final
        lower = _saved(_newest(tmp_path))["steps"][0]
        assert lower["revision"] == "lower"
        assert lower["freshness"]["Q8"] == {
            "fresh": False, "detail": lower["freshness"]["Q8"]["detail"], "budget": BUDGET,
            "declared_by": "stale", "accepted": True,
        }  # fmt: skip

    @pytest.mark.slow
    def test_an_interrupt_keeps_the_carried_steps(self, seeded_url, chain, tmp_path) -> None:
        from stage4.plumbing import interrupts

        chain(**FLOOR)
        self._package_then_down(seeded_url, tmp_path)

        def phase(step: str, text: str) -> None:
            if (step, text) == ("lower", "benchmarking"):
                raise KeyboardInterrupt

        with pytest.raises(interrupts.Interrupted) as e:
            gate.upgrade(seeded_url, "upper", _opts(tmp_path, accept_stale=True, **WIDE),
                         phase=phase)  # fmt: skip
        assert migrations.current(seeded_url) == "stale"
        assert str(e.value) == (
            "interrupted during lower benchmarking: lower, stale kept, not judged (applied "
            "before this rollout); the database is at stale"
        )
        steps = _saved(_newest(tmp_path))["steps"]
        assert {st["revision"]: st["verdict"] for st in steps} == dict.fromkeys(
            ["lower", "stale"], "kept, not judged (applied before this rollout)"
        )


class TestRealChain:
    """The rule on the real revisions, whatever their verdicts on this machine."""

    def _ends_at_or_above(self, url: str, floor: str, run) -> str:
        try:
            final = run().outcome
        except GateError as e:
            final = str(e)
        now = migrations.current(url)
        chain = migrations.chain()
        assert chain.index(now) >= chain.index(floor), final
        assert f"at {now}" in final
        return final

    @pytest.mark.slow
    def test_alembic_upgrade_by_hand_then_the_gate_on_defaults(self, seeded_url, tmp_path) -> None:
        migrations.upgrade(seeded_url, "opt3")
        self._ends_at_or_above(seeded_url, "opt3",
                               lambda: gate.upgrade(seeded_url, "opt5", _opts(tmp_path)))  # fmt: skip

    @pytest.mark.slow
    def test_the_users_sequence_ends_at_or_above_opt3(self, seeded_url, tmp_path) -> None:
        opts = _opts(tmp_path, judge="target", accept_stale=True, **WIDE)
        self._ends_at_or_above(seeded_url, "schema", lambda: gate.upgrade(seeded_url, "opt5", opts))
        if migrations.current(seeded_url) != "opt5":
            pytest.fail(f"the package was not GO: {_saved(_newest(tmp_path))['outcome']}")
        gate.downgrade(seeded_url, "opt3")
        again = _opts(tmp_path, accept_stale=True)
        final = self._ends_at_or_above(
            seeded_url, "opt3", lambda: gate.upgrade(seeded_url, "opt5", again)
        )
        # the package was judged GO at opt5: nothing below opt3 is judged again
        steps = _saved(_newest(tmp_path))["steps"]
        assert [st["revision"] for st in steps] == ["opt4", "opt5"], final
