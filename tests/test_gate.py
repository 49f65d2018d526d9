"""The gated rollout against a real database: GO keeps a step, NO-GO rolls it back exactly.

Steps that are slower or wrong on purpose are test-only revisions in a copy of
the script folder (``slow``: drops the GiST index, and the search RPC sleeps;
``wrong``: the search RPC returns fewer rows; ``sleepy``: the search RPC sleeps 50 ms,
``awake`` puts it back, ``idle`` changes nothing, ``locking``'s downgrade needs a table
lock), so the real chain stays untouched. ``scripts`` chains them in the order given.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import psycopg
import pytest

from stage4 import queries
from stage4.catalog import snapshot
from stage4.config import settings
from stage4.errors import ConfigError, GateError
from stage4.measure import workload
from stage4.plumbing import migrations
from stage4.rollout import gate

FAST = {"iterations": 6, "concurrency": 2, "duration": 1.0}

GIST = "geometrias_geom_gist ON public.geometrias USING gist (geom)"
AS_IS = "op.execute(functions.search(settings()).create_sql())"
ASLEEP = ("s = settings(); op.execute(functions.search(s, source=functions.search(s).body.replace("
          "'WHERE ', 'WHERE (SELECT pg_sleep(0.05)::text) IS NOT NULL AND ', 1)).create_sql())")  # fmt: skip
ONE_ROW = ("s = settings(); op.execute(functions.search(s, source=functions.search(s).body.replace("
           "'LIMIT limite', 'LIMIT 1')).create_sql())")  # fmt: skip

# name: (what it does, upgrade, downgrade); each a line of Python with `op`, `settings`
# and `functions` at hand
TEST_REVISIONS = {
    "slow": ("drop the GiST index (Q1, Q2, Q6 … become sequential scans) and make the search "
             "RPC (Q4) sleep 50 ms per call, a slowdown no machine load hides",
             f'op.execute("DROP INDEX public.geometrias_geom_gist"); {ASLEEP}',
             f'op.execute("CREATE INDEX {GIST}"); {AS_IS}'),
    "wrong": ("the search RPC silently returns at most one row", ONE_ROW, AS_IS),
    "sleepy": ("the search RPC (Q4) sleeps 50 ms, once per call (an InitPlan)", ASLEEP, AS_IS),
    "awake": ("after `sleepy`, the search RPC as it was (pays `sleepy` back)", AS_IS, ASLEEP),
    "idle": ("a step that changes nothing", 'op.execute("SELECT 1")', 'op.execute("SELECT 1")'),
    "dropper": ("drops public.app_extra, a table the app's own query reads",
                'op.execute("DROP TABLE public.app_extra")',
                'op.execute("CREATE TABLE public.app_extra (n integer)")'),
    "locking": ("changes nothing; its downgrade needs a SHARE lock on the table",
                'op.execute("SELECT 1")',
                'op.execute("LOCK TABLE public.geometrias IN SHARE MODE")'),
}  # fmt: skip


def _revision_file(name: str, down_revision: str) -> str:
    doc, up, down = TEST_REVISIONS[name]
    return (f'"""Test-only: {doc}."""\nfrom alembic import op\n\n'
            "from stage4.config import settings\nfrom stage4.ddl import functions\n\n"
            f'revision = "{name}"\ndown_revision = "{down_revision}"\n\n\n'
            f"def upgrade() -> None:\n    {up}\n\n\ndef downgrade() -> None:\n    {down}\n")  # fmt: skip


@pytest.fixture
def scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Returns install(*names): a copy of alembic/ holding `schema` plus test-only revisions."""

    def install(*names: str) -> Path:
        dst = tmp_path / f"alembic-{'-'.join(names)}"
        shutil.copytree(migrations._script_location(), dst,
                        ignore=shutil.ignore_patterns("__pycache__", "opt*"))  # fmt: skip
        for before, name in zip(("schema", *names), names, strict=False):
            (dst / "versions" / f"{name}.py").write_text(_revision_file(name, before))
        monkeypatch.setattr(migrations, "_script_location", lambda: dst)
        migrations.chain.cache_clear()
        return dst

    yield install
    migrations.chain.cache_clear()


