"""opt2: stored area/bbox columns and lz4 storage — round trip, correctness, variants."""

from __future__ import annotations

import psycopg
import pytest

from stage4 import migrations, snapshot
from stage4.config import settings
from stage4.errors import MigrationError
from stage4.optimisations import gis_columns
from stage4.queries import base_sql

S = settings()
VIEWPORTS = [
    (-46.70, -23.60, -46.60, -23.50),
    (-46.645, -23.56, -46.625, -23.54),
    (-47.2, -24.0, -46.2, -23.3),
    (-47.15, -23.95, -47.05, -23.85),
    (-46.80, -23.70, -46.50, -23.40),
]


def _snap(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return snapshot.take(conn)


def _round_trip(url: str) -> None:
    before = _snap(url)
    migrations.upgrade(url, "opt2")
    assert _snap(url) != before
    migrations.downgrade(url, "opt1")
    after = _snap(url)
    assert snapshot.diff(before, after) == []
    assert after == before
    migrations.upgrade(url, "opt2")
    assert migrations.current(url) == "opt2"


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)
    return a == b


def _same(a: list, b: list) -> bool:
    a, b = sorted(a, key=repr), sorted(b, key=repr)
    return len(a) == len(b) and all(
        all(_close(x, y) for x, y in zip(ra, rb, strict=True)) for ra, rb in zip(a, b, strict=True)
    )


class TestRoundTrip:
    def test_partitioned_table(self, seeded_url):
        """After opt1 the table is partitioned: columns and settings cascade to partitions."""
        migrations.upgrade(seeded_url, "opt1")
        _round_trip(seeded_url)
        with psycopg.connect(seeded_url) as conn:
            rows = conn.execute(
                "SELECT c.relname, a.attgenerated, a.attcompression::text FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname LIKE 'geometrias_p20%%' "
                "AND a.attname IN ('area_m2', 'descricao') ORDER BY 1, 2"
            ).fetchall()
        years = S.last_year - S.first_year + 1
        assert sorted({r[1] for r in rows}) == ["", "s"]
        assert len(rows) == 2 * years
        assert {r[2] for r in rows if r[1] == ""} == {"l"}

    def test_restores_non_default_storage(self, seeded_url):
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            conn.execute(
                "ALTER TABLE geometrias ALTER COLUMN descricao SET STORAGE MAIN, "
                "ALTER COLUMN descricao SET COMPRESSION pglz"
            )
        _round_trip(seeded_url)

    def test_refuses_foreign_column(self, seeded_url):
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            conn.execute("ALTER TABLE geometrias ADD COLUMN area_m2 numeric")
        with pytest.raises(MigrationError) as e:
            migrations.upgrade(seeded_url, "opt2")
        assert str(e.value) == (
            "public.geometrias already has column(s) area_m2: rename or drop them before opt2 "
            "(it will not adopt columns it did not create)"
        )
        assert migrations.current(seeded_url) == "opt1"


class TestDerivedColumns:
    def test_insert_and_update(self, seeded_url):
        migrations.upgrade(seeded_url, "opt2")
        with psycopg.connect(seeded_url) as conn:
            new_id = conn.execute(
                "INSERT INTO geometrias (nome, categoria, data_referencia, geom) VALUES "
                "('x', 'lote', '2024-05-01', ST_MakeEnvelope(-46.60, -23.50, -46.59, -23.49, "
                "4326)) RETURNING id"
            ).fetchone()[0]
            check = (
                "SELECT area_m2 = ST_Area(geom::geography), bbox_xmin, bbox_ymin, bbox_xmax, "
                "bbox_ymax, area_m2 FROM geometrias WHERE id = %s"
            )
            ok, *box, area = conn.execute(check, (new_id,)).fetchone()
            assert ok and box == [-46.60, -23.50, -46.59, -23.49]
            conn.execute(
                "UPDATE geometrias SET geom = ST_MakeEnvelope(-46.60, -23.50, -46.58, -23.49, "
                "4326) WHERE id = %s",
                (new_id,),
            )
            ok, *box, area2 = conn.execute(check, (new_id,)).fetchone()
            assert ok and box == [-46.60, -23.50, -46.58, -23.49]
            assert area2 == pytest.approx(2 * area, rel=1e-3)
            wrong = conn.execute(
                "SELECT count(*) FROM geometrias WHERE area_m2 IS DISTINCT FROM "
                "ST_Area(geom::geography) OR bbox_xmin IS DISTINCT FROM ST_XMin(geom::box3d)"
            ).fetchone()[0]
            assert wrong == 0

    def test_wide_columns_lz4(self, seeded_url):
        migrations.upgrade(seeded_url, "opt2")
        with psycopg.connect(seeded_url) as conn:
            rows = conn.execute(
                "SELECT attname, attstorage::text, attcompression::text FROM pg_attribute "
                "WHERE attrelid = 'geometrias'::regclass AND attname IN "
                "('descricao', 'propriedades') ORDER BY 1"
            ).fetchall()
            assert rows == [("descricao", "x", "l"), ("propriedades", "x", "l")]
            conn.execute(
                "INSERT INTO geometrias (nome, categoria, data_referencia, geom, descricao) "
                "VALUES ('y', 'lote', '2024-01-01', ST_Point(-46.6, -23.5, 4326), "
                "repeat('biblioteca ', 2000))"
            )
            method = conn.execute(
                "SELECT pg_column_compression(descricao) FROM geometrias WHERE nome = 'y'"
            ).fetchone()[0]
            assert method == "lz4"


class TestVariants:
    def test_same_results_as_base(self, seeded_url):
        migrations.upgrade(seeded_url, "opt2")
        base, variants = base_sql(S), gis_columns.rewrites(S)
        assert sorted(variants) == ["Q1", "Q3"]
        with psycopg.connect(seeded_url) as conn:
            for q, v in variants.items():
                assert conn.execute(f"SELECT {v.requires}").fetchone()[0] is True
                for x0, y0, x1, y1 in VIEWPORTS:
                    p = {"min_lon": x0, "min_lat": y0, "max_lon": x1, "max_lat": y1}
                    want = conn.execute(base[q], p).fetchall()
                    got = conn.execute(v.sql, p).fetchall()
                    assert want and want[0][0], (q, p)
                    assert _same(want, got), (q, p)

    def test_requires_false_before_opt2(self, seeded_url):
        migrations.upgrade(seeded_url, "opt1")
        with psycopg.connect(seeded_url) as conn:
            for v in gis_columns.rewrites(S).values():
                assert conn.execute(f"SELECT {v.requires}").fetchone()[0] is False


def test_offline_sql():
    sql = migrations.offline_sql("upgrade", "opt1:opt2")
    assert "GENERATED ALWAYS AS (ST_Area(geom::geography)) STORED" in sql
    assert "SET COMPRESSION lz4" in sql
    down = migrations.offline_sql("downgrade", "opt2:opt1")
    assert "SET COMPRESSION lz4" in sql and "pg_partition_tree" in down
    assert "DROP COLUMN IF EXISTS area_m2" in down
