"""verify: what each revision promises, checked on a real database.

A promise is kept where the revision did its work and broken, by name, where the
database lacks what it promised; promises about pg_cron are checked only where pg_cron
is installed; opt4's future partitions follow ``years_ahead``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import psycopg
import pytest

from stage4.catalog import verify
from stage4.config import settings
from stage4.optimisations import future_partitions as fp
from stage4.plumbing import migrations

S = settings()
CRON_PROMISES = {
    "scheduled with pg_cron (pg_cron is installed in this database)",
    "refresh jobs scheduled with pg_cron (pg_cron is installed in this database)",
}


def _texts(rev: str, s=S) -> list[str]:
    return [p.text for p in verify.promises(s, rev)]


def _partition_promise(s) -> str:
    """The text of opt4's promise about future partitions under settings ``s``."""
    (text,) = [t for t in _texts("opt4", s) if "partition" in t and "routine" not in t]
    return text


def _horizon(years_ahead: int) -> int:
    return max(date.today().year, S.last_year) + years_ahead


class TestKept:
    @pytest.mark.slow
    def test_every_revision_keeps_its_promises_where_pg_cron_runs(self, cron_url):
        for rev in migrations.chain():
            migrations.upgrade(cron_url, rev)
            kept, broken = verify.revision(cron_url, S, rev)
            assert broken == [], rev
            assert kept == _texts(rev), rev

    @pytest.mark.slow
    def test_without_pg_cron_its_promises_are_not_checked(self, seeded_url):
        migrations.upgrade(seeded_url, "opt5")
        for rev in ("opt4", "opt5"):
            kept, broken = verify.revision(seeded_url, S, rev)
            assert broken == []
            assert kept == [t for t in _texts(rev) if t not in CRON_PROMISES]
            assert set(_texts(rev)) & CRON_PROMISES  # the revision does promise a job

    def test_a_revision_without_promises(self, seeded_url):
        assert verify.promises(S, "no_such_revision") == []
        assert verify.revision(seeded_url, S, "no_such_revision") == ([], [])


class TestBroken:
    def test_a_missing_partition_breaks_opt1(self, seeded_url):
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            conn.execute(f"DROP TABLE {S.own_schema}.{S.table}_p2024")
        kept, broken = verify.revision(seeded_url, S, "opt1")
        assert broken == [
            f"yearly partitions {S.first_year}–{S.last_year} and a default exist",
            # a partition dropped by hand takes its rows without a trigger: the
            # nearest-features copy still holds them, and verify says so
            f"{S.own_schema}.{S.table}_knn holds as many rows as the table (no write "
            "bypassed the trigger)",
        ]
        assert kept == [
            f"{S.qualified_table} is partitioned by range",
            "GiST index on the geometry of the parent",
            "Q9's (categoria, geometry) GiST index on the parent",
            f"{S.own_schema}.{S.table}_knn: its two GiSTs over every row, kept by a trigger on each "
            "write",
        ]

    def test_a_wide_column_left_uncompressed_breaks_opt2(self, seeded_url):
        migrations.upgrade(seeded_url, "opt2")
        with psycopg.connect(seeded_url) as conn:
            conn.execute(
                f"ALTER TABLE {S.qualified_table} ALTER COLUMN descricao SET COMPRESSION pglz"
            )
        _, broken = verify.revision(seeded_url, S, "opt2")
        assert broken == ["wide columns compressed with lz4"]

    def test_the_search_rpc_planned_once_breaks_opt3(self, seeded_url):
        migrations.upgrade(seeded_url, "opt3")
        with psycopg.connect(seeded_url) as conn:
            conn.execute("ALTER FUNCTION buscar_geometrias RESET plan_cache_mode")
        _, broken = verify.revision(seeded_url, S, "opt3")
        assert broken == ["buscar_geometrias is planned at each call with its arguments"]


class TestFuturePartitions:
    """opt4's promise follows ``years_ahead``: the routine's horizon, not a fixed count."""

    def test_the_promise_names_the_years_of_the_configuration(self):
        for n in (1, 3, 5):
            text = _partition_promise(replace(S, years_ahead=n))
            first, last = S.last_year + 1, _horizon(n)
            years = f"{first}–{last}" if last > first else f"{first}"
            assert text == f"partitions {years} exist (years_ahead = {n})"

    @pytest.mark.slow
    @pytest.mark.parametrize("n", [1, 3, 5])
    def test_kept_exactly_when_the_routine_ran_that_far(self, seeded_url, n):
        migrations.upgrade(seeded_url, "opt4")  # the configured horizon: years_ahead = 3
        wider = replace(S, years_ahead=n)
        text = _partition_promise(wider)
        _, broken = verify.revision(seeded_url, wider, "opt4")
        assert broken == ([text] if n > S.years_ahead else [])
        with psycopg.connect(seeded_url) as conn:
            conn.execute(f"SELECT * FROM {S.own_schema}.{fp.FUNCTION}({n})").fetchall()
        assert verify.revision(seeded_url, wider, "opt4")[1] == []

    @pytest.mark.slow
    def test_a_missing_year_inside_the_horizon_is_named(self, seeded_url):
        migrations.upgrade(seeded_url, "opt4")
        last = _horizon(S.years_ahead)
        with psycopg.connect(seeded_url) as conn:
            conn.execute(f"DROP TABLE {S.own_schema}.{S.table}_p{last}")
        _, broken = verify.revision(seeded_url, S, "opt4")
        assert broken == [
            f"partitions {S.last_year + 1}–{last} exist (years_ahead = {S.years_ahead})"
        ]

    @pytest.mark.slow
    def test_nothing_due_yet_holds(self, seeded_url):
        migrations.upgrade(seeded_url, "opt4")
        none_ahead = replace(S, years_ahead=0, last_year=max(date.today().year, S.last_year))
        text = _partition_promise(none_ahead)
        assert text == f"no partition after {none_ahead.last_year} is due yet (years_ahead = 0)"
        assert verify.revision(seeded_url, none_ahead, "opt4")[1] == []