def _opts(tmp_path: Path, **kw) -> gate.GateOptions:
    return gate.GateOptions(backup_dir=tmp_path / "backups", reports_dir=tmp_path / "reports",
                            **{**FAST, **kw})  # fmt: skip


def _no_go(url: str, target: str, tmp_path: Path, **kw) -> tuple[GateError, dict, dict]:
    with psycopg.connect(url) as conn:
        before = snapshot.take(conn)
    with pytest.raises(GateError) as e:
        # min_delta_ms=0: at 2,000 rows a lost index costs about a millisecond, which the
        # default practical floor (2 ms) would rightly call harmless.
        gate.upgrade(url, target, _opts(tmp_path, min_delta_ms=0.0, **kw))
    with psycopg.connect(url) as conn:
        after = snapshot.take(conn)
    assert snapshot.diff(before, after) == []
    assert migrations.current(url) == "schema"
    return e.value, before, after


class TestNoGo:
    @pytest.mark.slow
    def test_a_slower_step_is_rolled_back_exactly(self, seeded_url, scripts, tmp_path) -> None:
        scripts("slow")
        err, _, _ = _no_go(seeded_url, "slow", tmp_path)
        message = str(err)
        assert message.startswith("NO-GO at slow: ")
        # the lost GiST index costs about a millisecond at 2,000 rows, which a loaded
        # machine's noise hides; the search RPC's 50 ms sleep it cannot: Q4 is named
        assert re.search(r"Q4 slower: median [\d.]+ ms vs baseline", message)
        assert "slow was rolled back in" in message
        assert "the database is back exactly as before" in message
        assert err.exit_code == 3
        report = next((tmp_path / "reports").glob("*/REPORT.md")).read_text()
        assert "### slow: NO-GO" in report
        assert re.search(r"- Q\d+ slower: median", report)
        rollout = json.loads(next((tmp_path / "reports").glob("*/rollout.json")).read_text())
        assert rollout["steps"][0]["restored_exactly"] is True

    @pytest.mark.slow
    def test_a_result_changing_step_is_no_go(self, seeded_url, scripts, tmp_path) -> None:
        scripts("wrong")
        err, _, _ = _no_go(seeded_url, "wrong", tmp_path)
        assert "Q4 result changed: fingerprint differs from baseline" in str(err)

    @pytest.mark.slow
    def test_no_gate_keeps_the_step_and_records_the_override(
        self, seeded_url, scripts, tmp_path
    ) -> None:
        scripts("wrong")
        rollout = gate.upgrade(seeded_url, "wrong", _opts(tmp_path, gate=False))
        assert migrations.current(seeded_url) == "wrong"
        assert rollout.steps[0].verdict == "GO (gate disabled with --no-gate)"
        assert rollout.options["gate"] == "False"


class TestWorkloadFiles:
    @pytest.mark.slow
    def test_a_file_that_fails_after_a_step_is_no_go_naming_it(
        self, seeded_url, scripts, tmp_path
    ) -> None:
        scripts("dropper")
        folder = tmp_path / "workload"
        folder.mkdir()
        (folder / "extra.sql").write_text("\\set n random(1, 9)\nSELECT count(*) FROM "
                                          "public.app_extra WHERE n < :n;\n")  # fmt: skip
        (folder / "recent.sql").write_text("\\set ano random(2021, 2024)\nSELECT id, nome "
                                           "FROM geometrias WHERE data_referencia >= "
                                           "make_date(:ano, 1, 1) ORDER BY id LIMIT 20;\n")  # fmt: skip
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.app_extra (n integer)")
        err, _, _ = _no_go(seeded_url, "dropper", tmp_path, workload=folder)
        assert f"extra fails after dropper ({folder / 'extra.sql'}): " in str(err)
        assert 'relation "public.app_extra" does not exist' in str(err)
        rollout = json.loads(next((tmp_path / "reports").glob("*/rollout.json")).read_text())
        [step] = rollout["steps"]
        assert "recent" in step["comparisons"] and "extra" not in step["comparisons"]

    @pytest.mark.slow
    def test_a_file_that_fails_before_any_step_is_refused(
        self, seeded_url, scripts, tmp_path
    ) -> None:
        scripts("idle")
        folder = tmp_path / "workload"
        folder.mkdir()
        (folder / "broken.sql").write_text("SELECT nope FROM geometrias;\n")
        with pytest.raises(ConfigError, match=r"a workload query fails before any step: .*"
                           r"broken\.sql: column \"nope\" does not exist"):  # fmt: skip
            gate.upgrade(seeded_url, "idle", _opts(tmp_path, workload=folder))
        assert migrations.current(seeded_url) == "schema"
        # recorded in the run's folder as well, as every way a rollout ends
        saved = json.loads(next((tmp_path / "reports").glob("*/rollout.json")).read_text())
        failed = "FAILED during baseline: a workload query fails before any step: "
        assert saved["outcome"].startswith(failed), saved["outcome"]
        assert (tmp_path / "reports" / Path(saved["folder"]).name / "REPORT.md").exists()


