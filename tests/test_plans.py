"""Query plans: compact form, access-path headline and the change between two plans; one
real EXPLAIN before and after dropping the GiST index."""

from __future__ import annotations

import json

import psycopg
import pytest

from stage4.config import settings
from stage4.measure import plans, workload
from stage4.plumbing import migrations

INDEX = {
    "Node Type": "Index Scan",
    "Index Name": "geometrias_geom_gist",
    "Relation Name": "geometrias",
    "Actual Rows": 431,
    "Actual Loops": 1,
    "Shared Hit Blocks": 52,
    "Shared Read Blocks": 3,
}
APPEND = {
    "Node Type": "Gather",
    "Actual Rows": 431,
    "Shared Hit Blocks": 900,
    "Plans": [
        {
            "Node Type": "Append",
            "Parallel Aware": True,
            "Actual Rows": 144,
            "Actual Loops": 3,
            "Plans": [
                {
                    "Node Type": "Seq Scan",
                    "Parallel Aware": True,
                    "Relation Name": f"geometrias_p{y}",
                }
                for y in range(2020, 2030)
            ]
            + [{"Node Type": "Seq Scan", "Relation Name": "geometrias_default"}],
        }
    ],
}


class TestPure:
    def test_compact_names_nodes_indexes_rows_and_buffers(self) -> None:
        plan = {"Node Type": "Limit", "Actual Rows": 20, "Plans": [INDEX]}
        assert plans.compact(plan) == [
            "Limit (rows 20)",
            "  Index Scan using geometrias_geom_gist (rows 431, buffers hit 52 read 3)",
        ]

    def test_compact_is_cut_to_its_limit(self) -> None:
        lines = plans.compact(APPEND, limit=4)
        assert lines[:2] == [
            "Gather (rows 431, buffers hit 900)",
            "  Parallel Append over 11 partitions (rows 144×3)",
        ]
        assert lines[2] == "    Parallel Seq Scan on geometrias_p2020"
        assert lines[3] == "… 10 more nodes"

    def test_headline_looks_through_pass_through_nodes(self) -> None:
        assert (
            plans.headline(
                {"Node Type": "Limit", "Plans": [{"Node Type": "Sort", "Plans": [INDEX]}]}
            )
            == "Index Scan using geometrias_geom_gist"
        )
        assert plans.headline(APPEND) == (
            "Parallel Append over 11 partitions (Parallel Seq Scan ×10, Seq Scan ×1)"
        )

    def test_a_bitmap_scan_names_its_index(self) -> None:
        bitmap = {
            "Node Type": "Bitmap Heap Scan",
            "Relation Name": "geometrias",
            "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "geometrias_geom_gist"}],
        }
        assert plans.headline({"Node Type": "Aggregate", "Plans": [bitmap]}) == (
            "Bitmap Heap Scan on geometrias via geometrias_geom_gist"
        )

    def test_a_join_names_both_inputs(self) -> None:
        seq = {"Node Type": "Seq Scan", "Relation Name": "geometrias"}
        join = {"Node Type": "Nested Loop", "Plans": [seq, INDEX]}
        assert plans.headline(join) == (
            "Seq Scan on geometrias + Index Scan using geometrias_geom_gist"
        )

    def test_describe_change(self) -> None:
        assert plans.describe_change(INDEX, APPEND) == (
            "Index Scan using geometrias_geom_gist → Parallel Append over 11 partitions "
            "(Parallel Seq Scan ×10, Seq Scan ×1)"
        )
        assert plans.describe_change(INDEX, dict(INDEX, **{"Actual Rows": 9})) is None

    def test_buffers(self) -> None:
        assert plans.buffers(INDEX) == 55
        assert plans.buffers({"Node Type": "Result"}) == 0


