"""One way for the benchmark scripts to time a statement: the median of n executions."""

from __future__ import annotations

import statistics
import time


def median_ms(conn, sql: str, params=None, n: int = 50, warm_up: bool = False) -> float:
    """Median ms of executing ``sql`` and fetching its rows ``n`` times on ``conn``
    (after one untimed execution with ``warm_up``)."""
    if warm_up:
        conn.execute(sql, params).fetchall()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute(sql, params).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)