class TestGo:
    @pytest.mark.slow
    def test_upgrade_to_head_passes_every_gate_and_reports(self, seeded_url, tmp_path) -> None:
        # Wide margins on purpose: at 2,000 rows every query takes a few ms and a shared
        # 2-core machine moves that by more than 2 ms now and then. The mechanics (promises,
        # fingerprints, rows kept, reports) are under test here; the statistics are tested in
        # test_stats.py, a real regression in TestNoGo, the real margins in benchmarks/.
        # the defaults otherwise: no step serves a read stale (the canary check itself:
        # test_freshness.py), so none needs --accept-stale
        rollout = gate.upgrade(seeded_url, "head", _opts(tmp_path, threshold=1.0, min_delta_ms=25))
        assert migrations.current(seeded_url) == migrations.chain()[-1]
        assert [s.revision for s in rollout.steps] == migrations.chain()[1:]
        assert all(s.verdict == "GO" for s in rollout.steps), [s.reasons for s in rollout.steps]
        assert all(s.verified for s in rollout.steps)
        # The app contract: what the app sends is measured with the same text at every
        # revision (its RPCs re-pointed under it); the rewrites opt5 offers are recorded,
        # and gate nothing; opt2 offers none (it re-points Q1 and Q3 itself).
        app_sql = {q.qid: q.sql for q in workload.queries(settings()).values()}
        by_rev = {st.revision: st for st in rollout.steps}
        for st in rollout.steps:
            sent = st.run.environment["workload_sql"]
            assert {q: sql for q, sql in sent.items() if not queries.is_write(q)} == app_sql
            assert {q for q in sent if queries.is_write(q)} == set(queries.WRITES), st.revision
        assert not by_rev["opt2"].available
        assert set(by_rev["opt5"].available) == {"Q2", "Q6", "Q7", "Q9", "Q10"}
        for qid, found in by_rev["opt5"].available.items():
            for r in found.values():
                assert r["same_results"] is True and r["speedup"] > 0, qid
        for st in rollout.steps:
            assert all(v["fresh"] for v in st.freshness.values()), st.revision
        saved = json.loads((Path(rollout.folder) / "rollout.json").read_text())
        assert saved["steps"][-1]["available"]["Q9"]["aggregates"]["sql"].startswith("SELECT")
        folder = Path(rollout.folder)
        names = {p.name for p in folder.iterdir()}
        assert {"REPORT.md", "rollout.json", "METRICS_BASELINE.json",
                "latency_by_query.png", "mean_latency.png"} <= names  # fmt: skip
        assert {f"METRICS_{r.upper()}.json" for r in migrations.chain()[1:]} <= names
        report = (folder / "REPORT.md").read_text()
        assert "| BASELINE |" in report and "(claimed)" in report
        assert Path(rollout.backup).stat().st_size > 0
        again = gate.upgrade(seeded_url, "head", _opts(tmp_path))
        assert again.outcome == f"already at {migrations.chain()[-1]}: nothing to do"


# Wide margins for the package tests, as in TestGo: the 50 ms sleep clears them by far,
# the noise of a 2,000-row database never does.
WIDE = {"threshold": 1.0, "min_delta_ms": 25}


