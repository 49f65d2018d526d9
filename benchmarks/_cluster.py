"""A private embedded cluster for the benchmark scripts: STAGE4_HOME under /tmp, seeded once.

Shared by bench_engine.py and noise_check.py so both measure the same kind of database.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def seeded_cluster(features: int, home: str | None = None) -> str:
    """Start (creating if needed) a cluster under /tmp and return the URL of a database
    at revision ``schema`` holding exactly ``features`` seeded rows (re-seeded if not)."""
    os.environ["STAGE4_HOME"] = home or f"/tmp/stage4-bench-{features}"
    from stage4.config import settings
    from stage4.plumbing import migrations
    from stage4.plumbing.cluster import Cluster

    s = settings()
    cluster = Cluster.from_settings(s)
    cluster.ensure_started()
    url = cluster.url()
    if migrations.current(url) is None:
        migrations.upgrade(url, migrations.chain()[0])
    reseed(url, s, features)
    return url


def reseed(url: str, s, features: int) -> float | None:
    """Make the table hold exactly ``features`` seeded rows (dropping stored benchmark runs
    when it had other data); the seconds the seed took, or None when nothing had to change."""
    import time

    from stage4.plumbing import seed
    from stage4.plumbing.db import connect

    with connect(url, autocommit=True) as conn:
        have = conn.execute(f"SELECT count(*) FROM {s.qualified_table}").fetchone()[0]
        if have == features:
            return None
        conn.execute(f"TRUNCATE {s.qualified_table}")
        conn.execute(f"DROP SCHEMA IF EXISTS {s.bench_schema} CASCADE")
    with connect(url) as conn:
        t0 = time.perf_counter()
        seed.seed(conn, s, features=features, seed=42)
        return time.perf_counter() - t0


def stop(home: str | None = None) -> None:
    from stage4.config import settings
    from stage4.plumbing.cluster import Cluster

    if home:
        os.environ["STAGE4_HOME"] = home
    Cluster.from_settings(settings()).stop()
