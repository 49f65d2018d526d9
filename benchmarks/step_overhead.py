"""The fixed cost of one light migration step, with and without ``migrations.session``.

Times opt4's downgrade (one DROP FUNCTION and a pg_cron unschedule) seven times, each
followed by its upgrade, first as separate commands (a new engine each time), then in one
session; prints the medians in ms. Needs an embedded cluster at opt4 or opt5 (any size;
it is left at opt4):

    STAGE4_HOME=/tmp/ovh PYTHONPATH=src .venv/bin/python benchmarks/step_overhead.py

``--profile``: instead, profile 30 in-session downgrades with cProfile and print where
their time goes (the functions with the most time of their own, then by package).
"""

from __future__ import annotations

import statistics
import sys
import time


def main() -> None:
    from stage4 import migrations
    from stage4.cluster import Cluster
    from stage4.config import settings

    url = Cluster.from_settings(settings()).url()
    if migrations.current(url) not in {"opt4", "opt5"}:
        raise SystemExit("bring the cluster to opt4 first: stage4 upgrade --to opt4 --no-gate")
    migrations.downgrade(url, "opt3")  # the imports and first connection, not timed
    migrations.upgrade(url, "opt4")

    def median_ms() -> float:
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            migrations.downgrade(url, "opt3")
            times.append((time.perf_counter() - t0) * 1000)
            migrations.upgrade(url, "opt4")
        return statistics.median(times)

    if "--profile" in sys.argv:
        with migrations.session(url):
            _profile(
                lambda: migrations.downgrade(url, "opt3"), lambda: migrations.upgrade(url, "opt4")
            )
        return
    alone = median_ms()
    with migrations.session(url):
        shared = median_ms()
    print(f"opt4 downgrade: {alone:.1f} ms as separate commands, {shared:.1f} ms in one session")


def _profile(step, undo, n: int = 30) -> None:
    """Profile ``step`` only (``undo`` runs outside the profiler), n times."""
    import cProfile
    import pstats
    from collections import defaultdict

    step(), undo()  # warm: imports, first connection
    prof = cProfile.Profile()
    wall = 0.0
    for _ in range(n):
        t0 = time.perf_counter()
        prof.enable()
        step()
        prof.disable()
        wall += time.perf_counter() - t0
        undo()
    stats = pstats.Stats(prof)
    print(f"{n} downgrades, {wall / n * 1000:.2f} ms each under the profiler")
    stats.sort_stats("tottime").print_stats(20)
    by_package: dict[str, float] = defaultdict(float)
    for (path, _line, _name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = next((k for k in ("sqlalchemy", "alembic", "psycopg", "stage4", "mako", "importlib")
                    if f"/{k}/" in path), "other" if path != "~" else "builtins/C")  # fmt: skip
        by_package[key] += tt
    for key, tt in sorted(by_package.items(), key=lambda kv: -kv[1]):
        print(f"{key:12s} {tt / n * 1000:6.2f} ms per downgrade (own time)")


if __name__ == "__main__":
    main()