class TestJudgeTarget:
    """--judge target: the steps are one package, gated at the target only."""

    @pytest.mark.slow
    def test_a_step_paid_back_by_the_next_one_passes_as_a_package(
        self, seeded_url, scripts, tmp_path
    ) -> None:
        scripts("sleepy", "awake")
        with pytest.raises(GateError) as e:  # judged on its own, sleepy is refused
            gate.upgrade(seeded_url, "awake", _opts(tmp_path, **WIDE))
        assert str(e.value).startswith("NO-GO at sleepy: Q4 slower")
        assert "stage4 upgrade --to awake --judge target" in str(e.value)
        assert migrations.current(seeded_url) == "schema"

        rollout = gate.upgrade(seeded_url, "awake", _opts(tmp_path, judge="target", **WIDE))
        assert migrations.current(seeded_url) == "awake"
        sleepy, awake = rollout.steps
        assert sleepy.verdict == "measured (judged at awake)"
        assert any(r.startswith("not gated (awake is): Q4 slower") for r in sleepy.reasons)
        assert sleepy.run_id is not None  # measured, in the report
        assert awake.verdict == "GO", awake.reasons
        assert rollout.outcome == "GO: at awake"

    @pytest.mark.slow
    def test_a_package_that_does_not_pay_is_rolled_back_whole(
        self, seeded_url, scripts, tmp_path
    ) -> None:
        scripts("sleepy", "idle")
        with psycopg.connect(seeded_url) as conn:
            before = snapshot.take(conn)
        said: list[tuple[str, str]] = []
        with pytest.raises(GateError) as e:
            gate.upgrade(seeded_url, "idle", _opts(tmp_path, judge="target", **WIDE),
                         phase=lambda step, text: said.append((step, text)))  # fmt: skip
        # pre-flight's lines are said before any step: a warning there may explain a NO-GO
        first_step = said.index(("sleepy", "upgrading"))
        assert ("pre-flight", "[ok] table contract: public.geometrias matches") in said[:first_step]
        assert [st for st, text in said[first_step:] if text == "NO-GO: rolling back"] == [
            "idle",
            "sleepy",
        ]  # newest first
        message = str(e.value)
        assert message.startswith("NO-GO at idle: Q4 slower")
        assert "sleepy … idle were rolled back in" in message
        assert "the database is back exactly as before" in message
        assert "--judge target" not in message  # no hint to do what was just done
        assert migrations.current(seeded_url) == "schema"
        with psycopg.connect(seeded_url) as conn:
            assert snapshot.diff(before, snapshot.take(conn)) == []
        rollout = json.loads(next((tmp_path / "reports").glob("*/rollout.json")).read_text())
        sleepy, idle = rollout["steps"]
        assert sleepy["verdict"] == "rolled back with idle (NO-GO)"
        assert idle["verdict"] == "NO-GO" and idle["restored_exactly"] is True
        assert sleepy["rollback_seconds"] > 0 and idle["rollback_seconds"] > 0
        assert rollout["options"]["judge"] == "target"

    @pytest.mark.slow
    def test_a_changed_result_is_refused_at_any_step_of_a_package(
        self, seeded_url, scripts, tmp_path
    ) -> None:
        scripts("wrong", "idle")
        with pytest.raises(GateError) as e:
            gate.upgrade(seeded_url, "idle", _opts(tmp_path, judge="target", **WIDE))
        assert str(e.value).startswith(
            "NO-GO at wrong: Q4 result changed: fingerprint differs from baseline"
        )
        assert "wrong was rolled back in" in str(e.value)
        assert migrations.current(seeded_url) == "schema"

    @pytest.mark.slow
    def test_a_rollback_that_cannot_take_its_lock_says_how_to_finish(
        self, seeded_url, scripts, tmp_path
    ) -> None:
        from stage4.errors import MigrationError

        scripts("sleepy", "locking")
        blocker = psycopg.connect(seeded_url)

        def phase(step: str, text: str) -> None:
            if text == "NO-GO: rolling back" and step == "locking":  # an app writes meanwhile
                blocker.execute("UPDATE public.geometrias SET nome = nome WHERE id = 1")

        try:
            with pytest.raises(MigrationError) as e:
                gate.upgrade(seeded_url, "locking", _opts(tmp_path, judge="target",
                             lock_timeout="1s", **WIDE), phase=phase)  # fmt: skip
        finally:
            blocker.rollback()
            blocker.close()
        message = str(e.value)
        assert message.startswith("NO-GO at locking (Q4 slower")
        assert "rolling back stopped at locking" in message
        assert "lock timeout (1s)" in message
        assert message.endswith("finish it with: stage4 downgrade --to schema")
        rollout = json.loads(next((tmp_path / "reports").glob("*/rollout.json")).read_text())
        assert rollout["outcome"].startswith("NO-GO at locking: rolling back stopped at locking")
        gate.downgrade(seeded_url, "schema")  # what the message says, once the writer is done
        assert migrations.current(seeded_url) == "schema"

    def test_an_unknown_mode_is_refused_before_connecting(self, tmp_path) -> None:
        from stage4.errors import ConfigError

        with pytest.raises(ConfigError, match="judge must be one of each, target, not 'all'"):
            gate.upgrade("postgresql://nobody@127.0.0.1:9/none", "head",
                         _opts(tmp_path, judge="all"))  # fmt: skip


