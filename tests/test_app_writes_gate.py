"""A gated `upgrade --to opt1` judged on what the app does, not on stage4's own work.

- The app inserting rows (some the RLS policy shows anon, some not) all through the
  rollout breaks no visibility promise: what a role may see is judged by its rule over
  one snapshot, not by counting its rows before and after the step.
- With no app running, every count of app writes the rollout records is 0: opt1's copy
  (20,000 inserts of its own) is never counted as the app's.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import ANY_SPEED
from fixtures_supabase import POLICY
from stage4.config import settings
from stage4.plumbing import migrations
from stage4.rollout import gate

S = settings()
FAST = ANY_SPEED


class Inserter(threading.Thread):
    """The app: one INSERT every ``pace`` seconds until stopped, alternating a category the
    policy shows anon and one it hides."""

    def __init__(self, url: str, pace: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url, self.pace = url, pace
        self.at: list[float] = []  # when each insert committed
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="app-writer") as conn:
            while not self.stop.is_set():
                categoria = ("escola", "parque")[len(self.at) % 2]
                try:
                    conn.execute(
                        f"INSERT INTO {S.qualified_table} (nome, categoria, {S.time_column}, "
                        "geom) VALUES ('app', %s, '2025-05-01', ST_Point(-46.6, -23.5, 4326))",
                        (categoria,),
                    )
                    self.at.append(time.monotonic())
                except psycopg.Error as e:
                    self.errors.append(str(e).strip())
                time.sleep(self.pace)


def _opts(tmp_path: Path) -> gate.GateOptions:
    return gate.GateOptions(reports_dir=tmp_path, **FAST)


@pytest.mark.slow
def test_app_inserts_under_rls_during_a_gated_opt1_break_no_promise(
    supabase_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        anon_before = conn.execute(
            f"SELECT count(*) FROM {S.qualified_table} WHERE {POLICY['anon']}"
        ).fetchone()[0]
    app = Inserter(supabase_url)
    app.start()
    try:
        rollout = gate.upgrade(supabase_url, "opt1", _opts(tmp_path))
    finally:
        app.stop.set()
        app.join(30)
    step = rollout.steps[-1]
    broken = [r for r in step.reasons if r.startswith("promise broken")]
    assert broken == [], step.reasons
    assert rollout.outcome == "GO: at opt1", (rollout.outcome, step.reasons)
    assert any(v.startswith("who can see what: anon, authenticated") for v in step.verified)
    assert app.errors == []
    assert len(app.at) >= 60, len(app.at)
    with psycopg.connect(supabase_url) as conn:
        anon_after = conn.execute(
            f"SELECT count(*) FROM {S.qualified_table} WHERE {POLICY['anon']}"
        ).fetchone()[0]
    assert anon_after > anon_before  # anon sees more rows than before: the app's, by rule
    assert migrations.current(supabase_url) == "opt1"


@pytest.mark.slow
def test_a_quiet_gated_opt1_counts_no_app_write(seeded_url: str, tmp_path: Path) -> None:
    rollout = gate.upgrade(seeded_url, "opt1", _opts(tmp_path))
    step = rollout.steps[-1]
    assert step.revision == "opt1" and step.rows_checked is not None
    assert step.app_writes == 0
    assert step.run.environment["load"]["app_writes"] == 0
    assert not [r for r in step.reasons if r.startswith("load:")], step.reasons
    with psycopg.connect(seeded_url) as conn:
        loads = conn.execute(
            f"SELECT label, environment -> 'load' ->> 'app_writes' FROM {S.bench_schema}.runs "
            "ORDER BY run_id"
        ).fetchall()
    assert [n for _, n in loads] == ["0"] * len(loads), loads
    assert {label for label, _ in loads} >= {"BASELINE", "OPT1"}, loads


@pytest.mark.slow
@pytest.mark.parametrize("rev", ["opt2"])
def test_a_quiet_gated_backfill_counts_no_app_write(
    seeded_url: str, tmp_path: Path, rev: str
) -> None:
    """opt2 updates every row (its backfill): stage4's writes, not the app's."""
    migrations.upgrade(seeded_url, migrations.previous(rev))
    rollout = gate.upgrade(seeded_url, rev, _opts(tmp_path))
    step = rollout.steps[-1]
    assert step.revision == rev
    assert step.app_writes == 0, step.notes
    assert step.run.environment["load"]["app_writes"] == 0
