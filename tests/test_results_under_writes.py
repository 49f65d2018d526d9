"""Result fingerprints while the app writes: compared in one snapshot, not skipped.

A writer inserts rows (three per commit, ~20 commits/s) for the whole test: between the baseline run and the step's run every RPC's answer moves with the data.
An RPC re-pointed to an equivalent body is not "different results"; one re-pointed to
return something else is, app writes or not. Test-only revisions re-point the monthly
counts RPC (Q8) in a copy of the script folder (the real chain stays untouched).
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conftest import revision
from stage4.config import settings
from stage4.ddl import functions
from stage4.errors import GateError
from stage4.measure import fingerprints, freshness, workload
from stage4.plumbing import migrations
from stage4.rollout import gate

REPOINT = ("s = settings(); op.execute(functions.monthly_counts(s, source=functions."
           "monthly_counts(s).body.replace({old!r}, {new!r})).create_sql())")  # fmt: skip
AS_IS = "op.execute(functions.monthly_counts(settings()).create_sql())"
REVISIONS = {  # each one step after `schema`
    # the same answer, written another way (id is never null)
    "same_rows": revision(
        "same_rows", "schema", REPOINT.format(old="count(*)", new="count(g.id)"), AS_IS
    ),
    # another answer: every month counted one too many
    "other_rows": revision(
        "other_rows",
        "schema",
        REPOINT.format(old="count(*) AS total", new="count(*) + 1 AS total"),
        AS_IS,
    ),
}
OPTS = {"iterations": 3, "concurrency": 1, "duration": 1.0}


class Writer(threading.Thread):
    """The app: three rows near existing ones inserted per commit, until stopped."""

    def __init__(self, url: str, rows: list[freshness.Canary] | None = None) -> None:
        """``rows``: all inserted in each commit, without a pause (where the queries look);
        else three copies of random rows per commit, 20 commits a second."""
        super().__init__(daemon=True)
        self.url, self.stop, self.commits, self.errors = url, threading.Event(), 0, []
        self.rows = rows

    def run(self) -> None:
        s = settings()
        t, d, g = s.qualified_table, s.time_column, s.geometry_column
        copies = (f"INSERT INTO {t} (nome, categoria, {d}, {g}, descricao) "
                  f"SELECT nome, categoria, {d}, ST_Translate({g}, 0.0001, 0.0001), descricao "
                  f"FROM {t} ORDER BY random() LIMIT 3")  # fmt: skip
        one = (f"INSERT INTO {t} (nome, descricao, categoria, {d}, {g}) VALUES (%(nome)s, "
               f"%(nome)s, %(categoria)s, %(day)s::date, ST_GeomFromText(%(wkt)s, {s.srid}))")  # fmt: skip
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    if self.rows:
                        with conn.transaction():
                            for row in self.rows:
                                conn.execute(one, vars(row))
                    else:
                        conn.execute(copies)
                        time.sleep(0.05)
                    self.commits += 1
        except Exception as e:  # the test asserts there was none
            self.errors.append(repr(e))

    def __enter__(self) -> Writer:
        self.start()
        deadline = time.monotonic() + 30
        while self.commits < 3:
            assert time.monotonic() < deadline and self.is_alive(), self.errors
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join(30)


def _repoint(url: str, old: str, new: str) -> None:
    s = settings()
    fn = functions.monthly_counts(s)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(functions.monthly_counts(s, source=fn.body.replace(old, new)).create_sql())


class TestOneSnapshot:
    @pytest.mark.slow
    def test_an_rpc_and_its_base_sql_agree_while_the_app_writes(self, seeded_url) -> None:
        s = settings()
        with Writer(seeded_url) as writer:
            n0 = writer.commits
            checked = fingerprints.compare_rpcs(seeded_url, s, ["Q1", "Q4", "Q8", "Q10"])
            _repoint(seeded_url, "count(*) AS total", "count(*) + 1 AS total")
            changed = fingerprints.compare_rpcs(seeded_url, s, ["Q8"])
            n1 = writer.commits
        assert writer.errors == [] and n1 > n0  # the app wrote meanwhile
        assert sorted(checked) == ["Q1", "Q10", "Q4", "Q8"]  # each an RPC
        assert all(c.same for c in checked.values()), checked
        assert "6 parameter sets" in checked["Q8"].detail
        assert changed["Q8"].same is False, changed
        # nothing of the check stays: the base body lived in pg_temp, rolled back
        with psycopg.connect(seeded_url) as conn:
            temp = conn.execute(
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname LIKE 'pg_temp%%' AND p.proname = 'contagem_mensal'"
            ).fetchone()[0]
        assert temp == 0

    def test_the_canary_check_is_not_moved_by_the_apps_commits(self, seeded_url) -> None:
        s = settings()
        with psycopg.connect(seeded_url) as conn:
            anchors = workload.sample_anchors(conn, s, freshness.CANARY_SEED)
            conn.commit()
        # the app writes right where each query's canary goes: every answer moves
        rows = [c for qid, q in workload.queries(s).items() if q.rpc for p in
                workload.parameters(qid, anchors, 1, freshness.CANARY_SEED, "canary")
                for c in freshness.canaries(qid, p)[0]]  # fmt: skip
        with Writer(seeded_url, rows) as writer, psycopg.connect(seeded_url) as conn:
            n0 = writer.commits
            checked = freshness.check(conn, s, anchors)
            n1 = writer.commits
        assert writer.errors == [] and n1 > n0
        assert {q: r.fresh for q, r in checked.items()} == dict.fromkeys(checked, True), checked
        assert len(checked) == 10


class TestGateUnderWrites:
    @pytest.mark.slow
    def test_an_equivalent_rpc_is_go_its_results_compared(self, seeded_url, chain, tmp_path):
        chain(same_rows=REVISIONS["same_rows"])
        opts = gate.GateOptions(backup=False, reports_dir=tmp_path, threshold=100.0,
                                min_delta_ms=100_000.0, **OPTS)  # fmt: skip
        with Writer(seeded_url) as writer:
            rollout = gate.upgrade(seeded_url, "same_rows", opts)
        assert writer.errors == []
        (step,) = rollout.steps
        assert step.verdict == "GO", step.reasons
        assert not [r for r in step.reasons if "result changed" in r]
        note = next(n for n in step.notes if n.startswith("Q8 compared in one snapshot"))
        assert "same results (6 parameter sets" in note and "rows the app wrote" in note
        assert not [n for n in step.notes if "not compared" in n]
        assert migrations.current(seeded_url) == "same_rows"

    @pytest.mark.slow
    def test_an_rpc_returning_other_rows_is_no_go_app_writes_or_not(
        self, seeded_url, chain, tmp_path
    ) -> None:
        chain(other_rows=REVISIONS["other_rows"])
        opts = gate.GateOptions(backup=False, reports_dir=tmp_path, threshold=100.0,
                                min_delta_ms=100_000.0, **OPTS)  # fmt: skip
        with Writer(seeded_url) as writer, pytest.raises(GateError) as no_go:
            gate.upgrade(seeded_url, "other_rows", opts)
        assert writer.errors == []
        # the rollback is compared without what the app's own inserts moved: no false alarm
        assert "the database is back exactly as before" in str(no_go.value), no_go.value
        saved = next(tmp_path.glob("*/rollout.json")).read_text()
        assert "the app wrote public.geometrias meanwhile" in saved
        assert (
            "Q8 result changed: in one snapshot the RPC returns other rows than its base SQL"
            in saved
        )
        assert migrations.current(seeded_url) == "schema"  # rolled back
