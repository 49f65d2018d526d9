"""Drift against a real database: the record of a revision and the promises (what drift
falls back to when the chain cannot be replayed; the replay itself: test_replay.py), each
difference named, `stage4 drift`/`status`, and an upgrade that refuses to start."""

from __future__ import annotations

import json
import re
import signal
import sys

import psycopg
import pytest
from typer.testing import CliRunner

from conftest import ANY_SPEED
from stage4 import cli
from stage4.catalog import drift
from stage4.config import settings
from stage4.ddl import functions
from stage4.errors import PreflightError
from stage4.plumbing import migrations
from stage4.rollout import gate

runner = CliRunner()
GIST_GONE = "index public.geometrias_geom_gist on public.geometrias: missing"
SEARCH = (
    "function public.buscar_geometrias(termo text, min_lon double precision, min_lat double "
    "precision, max_lon double precision, max_lat double precision, limite integer)"
)


def _sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def _check(url: str) -> drift.Drift:
    """Drift from the record of the current revision, else its promises."""
    return drift.against_record(url, migrations.current(url))


def _change_search_body(url: str) -> None:
    s = settings()
    body = functions.search(s).body.replace("LIMIT limite", "LIMIT limite + 0")
    _sql(url, functions.search(s, source=body).create_sql())


class TestRecorded:
    @pytest.mark.slow
    def test_no_drift_right_after_the_record(self, seeded_url: str) -> None:
        record_id = drift.record(seeded_url)
        found = _check(seeded_url)
        assert found.differences == []
        assert re.fullmatch(rf"record {record_id} of schema, taken [-\d]+ [:\d]+", found.source)

    @pytest.mark.slow
    def test_names_a_dropped_index(self, seeded_url: str) -> None:
        drift.record(seeded_url)
        _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
        assert _check(seeded_url).differences == [GIST_GONE]

    def test_names_a_changed_rpc_body(self, seeded_url: str) -> None:
        drift.record(seeded_url)
        _change_search_body(seeded_url)
        assert _check(seeded_url).differences == [f"{SEARCH}: body differs from the record"]

    def test_names_an_added_index_and_a_changed_grant(self, seeded_url: str) -> None:
        drift.record(seeded_url)
        _sql(
            seeded_url,
            "CREATE INDEX extra_idx ON public.geometrias (nome)",
            "CREATE ROLE drift_reader",
            "GRANT SELECT ON public.geometrias TO drift_reader",
        )
        try:
            found = _check(seeded_url).differences
        finally:
            _sql(seeded_url, "DROP OWNED BY drift_reader", "DROP ROLE drift_reader")
        assert len(found) == 2, found
        assert re.fullmatch(
            r"table public\.geometrias: grants .* in the record, .*"
            r"drift_reader=r/postgres.* now",
            found[0],
        ), found
        assert found[1] == "index public.extra_idx on public.geometrias: not in the record (added)"

    def test_names_a_database_setting(self, seeded_url: str) -> None:
        drift.record(seeded_url)
        with psycopg.connect(seeded_url) as conn:
            name = conn.execute("SELECT current_database()").fetchone()[0]
        _sql(seeded_url, f"ALTER DATABASE \"{name}\" SET work_mem = '64MB'")
        assert _check(seeded_url).differences == [
            "database setting work_mem=64MB: not in the record (added)"
        ]

    @pytest.mark.slow
    def test_a_detached_partition_named_future_partitions_allowed(self, seeded_url) -> None:
        migrations.upgrade(seeded_url, "opt4")
        drift.record(seeded_url)
        t = settings().qualified_table
        # opt4's routine keeps partitions ahead: one more year (rows moved out of the default
        # partition) is the revision doing its job, not drift
        with psycopg.connect(seeded_url) as conn:
            made = conn.execute(
                "SELECT * FROM stage4.stage4_ensure_partitions(%s)", (settings().years_ahead + 1,)
            ).fetchall()
        assert len(made) == 1, made
        assert _check(seeded_url).differences == []
        _sql(seeded_url, f"ALTER TABLE {t} DETACH PARTITION stage4.geometrias_p2020")
        assert _check(seeded_url).differences == [
            "partition stage4.geometrias_p2020: partition bound \"FOR VALUES FROM ('2020-01-01') "
            "TO ('2021-01-01')\" in the record, '' now",
            # the detached table loses the clones of opt4's and opt2's triggers too
            "trigger geometrias_knn_sync of stage4.geometrias_p2020: missing",
            "trigger zz_stage4_gis_columns of stage4.geometrias_p2020: missing",
        ]

    @pytest.mark.slow
    @pytest.mark.cron
    def test_names_a_removed_cron_job(self, cron_url: str) -> None:
        migrations.upgrade(cron_url, "opt4")
        drift.record(cron_url)
        assert _check(cron_url).differences == []
        _sql(cron_url, "SELECT cron.unschedule('stage4_ensure_partitions')")
        assert _check(cron_url).differences == ["cron job stage4_ensure_partitions: missing"]


