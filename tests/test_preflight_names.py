"""Pre-flight refuses, before any bench or change, a name a pending step creates that an
object it would not have made already holds; and a column of the app contract that is
missing or of another type."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.cli import app
from stage4.config import settings
from stage4.plumbing import migrations
from stage4.rollout import preflight

REFUSED = "pre-flight refused (nothing was changed): "


def _upgrade(url: str, tmp: Path, to: str):
    args = ["--database-url", url, "upgrade", "--to", to, "--no-backup",
            "--reports-dir", str(tmp / "reports")]  # fmt: skip
    return CliRunner().invoke(app, args)


def _failed(result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("FAILED: ")]
    return line.removeprefix("FAILED: ")


def _one(url: str, sql: str):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()


def _runs(url: str) -> int:
    b = settings().bench_schema
    if _one(url, f"SELECT to_regclass('{b}.runs')")[0] is None:
        return 0
    return _one(url, f"SELECT count(*) FROM {b}.runs")[0]


@pytest.mark.slow
def test_a_users_table_named_like_a_future_partition_stops_opt4(
    seeded_url: str, tmp_path: Path
) -> None:
    migrations.upgrade(seeded_url, "opt3")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE stage4.geometrias_p2029 (id bigint, secret text)")
        conn.execute("INSERT INTO stage4.geometrias_p2029 VALUES (1, 'mine'), (2, 'also mine')")
        conn.execute(  # rows of 2029 wait in the default partition for opt4 to move them
            "UPDATE public.geometrias SET data_referencia = '2029-03-01' WHERE id <= 43"
        )
    waiting = "SELECT count(*) FROM stage4.geometrias_default WHERE data_referencia >= '2029-01-01'"
    runs, later = _runs(seeded_url), _one(seeded_url, waiting)[0]
    reason = _failed(_upgrade(seeded_url, tmp_path, "opt4"))
    assert reason == REFUSED + (
        "names: stage4.geometrias_p2029 is a table, not the partition of public.geometrias for "
        "2029 that opt4 creates: rename, move or drop it first"
    )
    assert migrations.current(seeded_url) == "opt3"
    assert _runs(seeded_url) == runs, "no bench ran"
    assert not (tmp_path / "reports").exists()
    assert _one(seeded_url, "SELECT count(*), min(secret) FROM stage4.geometrias_p2029") == (
        2,
        "also mine",
    )
    assert later >= 43 and _one(seeded_url, waiting)[0] == later


def test_every_taken_name_of_the_chain_is_named_at_once(seeded_url: str, tmp_path: Path) -> None:
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE stage4.geometrias_p2024 (id bigint)")
        conn.execute("CREATE VIEW stage4.geometrias_default AS SELECT 1 AS um")
        conn.execute("CREATE TABLE stage4.notas (id bigint, area_m2 numeric)")
        conn.execute("CREATE INDEX geometrias_tile_mv_key ON stage4.notas (id)")
        conn.execute("ALTER TABLE public.geometrias ADD COLUMN area_m2 numeric")
    reason = _failed(_upgrade(seeded_url, tmp_path, "opt5"))
    assert reason == REFUSED + (
        "names: stage4.geometrias_p2024 is a table, not the partition of public.geometrias for "
        "2024 that opt1 creates; stage4.geometrias_default is a view, not the partition of "
        "public.geometrias for rows of no yearly partition (default) that opt1 creates; "
        "public.geometrias.area_m2 is a column of public.geometrias (numeric), not the derived "
        "column that opt2 creates; stage4.geometrias_tile_mv_key is an index, not "
        "an index of stage4.geometrias_tile_mv that opt5 creates: rename, move or drop it first"
    )
    assert migrations.current(seeded_url) == "schema"


@pytest.mark.slow
def test_what_an_earlier_step_left_is_its_own(seeded_url: str) -> None:
    """opt4's downgrade keeps its partitions: upgrading again finds them as its own."""
    migrations.upgrade(seeded_url, "opt4")
    migrations.downgrade(seeded_url, "opt3")
    last = max(dt.date.today().year, settings().last_year) + settings().years_ahead
    assert _one(seeded_url, f"SELECT to_regclass('stage4.geometrias_p{last}')")[0] is not None
    with psycopg.connect(seeded_url) as conn:
        found = preflight.run(conn, settings(), steps=["opt4"])
    (names,) = [c for c in found.checks if c.name == "names"]
    assert names.ok, names.detail
    named = 1 + last - settings().last_year  # the routine and its partitions
    assert names.detail == f"none of the {named} names opt4 create is taken"


