"""Concurrent writers during opt1, up and down: every committed write survives, nothing else
changes. The harness is the benchmark's (benchmarks/writers_during_opt1.py), at ~5k rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import psycopg
import pytest

from stage4 import migrations, seed
from stage4.config import settings

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "writers_during_opt1.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("writers_during_opt1", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def five_k_url(seeded_url: str) -> str:
    with psycopg.connect(seeded_url) as conn:
        seed.seed(conn, settings(), features=3000, append=True)
    return seeded_url


def test_committed_writes_survive_opt1_round_trip(harness, five_k_url: str) -> None:
    for verb, target in [("upgrade", "opt1"), ("downgrade", "schema")]:
        r = harness.step(five_k_url, verb, target, batch_rows=500, max_ops=3000)
        assert r["problems"] == [], r
        assert r["writer_errors"] == [] and r["reader_errors"] == [], r
        assert r["writes_during_migration"] > 0, r
        assert r["reads_during_migration"] > 0, r
        assert r["exact"]
        assert migrations.current(five_k_url) == target


def test_the_check_catches_a_lost_and_a_stray_write(harness) -> None:
    """The comparison itself: a missing committed row, an unlogged row, a stale row."""
    op = harness.Op
    before = {1: "a", 2: "b", 3: "c"}
    ops = [op("insert", 4, {}, "d", 0, 0), op("update", 2, {}, "b2", 0, 0),
           op("delete", 3, {}, None, 0, 0)]  # fmt: skip
    assert harness.problems(before, ops, {1: "a", 2: "b2", 4: "d"}) == []
    assert harness.problems(before, ops, {1: "a", 2: "b", 5: "e"}) == [
        "id 4: committed but missing",
        "id 5: present but never written",
        "id 2: row differs from the last committed write",
    ]