class TestPromises:
    """No record (plain alembic): the promises of every revision up to the current one."""

    @pytest.mark.slow
    def test_falls_back_to_the_promises(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt1")
        found = _check(seeded_url)
        assert found.differences == []
        assert found.source == (
            "the promises of schema, opt1 (no record of opt1 kept on the way up)"
        )
        _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
        assert _check(seeded_url).differences == [
            "opt1 promises GiST index on the geometry of the parent: broken"
        ]

    @pytest.mark.slow
    def test_a_record_of_another_revision_is_not_used(self, seeded_url: str) -> None:
        drift.record(seeded_url)  # of schema
        migrations.upgrade(seeded_url, "opt1")
        assert _check(seeded_url).source.startswith("the promises of schema, opt1")


class TestCli:
    def test_drift_exits_1_naming_each_difference(self, seeded_url: str) -> None:
        url = ["--database-url", seeded_url]
        drift.record(seeded_url)
        clean = runner.invoke(cli.app, [*url, "drift"])
        assert clean.exit_code == 0, clean.output
        assert clean.output == "no drift (the replay of schema)\n"  # the record is not used
        with psycopg.connect(seeded_url) as conn:
            name = conn.execute("SELECT current_database()").fetchone()[0]
        _sql(
            seeded_url,
            "DROP INDEX public.geometrias_geom_gist",
            f"ALTER DATABASE \"{name}\" SET work_mem = '64MB'",
        )
        result = runner.invoke(cli.app, [*url, "drift"])
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert lines[0] == "2 difference(s) from the replay of schema:"
        assert lines[1:] == [
            f"  {GIST_GONE}",
            "  database setting work_mem=64MB: not in the replay (added)",
        ]

    def test_status_has_a_drift_section(self, seeded_url: str, tmp_path) -> None:
        drift.record(seeded_url)
        _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
        # status builds no replay: it reads the one `stage4 drift` cached
        assert runner.invoke(cli.app, ["--database-url", seeded_url, "drift"]).exit_code == 1
        result = runner.invoke(
            cli.app, ["--database-url", seeded_url, "status", "--reports-dir", str(tmp_path)]
        )
        assert result.exit_code == 0, result.output
        assert re.search(
            r"^drift: 1 difference\(s\) from the replay of schema:\n"
            rf"  {re.escape(GIST_GONE)}$",
            result.output,
            re.M,
        ), result.output


class TestUpgrade:
    @pytest.mark.slow
    def test_refuses_a_drifted_database_then_accepts_it(
        self, seeded_url: str, tmp_path, monkeypatch, capsys
    ) -> None:
        drift.record(seeded_url)
        _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
        args = [
            "stage4",
            "--database-url",
            seeded_url,
            "upgrade",
            "--to",
            "opt1",
            "--no-backup",
            "--reports-dir",
            str(tmp_path),
            "--iterations",
            "2",
            "--concurrency",
            "1",
            "--duration",
            "1",
        ]
        monkeypatch.setattr(sys, "argv", args)
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code == 1
        assert re.fullmatch(
            r"FAILED: the database has drifted from what schema promises \(the replay of schema\): "
            rf"{re.escape(GIST_GONE)}\. Put it back \(see `stage4 drift`\),"
            r" or upgrade anyway with --accept-drift",
            capsys.readouterr().err.strip(),
        )
        assert migrations.current(seeded_url) == "schema"
        assert not list(tmp_path.iterdir()), "refused before any report or write"

        opts = gate.GateOptions(
            backup=False,
            reports_dir=tmp_path,
            iterations=2,
            concurrency=1,
            duration=1.0,
            accept_drift=True,
        )
        try:
            rollout = gate.upgrade(seeded_url, "opt1", opts)
            outcome = rollout.outcome
        except gate.GateError as no_go:  # a verdict either way: drift no longer stops it
            outcome = str(no_go)
        assert (
            f"drift accepted (--accept-drift): {GIST_GONE}"
            in (next(tmp_path.iterdir()) / "rollout.json").read_text()
        ), outcome
        # accepted is not made right: opt1 keeps the table's indexes (a GO) or the step is
        # rolled back (a NO-GO), and either way the replayed state has the GiST index
        assert GIST_GONE in drift.check(seeded_url).differences, outcome

    def test_gate_refusal_is_a_preflight_error(self, seeded_url: str, tmp_path) -> None:
        drift.record(seeded_url)
        _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
        with pytest.raises(PreflightError, match=re.escape(GIST_GONE)):
            gate.upgrade(seeded_url, "opt1", gate.GateOptions(reports_dir=tmp_path))


# ------------------------------------------------ what a downgrade leaves is no revision's promise
FAST = ANY_SPEED
AHEAD = [f"geometrias_p{y}" for y in (2029, 2030, 2031)]


def _partitions_ahead(url: str) -> dict[str, int]:
    """opt4's partitions after last_year that exist, with their rows."""
    t = settings().qualified_table
    with psycopg.connect(url) as conn:
        return {
            name: conn.execute(f"SELECT count(*) FROM stage4.{name}").fetchone()[0]
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass AND c.relname = ANY(%s) ORDER BY 1",
                (t, AHEAD),
            ).fetchall()
        }


