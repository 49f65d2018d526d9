"""Drift against a real database: each difference from the recorded revision named, the
promises as a fallback, `stage4 drift`/`status`, and an upgrade that refuses to start."""

from __future__ import annotations

import re
import sys

import psycopg
import pytest
from typer.testing import CliRunner

from stage4 import cli, drift, gate, migrations
from stage4.config import settings
from stage4.ddl import functions
from stage4.errors import PreflightError

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


def _change_search_body(url: str) -> None:
    s = settings()
    body = functions.search(s).body.replace("LIMIT limite", "LIMIT limite + 0")
    _sql(url, functions.search(s, source=body).create_sql())


class TestRecorded:
    def test_no_drift_right_after_the_record(self, seeded_url: str) -> None:
        record_id = drift.record(seeded_url)
        found = drift.check(seeded_url)
        assert found.differences == []
        assert re.fullmatch(rf"record {record_id} of schema, taken [-\d]+ [:\d]+", found.source)

    def test_names_a_dropped_index(self, seeded_url: str) -> None:
        drift.record(seeded_url)
        _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
        assert drift.check(seeded_url).differences == [GIST_GONE]

    def test_names_a_changed_rpc_body(self, seeded_url: str) -> None:
        drift.record(seeded_url)
        _change_search_body(seeded_url)
        assert drift.check(seeded_url).differences == [f"{SEARCH}: body differs from the record"]

    def test_names_an_added_index_and_a_changed_grant(self, seeded_url: str) -> None:
        drift.record(seeded_url)
        _sql(
            seeded_url,
            "CREATE INDEX extra_idx ON public.geometrias (nome)",
            "CREATE ROLE drift_reader",
            "GRANT SELECT ON public.geometrias TO drift_reader",
        )
        try:
            found = drift.check(seeded_url).differences
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
        assert drift.check(seeded_url).differences == [
            "database setting work_mem=64MB: not in the record (added)"
        ]

    def test_a_detached_partition_named_future_partitions_allowed(self, seeded_url) -> None:
        migrations.upgrade(seeded_url, "opt4")
        drift.record(seeded_url)
        t = settings().qualified_table
        # opt4's routine keeps partitions ahead: one more year (rows moved out of the default
        # partition) is the revision doing its job, not drift
        with psycopg.connect(seeded_url) as conn:
            made = conn.execute(
                "SELECT * FROM public.stage4_ensure_partitions(%s)", (settings().years_ahead + 1,)
            ).fetchall()
        assert len(made) == 1, made
        assert drift.check(seeded_url).differences == []
        _sql(seeded_url, f"ALTER TABLE {t} DETACH PARTITION {t}_p2020")
        assert drift.check(seeded_url).differences == [
            "partition public.geometrias_p2020: partition bound \"FOR VALUES FROM ('2020-01-01') "
            "TO ('2021-01-01')\" in the record, '' now",
            # the detached table loses the clone of opt2's trigger too
            "trigger zz_stage4_gis_columns of public.geometrias_p2020: missing",
        ]

    @pytest.mark.cron
    def test_names_a_removed_cron_job(self, cron_url: str) -> None:
        migrations.upgrade(cron_url, "opt4")
        drift.record(cron_url)
        assert drift.check(cron_url).differences == []
        _sql(cron_url, "SELECT cron.unschedule('stage4_ensure_partitions')")
        assert drift.check(cron_url).differences == ["cron job stage4_ensure_partitions: missing"]


class TestPromises:
    """No record (plain alembic): the promises of every revision up to the current one."""

    def test_falls_back_to_the_promises(self, seeded_url: str) -> None:
        migrations.upgrade(seeded_url, "opt1")
        found = drift.check(seeded_url)
        assert found.differences == []
        assert found.source == (
            "the promises of schema, opt1 (no record of opt1: it was not migrated by stage4)"
        )
        _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
        assert drift.check(seeded_url).differences == [
            "opt1 promises GiST index on the geometry of the parent: broken"
        ]

    def test_a_record_of_another_revision_is_not_used(self, seeded_url: str) -> None:
        drift.record(seeded_url)  # of schema
        migrations.upgrade(seeded_url, "opt1")
        assert drift.check(seeded_url).source.startswith("the promises of schema, opt1")


class TestCli:
    def test_drift_exits_1_naming_each_difference(self, seeded_url: str) -> None:
        url = ["--database-url", seeded_url]
        drift.record(seeded_url)
        clean = runner.invoke(cli.app, [*url, "drift"])
        assert clean.exit_code == 0, clean.output
        assert clean.output.startswith("no drift (record ")
        _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
        _change_search_body(seeded_url)
        result = runner.invoke(cli.app, [*url, "drift"])
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert lines[0].startswith("2 difference(s) from record ")
        assert lines[1:] == [f"  {GIST_GONE}", f"  {SEARCH}: body differs from the record"]

    def test_status_has_a_drift_section(self, seeded_url: str, tmp_path) -> None:
        drift.record(seeded_url)
        _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
        result = runner.invoke(
            cli.app, ["--database-url", seeded_url, "status", "--reports-dir", str(tmp_path)]
        )
        assert result.exit_code == 0, result.output
        assert re.search(
            r"^drift: 1 difference\(s\) from record \d+ of schema, taken .*:\n"
            rf"  {re.escape(GIST_GONE)}$",
            result.output,
            re.M,
        ), result.output


class TestUpgrade:
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
            r"FAILED: the database has drifted from what schema promises \(record \d+ of schema, "
            rf"taken [-\d]+ [:\d]+\): {re.escape(GIST_GONE)}\. Put it back \(see `stage4 drift`\),"
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
        # the step stage4 applied (or rolled back) was recorded: no drift from that record
        assert drift.check(seeded_url).differences == []

    def test_gate_refusal_is_a_preflight_error(self, seeded_url: str, tmp_path) -> None:
        drift.record(seeded_url)
        _change_search_body(seeded_url)
        with pytest.raises(PreflightError, match="body differs from the record"):
            gate.upgrade(seeded_url, "opt1", gate.GateOptions(reports_dir=tmp_path))
