"""The synthetic BIBLIOTECA data: deterministic, realistic, and never written over real rows."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.cli import app
from stage4.config import settings
from stage4.errors import Stage4Error
from stage4.plumbing import migrations, seed

S = settings()


@pytest.fixture
def empty_url(db_url: str) -> str:
    migrations.upgrade(db_url, "schema")
    return db_url


def _seed(url: str, n: int, s: int = 42, append: bool = False) -> str:
    with psycopg.connect(url) as conn:
        seed.seed(conn, S, features=n, seed=s, append=append)
        conn.commit()
        return seed.content_hash(conn, S)


def test_same_seed_same_content_other_seed_other_content(server, empty_url: str) -> None:
    first = _seed(empty_url, 1500)
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {S.qualified_table}")
    assert _seed(empty_url, 1500) == first
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {S.qualified_table}")
    assert _seed(empty_url, 1500, s=43) != first


def test_batches_and_append_give_the_same_rows_as_one_go(empty_url: str, db_url: str) -> None:
    whole = _seed(empty_url, 1200)
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {S.qualified_table}")
    _seed(empty_url, 500)
    assert _seed(empty_url, 700, append=True) == whole


def test_the_data_looks_like_the_real_thing(seeded_url: str) -> None:
    with psycopg.connect(seeded_url) as conn:
        cats, types, srids, invalid, early, late, years, words = conn.execute(
            f"SELECT count(DISTINCT categoria), array_agg(DISTINCT GeometryType(geom)), "
            f"array_agg(DISTINCT ST_SRID(geom)), count(*) FILTER (WHERE NOT ST_IsValid(geom)), "
            f"count(*) FILTER (WHERE data_referencia < '2020-01-01'), "
            f"count(*) FILTER (WHERE data_referencia >= '2029-01-01'), "
            f"count(DISTINCT extract(year FROM data_referencia)) FILTER "
            f"(WHERE data_referencia BETWEEN '2020-01-01' AND '2028-12-31'), "
            f"count(*) FILTER (WHERE to_tsvector('portuguese', nome || ' ' || coalesce(descricao, '')) "
            f"@@ plainto_tsquery('portuguese', 'biblioteca')) FROM {S.qualified_table}"
        ).fetchone()
        lon_min, lon_max, lat_min, lat_max = conn.execute(
            f"SELECT min(ST_X(ST_Centroid(geom))), max(ST_X(ST_Centroid(geom))), "
            f"min(ST_Y(ST_Centroid(geom))), max(ST_Y(ST_Centroid(geom))) FROM {S.qualified_table}"
        ).fetchone()
    assert cats >= 8
    assert set(types) == {"POINT", "LINESTRING", "POLYGON"}
    assert srids == [4326] and invalid == 0
    assert early > 0 and late > 0 and years == 9  # 2020–2028 all present, a few outside
    assert words > 0  # Portuguese words that the search can find
    assert -47.3 < lon_min < lon_max < -46.1 and -24.1 < lat_min < lat_max < -23.2  # São Paulo


def test_refuses_a_table_with_rows(seeded_url: str) -> None:
    with psycopg.connect(seeded_url) as conn, pytest.raises(Stage4Error) as e:
        seed.seed(conn, S, features=10)
    assert str(e.value) == "public.geometrias already holds 2000 rows; pass --append to add more"


def test_refuses_a_missing_table(db_url: str) -> None:
    with psycopg.connect(db_url) as conn, pytest.raises(Stage4Error) as e:
        seed.seed(conn, S, features=10)
    assert str(e.value) == (
        "public.geometrias does not exist: run `stage4 upgrade --to schema` "
        "(or `alembic upgrade schema`) first"
    )


def test_cli_seed_if_empty_is_rerunnable(empty_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(
        app, ["--database-url", empty_url, "seed", "--features", "300", "--if-empty"]
    )
    assert first.exit_code == 0, first.output
    assert "seeded 300 features" in first.stdout
    again = runner.invoke(
        app, ["--database-url", empty_url, "seed", "--features", "300", "--if-empty"]
    )
    assert again.exit_code == 0
    assert "already holds 300 rows: not seeding" in again.stdout
    refused = runner.invoke(app, ["--database-url", empty_url, "seed", "--features", "300"])
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        "FAILED: public.geometrias already holds 300 rows; pass --append to add more"
    )