def _records(url: str) -> list[tuple[str, bool]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT revision, catalog ? 'reached' FROM benchmarking.catalog_records "
            "ORDER BY record_id"
        ).fetchall()


def _up_with_records(url: str, target: str) -> None:
    """Each revision up to ``target`` applied and recorded, as a kept step records it."""
    revs = migrations.chain()
    now = migrations.current(url)
    for rev in revs[revs.index(now) + 1 : revs.index(target) + 1]:
        migrations.upgrade(url, rev)
        drift.record(url)


@pytest.mark.slow
def test_plain_alembic_downgrade_from_opt4_is_not_drift_and_opt4_upgrades_again(
    seeded_url: str, tmp_path
) -> None:
    """opt4's downgrade keeps its partitions (dropping one would drop its rows): the record
    of opt3, taken going up without them, accepts them, and `upgrade --to opt4` is not
    refused as drift."""
    import subprocess
    from pathlib import Path

    _up_with_records(seeded_url, "opt4")
    root = migrations.ROOT
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "alembic"),
            "-x",
            f"url={seeded_url}",
            "downgrade",
            "-1",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert migrations.current(seeded_url) == "opt3"
    ahead = _partitions_ahead(seeded_url)
    assert sorted(ahead) == AHEAD and sum(ahead.values()) > 0, ahead  # kept, with their rows
    found = _check(seeded_url)
    assert found.source.startswith("record ") and " of opt3, taken " in found.source
    assert found.differences == []
    # a partition after last_year that is not one calendar year is drift all the same
    _sql(
        seeded_url,
        f"CREATE TABLE public.geometrias_p2035 PARTITION OF {settings().qualified_table} "
        "FOR VALUES FROM ('2035-01-01') TO ('2037-01-01')",
    )
    assert _check(seeded_url).differences == [
        "partition public.geometrias_p2035: not in the record (added)"
    ]
    _sql(seeded_url, "DROP TABLE public.geometrias_p2035")
    try:
        rollout = gate.upgrade(seeded_url, "opt4", gate.GateOptions(reports_dir=tmp_path, **FAST))
        outcome = rollout.outcome
    except gate.GateError as no_go:  # a verdict either way: drift does not stop it
        outcome = str(no_go)
    assert "drifted" not in outcome, outcome
    assert outcome.startswith(("GO", "NO-GO")), outcome


@pytest.mark.slow
def test_a_record_taken_going_down_is_never_the_desired_state(seeded_url: str, tmp_path) -> None:
    """Up to opt4 (each revision recorded), `stage4 downgrade --to schema` (records nothing;
    an older stage4 recorded opt1 on the way down, with opt4's partitions: such a record,
    unmarked, is here too), then `stage4 upgrade --to opt1` killed in its benchmark: the
    database is at opt1 without 2029–2031, which is what opt1 promised going up. No drift,
    and the next upgrade judges the step."""
    from test_interrupt import Rollout, _judged_next

    _up_with_records(seeded_url, "opt4")
    assert sorted(_partitions_ahead(seeded_url)) == AHEAD
    recorded = _records(seeded_url)
    gate.downgrade(seeded_url, "opt1")
    assert _records(seeded_url) == recorded  # nothing recorded on the way down
    assert sorted(_partitions_ahead(seeded_url)) == AHEAD  # kept by opt4's downgrade
    assert _check(seeded_url).differences == []  # opt1's record accepts them
    with psycopg.connect(seeded_url, autocommit=True) as conn:  # as an older stage4 did
        conn.execute(
            "INSERT INTO benchmarking.catalog_records (revision, catalog) VALUES ('opt1', %s)",
            (json.dumps(drift.live(conn)),),
        )
    gate.downgrade(seeded_url, "schema")
    run = Rollout(seeded_url, tmp_path, "--no-backup", "--duration", "8")
    run.in_benchmark()
    code, _ = run.end(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert migrations.current(seeded_url) == "opt1"
    assert _partitions_ahead(seeded_url) == {}
    found = _check(seeded_url)
    assert found.differences == [], found
    assert re.fullmatch(r"record \d+ of opt1, taken .*", found.source)
    _judged_next(seeded_url, tmp_path)  # not refused as drift: the step is judged