class TestFailure:
    @pytest.mark.slow
    def test_a_step_that_cannot_take_its_lock_fails_cleanly_and_is_reported(
        self, seeded_url, tmp_path
    ) -> None:
        from stage4.errors import MigrationError

        with psycopg.connect(seeded_url) as blocker:
            # ROW EXCLUSIVE (an open write): pre-flight, backup and baseline still read, but
            # opt1's EXCLUSIVE lock must wait and give up after 1 s
            blocker.execute("UPDATE public.geometrias SET nome = nome WHERE id = 1")
            with pytest.raises(MigrationError) as e:
                gate.upgrade(seeded_url, "opt1", _opts(tmp_path, lock_timeout="1s"))
            blocker.rollback()
        assert "lock timeout (1s)" in str(e.value)
        assert migrations.current(seeded_url) == "schema"
        rollout = json.loads(next((tmp_path / "reports").glob("*/rollout.json")).read_text())
        assert rollout["outcome"] == "FAILED at opt1: still at schema"
        assert rollout["steps"][0]["verdict"].startswith("FAILED")
        assert (Path(rollout["folder"]) / "REPORT.md").is_file()


class TestStatusOfAnUnfinishedRollout:
    """A rollout killed mid-way leaves rollout.json at "running": `status` must not say so."""

    def _write(self, tmp_path: Path, **fields) -> Path:
        folder = tmp_path / "reports" / "20260101-000000"
        folder.mkdir(parents=True)
        (folder / "rollout.json").write_text(json.dumps({"outcome": "running", **fields}))
        return tmp_path / "reports"

    def test_a_dead_process_is_reported_as_not_finished(self, tmp_path: Path) -> None:
        import socket
        import subprocess
        import sys

        from stage4.rollout import status

        done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        reports = self._write(tmp_path, pid=int(done.stdout), host=socket.gethostname())
        outcome = status.last_rollout(reports)["outcome"]
        assert outcome.startswith(f"did not finish (its process, pid {int(done.stdout)}, is gone")

    def test_a_live_process_is_still_running(self, tmp_path: Path) -> None:
        import os
        import socket

        from stage4.rollout import status

        reports = self._write(tmp_path, pid=os.getpid(), host=socket.gethostname())
        assert status.last_rollout(reports)["outcome"] == "running"

    def test_a_rollout_without_its_process_is_not_called_running(self, tmp_path: Path) -> None:
        from stage4.rollout import status

        reports = self._write(tmp_path)  # as written before rollouts recorded their pid
        assert status.last_rollout(reports)["outcome"] == (
            "running, or interrupted (this rollout did not record its process)"
        )

    def test_only_this_databases_rollouts_count(self, tmp_path: Path) -> None:
        from stage4.rollout import status

        reports = self._write(tmp_path, database="postgres@127.0.0.1:5432/app")
        newer = reports / "20260102-000000"
        newer.mkdir()
        (newer / "rollout.json").write_text(json.dumps({"outcome": "GO", "database": "other"}))
        assert status.last_rollout(reports)["outcome"] == "GO"
        mine = status.last_rollout(reports, "postgres@127.0.0.1:5432/app")
        assert mine["path"] == str(reports / "20260101-000000")
        assert status.last_rollout(reports, "postgres@127.0.0.1:5433/app") is None

    def test_the_rollout_records_its_process(self) -> None:
        import os

        rollout = gate.Rollout("db", "opt1", "now", {})
        assert rollout.pid == os.getpid() and rollout.host
