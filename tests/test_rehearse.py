"""`stage4 rehearse`: the gated rollout on a copy; the source is read, never written."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from stage4 import cli
from stage4.catalog import snapshot
from stage4.config import settings
from stage4.errors import ConfigError
from stage4.measure import bench, store
from stage4.plumbing import migrations, seed

runner = CliRunner()
FAST = ["--iterations", "3", "--concurrency", "1", "--duration", "1"]


def _state(url: str) -> dict:
    """What must not change on the source: catalog, rows, revision, stored runs."""
    s = settings()
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regnamespace(%s)", (s.bench_schema,)).fetchone()[0] is None:
            store.ensure(conn, s)  # so that the stored runs can be compared too
            conn.commit()
        return {
            "catalog": snapshot.catalog(conn),
            "rows": seed.content_hash(conn, s),
            "revision": conn.execute("SELECT version_num FROM stage4.alembic_version").fetchall(),
            "runs": conn.execute(f"SELECT run_id, label FROM {s.bench_schema}.runs").fetchall(),
            "baselines": conn.execute(f"SELECT * FROM {s.bench_schema}.baselines").fetchall(),
        }


def _invoke(source: str, scratch: str, *extra: str):
    return runner.invoke(
        cli.app,
        [
            "--database-url",
            source,
            "rehearse",
            "--to",
            "opt1",
            "--scratch-url",
            scratch,
            *FAST,
            *extra,
        ],
    )


class TestRehearse:
    @pytest.mark.slow
    def test_source_unchanged_and_verdicts_printed(self, seeded_url, db_url, tmp_path) -> None:
        base = bench.run(seeded_url, label="BASELINE", iterations=2, concurrency=1, duration=1)
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            store.set_baseline(conn, base.run_id)
        before = _state(seeded_url)
        result = _invoke(seeded_url, db_url, "--reports-dir", str(tmp_path))
        assert result.exit_code in (0, 3), result.output  # GO or NO-GO: both are verdicts
        after = _state(seeded_url)
        assert after == before, "\n".join(snapshot.diff(before, after))
        out = result.stdout
        assert re.search(
            r"^rehearsal of .*/s\d+_\d+ \(schema\) to opt1 in .*/t\d+_\d+: 2000 "
            r"rows copied in \d+\.\d s$",
            out,
            re.M,
        ), out
        assert re.search(r"^opt1: (GO|NO-GO) \(upgrade \d+\.\d s", out, re.M), out
        assert re.search(
            rf"^scratch baseline \(run \d+, [\d.]+ ms mean\) vs the source's stored "
            rf"one \(run {base.run_id}, [\d.]+ ms mean\): geometric mean of "
            r"per-query ratios x[\d.]+$",
            out,
            re.M,
        ), out
        # same test server here: the output says what differs all the same
        assert "on the source's own server: the same hardware, but not the source's cache" in out
        report = re.search(r"^report: (.*REPORT\.md)$", out, re.M)
        assert report, out
        text = Path(report.group(1)).read_text()
        assert "## Rehearsal" in text and "The source was only read (pg_dump)" in text
        # the rollout ran in the scratch database, which measured its own baseline
        assert migrations.current(db_url) in ("opt1", "schema")
        with psycopg.connect(db_url) as conn:
            assert seed.content_hash(conn, settings()) == before["rows"]
            assert store.baseline_run_id(conn) != base.run_id

    @pytest.mark.slow
    def test_a_sample_copies_that_many_rows(self, seeded_url, db_url, tmp_path) -> None:
        before = _state(seeded_url)
        result = _invoke(seeded_url, db_url, "--reports-dir", str(tmp_path), "--sample", "500")
        assert result.exit_code in (0, 3), result.output
        assert _state(seeded_url) == before
        assert " 500 rows copied in " in result.stdout
        assert re.search(
            r"^sample: 500 of 2000 rows \(the first by a hash of their id\)$", result.stdout, re.M
        ), result.stdout
        assert "the source has no stored baseline to compare with" in result.stdout


class TestRefusals:
    def test_the_source_is_not_a_scratch(self, seeded_url: str) -> None:
        from stage4.rollout import rehearse

        with pytest.raises(ConfigError, match=r"the scratch database is the source \("):
            rehearse.run(seeded_url, "opt1", scratch_url=seeded_url)

    def test_a_scratch_holding_the_app_is_refused(self, seeded_url: str, server) -> None:
        from stage4.rollout import rehearse

        other = server.url("stage4_seeded")
        with pytest.raises(ConfigError) as e:
            rehearse.run(seeded_url, "opt1", scratch_url=other)
        assert str(e.value).endswith(
            "is not empty (it holds public.geometrias, stage4, alembic_version or benchmarking): "
            "rehearse restores into an empty database"
        )

    def test_nothing_to_rehearse_succeeds_like_a_no_op_upgrade(self, seeded_url: str) -> None:
        result = runner.invoke(
            cli.app, ["--database-url", seeded_url, "rehearse", "--to", "schema"]
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == ["already at schema: nothing to do"]


class TestCopy:
    @pytest.mark.slow
    def test_a_sample_of_a_partitioned_table_with_generated_columns(
        self, seeded_url: str, db_url: str
    ) -> None:
        from stage4.rollout import rehearse

        migrations.upgrade(seeded_url, "opt2")  # partitions (opt1) and generated columns
        before = _state(seeded_url)
        notes = rehearse.copy(seeded_url, db_url, settings(), sample=300)
        assert _state(seeded_url) == before
        assert notes[-1] == "sample: 300 of 2000 rows (the first by a hash of their id)", notes
        with psycopg.connect(db_url) as conn:
            assert conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE area_m2 IS NOT NULL) FROM geometrias"
            ).fetchone() == (300, 300)
            assert conn.execute("SELECT version_num FROM stage4.alembic_version").fetchone() == (
                "opt2",
            )
