"""The fixed cost of one light migration step, with and without ``migrations.session``.

Times opt4's downgrade (one DROP FUNCTION and a pg_cron unschedule) seven times, each
followed by its upgrade, first as separate commands (a new engine each time), then in one
session; prints the medians in ms. Needs an embedded cluster at opt4 or opt5 (any size;
it is left at opt4):

    STAGE4_HOME=/tmp/ovh PYTHONPATH=src .venv/bin/python benchmarks/step_overhead.py
"""

from __future__ import annotations

import statistics
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

    alone = median_ms()
    with migrations.session(url):
        shared = median_ms()
    print(f"opt4 downgrade: {alone:.1f} ms as separate commands, {shared:.1f} ms in one session")


if __name__ == "__main__":
    main()