@pytest.mark.slow
def test_a_partition_with_other_bounds_is_not_the_steps(seeded_url: str) -> None:
    """A partition of the table under that name but with other bounds: refused too."""
    migrations.upgrade(seeded_url, "opt3")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("DELETE FROM public.geometrias WHERE data_referencia >= '2029-01-01'")
        conn.execute("CREATE TABLE stage4.geometrias_p2029 PARTITION OF public.geometrias "
                     "FOR VALUES FROM ('2029-01-01') TO ('2029-07-01')")  # fmt: skip
        found = preflight.run(conn, settings(), steps=["opt4"])
    (names,) = [c for c in found.checks if c.name == "names"]
    assert not names.ok and names.detail.startswith(
        "stage4.geometrias_p2029 is a table, not the partition of public.geometrias for 2029"
    )


@pytest.mark.slow
def test_a_dropped_or_retyped_column_of_the_contract_is_named(
    seeded_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE geometrias DROP COLUMN descricao")
        conn.execute("ALTER TABLE geometrias ALTER COLUMN propriedades TYPE text")
    reason = _failed(_upgrade(seeded_url, tmp_path, "opt1"))
    assert reason == REFUSED + (
        "table contract: column propriedades is text, expected json or jsonb; "
        "column descricao is missing"
    )
    assert migrations.current(seeded_url) == "schema"


@pytest.mark.slow
def test_opt4_promises_partitions_not_relations_of_their_names(seeded_url: str) -> None:
    """Past pre-flight (alembic run by hand): the routine skips a year whose name a table
    of the user's holds, and the promise then says the partitions are not all there."""
    from stage4 import optimisations

    last = max(dt.date.today().year, settings().last_year) + settings().years_ahead
    migrations.upgrade(seeded_url, "opt3")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE stage4.geometrias_p{last} (id bigint)")
    migrations.upgrade(seeded_url, "opt4")
    (promise,) = [p for p in optimisations.promises(settings(), "opt4") if "partitions" in p.text]
    assert _one(seeded_url, promise.sql)[0] is False
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE stage4.geometrias_p{last}")
        conn.execute("SELECT stage4.stage4_ensure_partitions()")
    assert _one(seeded_url, promise.sql)[0] is True


def test_what_a_killed_opt2_left_is_resumed_not_refused(seeded_url: str) -> None:
    """Columns and trigger committed, backfill killed: the names are opt2's own."""
    from stage4.optimisations import gis_columns

    s = settings()
    migrations.upgrade(seeded_url, "opt1")
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        for sql in (gis_columns.add_columns_sql(s), gis_columns.function_sql(s),
                    gis_columns.trigger_sql(s)):  # fmt: skip
            conn.execute(sql)
        found = preflight.run(conn, s, steps=["opt2"])
        (names,) = [c for c in found.checks if c.name == "names"]
        assert names.ok, names.detail
        conn.execute(f"DROP TRIGGER {gis_columns.TRIGGER} ON {s.qualified_table}")
        found = preflight.run(conn, s, steps=["opt2"])
    (names,) = [c for c in found.checks if c.name == "names"]
    assert not names.ok and "public.geometrias.area_m2 is a column" in names.detail


def test_opt3s_index_name_is_refused_unless_its_own_leftover(seeded_url: str) -> None:
    """An index of that name elsewhere is refused; one of the table with opt3's marker (a
    killed build, which the step resumes) is its own."""
    from stage4.optimisations import search_matview

    s = settings()
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.notas (id bigint)")
        conn.execute("CREATE INDEX geometrias_busca_gin ON public.notas (id)")
        found = preflight.run(conn, s, steps=["opt3"])
        (names,) = [c for c in found.checks if c.name == "names"]
        assert names.detail == (
            "public.geometrias_busca_gin is an index, not the search index (GIN) that opt3 "
            "creates: rename, move or drop it first"
        )
        conn.execute(search_matview.index(s).comment_sql())  # the marker, on another table
        found = preflight.run(conn, s, steps=["opt3"])
        (names,) = [c for c in found.checks if c.name == "names"]
        assert not names.ok
        conn.execute("DROP INDEX public.geometrias_busca_gin")
        conn.execute(search_matview.index(s).create_sql())
        conn.execute(search_matview.index(s).comment_sql())
        found = preflight.run(conn, s, steps=["opt3"])
    (names,) = [c for c in found.checks if c.name == "names"]
    assert names.ok, names.detail
