"""What the gate's visibility check costs: ``visibility.take`` at 20,000 features.

A throwaway cluster (initdb + pg_ctl under /tmp), Supabase's roles and default
privileges and an RLS policy (``tests/fixtures_supabase.py``'s ``SUPABASE``), then
``take`` three times at schema and at opt5, with RLS on and off; the median is printed.

    .venv/bin/python benchmarks/visibility_cost.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures_supabase import SUPABASE
from stage4.catalog import visibility
from stage4.config import settings
from stage4.plumbing import migrations, seed
from stage4.plumbing.cluster import Cluster

FEATURES = 20_000


def timed(url: str, label: str) -> None:
    s = settings()
    with psycopg.connect(url, autocommit=True) as conn:
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            reach = visibility.take(conn, s)
            runs.append(time.perf_counter() - t)
    rels = len({rel for _, rel in reach.reads})
    print(f"{label}: take() median {sorted(runs)[1]:.3f} s of 3 ({min(runs):.3f}-{max(runs):.3f}), "
          f"roles {', '.join(reach.roles)}, {len(reach.reads)} readable (role, relation) pairs "
          f"over {rels} relations")  # fmt: skip


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="stage4-vis-"))
    home.chmod(0o755)
    cluster = Cluster(home=home / "cluster", database="vis", cron_database="vis_cron")
    cluster.ensure_started()
    first, last = migrations.chain()[0], migrations.chain()[-1]
    try:
        url = cluster.url()
        migrations.upgrade(url, first)
        with psycopg.connect(url) as conn:
            seed.seed(conn, settings(), features=FEATURES, seed=42)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SUPABASE)
        timed(url, f"{first}, RLS on")
        migrations.upgrade(url, last)
        timed(url, f"{last}, RLS on")
        migrations.downgrade(url, first)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE public.geometrias DISABLE ROW LEVEL SECURITY")
        timed(url, f"{first}, RLS off")
        migrations.upgrade(url, last)
        timed(url, f"{last}, RLS off")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
