"""The embedded cluster: created, started, stopped and restarted with its data kept."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stage4.cluster import Cluster


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder the `postgres` user can enter (pytest's own is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="stage4-cluster-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_lifecycle_keeps_data_across_restart(tmp_path: Path) -> None:
    c = Cluster(home=tmp_path / "emb", database="lifecycle")
    assert c.status()["initialized"] is False
    c.ensure_started()
    try:
        assert c.running()
        with psycopg.connect(c.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (7)")
            libs = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            postgis = conn.execute(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'"
            ).fetchone()[0]
        assert "pg_cron" in libs
        assert postgis == 1
        c.stop()
        assert not c.running()
        assert c.status()["running"] is False
        c.ensure_started()  # idempotent start, same port, same data
        with psycopg.connect(c.url()) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone()[0] == 7
    finally:
        c.destroy()
    assert not (tmp_path / "emb").exists()


def test_url_names_loopback_and_database(tmp_path: Path) -> None:
    c = Cluster(home=tmp_path / "emb2", database="named")
    c.init()
    assert c.url().startswith("postgresql://postgres@127.0.0.1:")
    assert c.url().endswith("/named")