class TestExplain:
    def test_a_dropped_index_is_named_in_the_change(self, seeded_url: str) -> None:
        s = settings()
        q = workload.queries(s)["Q1"]
        with psycopg.connect(seeded_url) as conn:
            anchors = workload.sample_anchors(conn, s)
            params = workload.parameters("Q1", anchors, 1)[0]
            sql = plans.sql_of(conn, q)  # the RPC's body, its arguments in place
            assert "resumo_janela" not in sql and "%(min_lon)s" in sql
            before = plans.explain(conn, sql, params)
            conn.rollback()
            conn.execute("DROP INDEX public.geometrias_geom_gist")
            after = plans.explain(conn, sql, params)
            conn.rollback()  # the index is back
        assert before["Execution Time"] > 0 and before["Planning Time"] > 0
        assert "geometrias_geom_gist" in plans.headline(before), plans.compact(before)
        assert "geometrias_geom_gist" not in plans.headline(after), plans.compact(after)
        change = plans.describe_change(before, after)
        assert change is not None and change.startswith(plans.headline(before) + " → ")
        assert any("buffers hit" in line for line in plans.compact(before))

    def test_an_argument_the_call_leaves_out_takes_its_default(self, seeded_url: str) -> None:
        """Q4 calls the search without ``limite`` (DEFAULT 20): at opt3 its plan is taken
        with 20 in place, not refused for a missing parameter."""
        migrations.upgrade(seeded_url, "opt3")
        s = settings()
        with psycopg.connect(seeded_url) as conn:
            anchors = workload.sample_anchors(conn, s)
            params = workload.parameters("Q4", anchors, 1)[0]
            assert "limite" not in params
            sql = plans.sql_of(conn, workload.queries(s)["Q4"], params)
            assert "LIMIT (20)" in sql and "%(termo)s" in sql
            assert plans.explain(conn, sql, params)["Execution Time"] >= 0
            assert set(plans.of_workload(seeded_url)) >= {"Q4", "Q8", "Q10"}


class TestInTheRollout:
    @pytest.mark.slow
    def test_every_step_reports_a_plan_for_every_query(self, seeded_url: str, tmp_path) -> None:
        from stage4.errors import GateError
        from stage4.rollout import gate

        opts = gate.GateOptions(
            backup=False, reports_dir=tmp_path, iterations=2, concurrency=1, duration=1.0
        )
        try:
            rollout = gate.upgrade(seeded_url, "opt1", opts)
            step = rollout.steps[0]
        except GateError:  # a verdict either way: the plans are what is under test
            step = None
        folder = next(tmp_path.iterdir())
        saved = json.loads((folder / "rollout.json").read_text())["steps"][0]
        assert sorted(saved["plans"]) == sorted(
            [*(f"Q{i}" for i in range(1, 11)), "R1", "R2", "R3"]
        )
        for qid, p in saved["plans"].items():
            assert p["headline"] and p["compact"], (qid, p)
        # opt1 partitions the table: at least the time-window query's access path changes
        assert saved["plans"]["Q5"]["change"], saved["plans"]["Q5"]
        report = (folder / "REPORT.md").read_text()
        for i in range(1, 11):
            assert f"- plan Q{i}: " in report
        assert "<details><summary>plans (EXPLAIN ANALYZE, BUFFERS" in report
        if step is not None:
            assert step.plans == saved["plans"]

    @pytest.mark.slow
    def test_a_slower_query_s_reason_cites_its_plan_change(self, seeded_url: str) -> None:
        from stage4.plumbing import migrations
        from stage4.rollout import gate, judging

        before = plans.of_workload(seeded_url)
        migrations.upgrade(seeded_url, "opt1")
        rec = gate.StepRecord("opt1", reasons=["Q5 slower: median 9.0 ms vs baseline 3.0 ms"])
        judging.explain_step(seeded_url, rec, before)
        change = rec.plans["Q5"]["change"]
        assert change and " → " in change
        assert rec.reasons == [
            "Q5 slower: median 9.0 ms vs baseline 3.0 ms",
            f"Q5 plan changed: {change}",
        ]
