"""``stage4 workload capture``: pg_stat_statements' heaviest reads become workload files
that the loader refuses until every parameter is given, and then measures like any other."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from stage4.cli import app
from stage4.measure.workload import load_dir, parse_file

runner = CliRunner()

APP_READ = "SELECT id, nome FROM geometrias WHERE id = %s AND categoria <> %s"


def _with_statements(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        libs = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        if "pg_stat_statements" not in libs:
            pytest.fail("pg_stat_statements is not preloaded in the test server: add it to "
                        "shared_preload_libraries", pytrace=False)  # fmt: skip
        conn.execute("CREATE EXTENSION pg_stat_statements")
        for i in range(1, 31):  # the app's read, heavier in total than anything else here
            conn.execute(APP_READ, (i, "escola"))
        conn.execute("SELECT count(*) FROM pg_class")  # the catalog's: never captured
        conn.execute("UPDATE geometrias SET nome = nome WHERE id = 1")  # a write: never captured


@pytest.mark.slow
def test_the_heaviest_read_is_written_with_its_parameters_to_complete(
    seeded_url: str, tmp_path: Path
) -> None:
    _with_statements(seeded_url)
    out = tmp_path / "workload"
    res = runner.invoke(
        app, ["--database-url", seeded_url, "workload", "capture", "--top", "5", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    files = sorted(out.glob("captured_*.sql"))
    texts = [f.read_text() for f in files]
    mine = [t for t in texts if "FROM geometrias WHERE id = :p1 AND categoria <> :p2" in t]
    assert len(mine) == 1, texts
    assert "30 calls" in mine[0] and "\\set p1 TODO" in mine[0] and "\\set p2 TODO" in mine[0]
    assert not any("pg_class" in t or "UPDATE" in t for t in texts)
    assert f"wrote {files[0]}" in res.output

    # Not measured until completed: the loader names the file, the line and the parameter.
    path = next(f for f, t in zip(files, texts, strict=True) if t in mine)
    with pytest.raises(Exception, match=rf"{path.name}:\d+: give :p1 a value"):
        parse_file(path)
    done = mine[0].replace("\\set p1 TODO", "\\set p1 random(1, 100)")
    path.write_text(done.replace("<> :p2", "<> 'escola'").replace("\\set p2 TODO\n", ""))
    for other in files:
        if other != path:
            other.unlink()
    (q,) = load_dir(out).values()
    assert q.qid == path.stem and "%(p1)s" in q.sql

    # A second capture into the same folder never overwrites what the user completed.
    again = runner.invoke(
        app, ["--database-url", seeded_url, "workload", "capture", "--out", str(out)]
    )
    assert again.exit_code != 0 and "already holds captured_" in again.output
    assert path.read_text().startswith("-- captured from pg_stat_statements")
    assert "random(1, 100)" in path.read_text()


def test_without_the_extension_one_line_says_how_to_get_it(seeded_url: str, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["--database-url", seeded_url, "workload", "capture", "--out", str(tmp_path)]
    )
    assert res.exit_code != 0
    # the test server preloads it: only the extension is missing
    assert "pg_stat_statements is not installed in this database: run CREATE EXTENSION" in (
        res.output
    )
    assert "Traceback" not in res.output
    assert not list(tmp_path.glob("*.sql"))


@pytest.mark.slow
def test_the_same_sql_under_two_roles_is_written_once(seeded_url: str, tmp_path: Path) -> None:
    """pg_stat_statements keeps one entry per role: the capture writes one file, calls summed."""
    _with_statements(seeded_url)
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS stage4_reader")
        conn.execute("CREATE ROLE stage4_reader")
        conn.execute("GRANT SELECT ON geometrias TO stage4_reader")
        conn.execute("SET ROLE stage4_reader")
        for i in range(1, 11):  # the same text, another entry
            conn.execute(APP_READ.replace("WHERE", " WHERE"), (i, "escola"))
        conn.execute("RESET ROLE")
        for _ in range(50):  # a write behind WITH: never captured, however heavy
            conn.execute("WITH n AS (UPDATE geometrias SET nome = nome WHERE id < 50 RETURNING id) "
                         "SELECT count(*) FROM n")  # fmt: skip
    out = tmp_path / "workload"
    res = runner.invoke(
        app, ["--database-url", seeded_url, "workload", "capture", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    texts = [f.read_text() for f in sorted(out.glob("captured_*.sql"))]
    mine = [t for t in texts if "FROM geometrias" in t and "id = :p1" in t]
    assert len(mine) == 1, texts
    assert "40 calls" in mine[0]
    assert not any("UPDATE" in t for t in texts)
