"""snapshot: "is the database exactly as it was?", on a real database.

Every kind of state a rollback must restore (rows, grants, comments, storage, policies,
publications, triggers, functions, cron jobs) shows up in a diff that names it; what is
not the app's state (the benchmarking schema, Alembic's version table, extension
members) and what a rollback legitimately changes (OIDs) does not.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from stage4.catalog import snapshot
from stage4.config import settings

S = settings()
T = S.qualified_table


def _take(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return snapshot.take(conn, S.bench_schema)


def _after(url: str, *statements: str) -> tuple[dict, dict]:
    """Snapshots before and after ``statements`` (committed)."""
    before = _take(url)
    with psycopg.connect(url) as conn:
        for sql in statements:
            conn.execute(sql)
    return before, _take(url)


class TestUnchanged:
    def test_two_snapshots_of_an_unchanged_database_are_equal(self, seeded_url):
        before, after = _take(seeded_url), _take(seeded_url)
        assert after == before
        assert snapshot.diff(before, after) == []

    def test_it_is_plain_data_that_survives_json(self, seeded_url):
        snap = _take(seeded_url)
        assert json.loads(json.dumps(snap)) == snap

    def test_an_object_dropped_and_recreated_alike_compares_equal(self, seeded_url):
        with psycopg.connect(seeded_url) as conn:
            conn.execute(f"CREATE INDEX nome_idx ON {T} (nome)")
        before, after = _after(
            seeded_url, "DROP INDEX public.nome_idx", f"CREATE INDEX nome_idx ON {T} (nome)"
        )
        assert after == before  # a new OID, the same index

    def test_row_order_on_disk_does_not_matter(self, seeded_url):
        before, after = _after(seeded_url, f"CLUSTER {T} USING {S.table}_pkey")
        assert snapshot.diff(before, after) == []


class TestWhatItSees:
    @pytest.mark.parametrize(
        ("sections", "statements"),
        [
            ({"relations"}, [f"GRANT SELECT ON {T} TO pg_monitor"]),
            ({"relations"}, [f"ALTER TABLE {T} ENABLE ROW LEVEL SECURITY"]),
            ({"relations"}, [f"ALTER TABLE {T} SET (fillfactor = 80)"]),
            ({"relations"}, [f"COMMENT ON TABLE {T} IS 'features'"]),
            ({"columns"}, [f"COMMENT ON COLUMN {T}.nome IS 'name'"]),
            ({"columns"}, [f"GRANT UPDATE (nome) ON {T} TO pg_monitor"]),
            ({"columns"}, [f"ALTER TABLE {T} ALTER COLUMN descricao SET COMPRESSION lz4"]),
            ({"columns"}, [f"ALTER TABLE {T} ALTER COLUMN descricao SET STORAGE EXTERNAL"]),
            ({"indexes"}, [f"CREATE INDEX nome_idx ON {T} (nome)"]),
            ({"constraints"}, [f"ALTER TABLE {T} ADD CONSTRAINT id_positive CHECK (id > 0)"]),
            ({"policies"}, [f"CREATE POLICY everyone ON {T} FOR SELECT USING (true)"]),
            (
                {"functions"},
                ["CREATE FUNCTION public.snap_f() RETURNS int LANGUAGE sql AS 'SELECT 1'"],
            ),
            (
                {"functions"},
                [f"GRANT EXECUTE ON FUNCTION {S.schema}.buscar_geometrias TO pg_monitor"],
            ),
            (
                {"relations", "columns", "views"},
                [f"CREATE VIEW public.snap_v AS SELECT id FROM {T}"],
            ),
            (
                {"functions", "triggers"},
                [
                    "CREATE FUNCTION public.snap_t() RETURNS trigger LANGUAGE plpgsql "
                    "AS 'BEGIN RETURN NEW; END'",
                    f"CREATE TRIGGER snap_t BEFORE UPDATE ON {T} FOR EACH ROW "
                    "EXECUTE FUNCTION public.snap_t()",
                ],
            ),
            ({"relations", "sequences"}, ["CREATE SEQUENCE public.snap_seq"]),
            ({"publications"}, [f"CREATE PUBLICATION snap_pub FOR TABLE {T}"]),
            ({"schemas"}, ["CREATE SCHEMA snap_app"]),
        ],
    )
    def test_a_catalog_change_is_named_by_its_section(self, seeded_url, sections, statements):
        before, after = _after(seeded_url, *statements)
        lines = snapshot.diff(before, after)
        assert {line.split(": ", 1)[0] for line in lines} == sections, lines
        assert after["data"] == before["data"]

    def test_a_changed_row_changes_the_table_hash_not_its_count(self, seeded_url):
        before, after = _after(seeded_url, f"UPDATE {T} SET nome = nome || '!' WHERE id = 1")
        b, a = before["data"][T], after["data"][T]
        assert a[0] == b[0] and a[1] != b[1]
        assert snapshot.diff(before, after) == [f"data.{T}: {b} -> {a}"]

    def test_a_deleted_row_changes_the_count(self, seeded_url):
        before, after = _after(seeded_url, f"DELETE FROM {T} WHERE id = 1")
        assert after["data"][T][0] == before["data"][T][0] - 1

    def test_a_new_table_appears_in_the_data(self, seeded_url):
        before, after = _after(seeded_url, "CREATE TABLE public.snap_new (a int)")
        assert "public.snap_new" not in before["data"]
        assert after["data"]["public.snap_new"] == [0, ""]
        assert "data.public.snap_new: None -> [0, '']" in snapshot.diff(before, after)

    def test_a_partitioned_table_is_hashed_once_through_its_parent(self, seeded_url):
        _, after = _after(
            seeded_url,
            "CREATE TABLE public.snap_parts (a int) PARTITION BY RANGE (a)",
            "CREATE TABLE public.snap_parts_1 PARTITION OF public.snap_parts FOR VALUES FROM (0) TO (10)",
            "CREATE TABLE public.snap_parts_2 PARTITION OF public.snap_parts FOR VALUES FROM (10) TO (20)",
            "INSERT INTO public.snap_parts SELECT generate_series(0, 19)",
        )
        assert after["data"]["public.snap_parts"][0] == 20
        assert not any(name.startswith("public.snap_parts_") for name in after["data"])

    def test_a_cron_job_is_seen(self, cron_url):
        before, after = _after(
            cron_url, "SELECT cron.schedule('snap_job', '0 4 * * *', 'SELECT 1')"
        )
        lines = snapshot.diff(before, after)
        assert len(lines) == 1 and lines[0].startswith("cron_jobs: + ['snap_job', '0 4 * * *'")


class TestWhatItLeavesOut:
    def test_the_benchmarking_schema_and_the_version_table(self, seeded_url):
        before, after = _after(
            seeded_url,
            f"CREATE SCHEMA IF NOT EXISTS {S.bench_schema}",
            f"CREATE TABLE {S.bench_schema}.runs (a int)",
            f"INSERT INTO {S.bench_schema}.runs VALUES (1)",
            "UPDATE stage4.alembic_version SET version_num = 'opt9'",
        )
        assert after == before

    def test_extension_members(self, seeded_url):
        before, after = _after(seeded_url, "CREATE EXTENSION IF NOT EXISTS btree_gist")
        assert snapshot.diff(before, after) == []


class TestDiff:
    def test_a_gone_row_and_a_new_row(self, seeded_url):
        with psycopg.connect(seeded_url) as conn:
            conn.execute(f"CREATE INDEX old_idx ON {T} (nome)")
        before, after = _after(
            seeded_url, "DROP INDEX public.old_idx", f"CREATE INDEX new_idx ON {T} (nome)"
        )
        assert snapshot.diff(before, after) == [
            f"indexes: - ['public', '{S.table}', 'CREATE INDEX old_idx ON {T} USING btree (nome)', '']",
            f"indexes: + ['public', '{S.table}', 'CREATE INDEX new_idx ON {T} USING btree (nome)', '']",
        ]

    def test_long_diffs_are_cut_at_the_limit_and_say_how_many_more(self, seeded_url):
        before, after = _after(
            seeded_url, *(f"CREATE INDEX many_{i} ON {T} (nome)" for i in range(25))
        )
        lines = snapshot.diff(before, after)
        assert len(lines) == 21
        assert lines[-1] == "… and 5 more"
        assert len(snapshot.diff(before, after, limit=30)) == 25
