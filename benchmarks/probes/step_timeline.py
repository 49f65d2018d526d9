"""Where one light step's time goes, statement by statement, from the server's own log.

Turns on ``log_min_duration_statement = 0`` with millisecond timestamps (ALTER SYSTEM,
reset at the end), runs a revision's downgrade and upgrade (the one named, else the cluster's own)
three times in one ``migrations.session``, and prints the last downgrade's statements:
when each was logged (ms after the first, the pool's ping; to the log's 1 ms resolution)
and how long the server spent on it. The step's wall time minus the server's durations
is the client's: Alembic, SQLAlchemy, psycopg and the round trips. Needs an embedded
cluster at that revision (any size; it is left there):

    STAGE4_HOME=/tmp/ovh .venv/bin/python -m benchmarks.probes.step_timeline [opt2]
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import time

LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \S+ \[\d+\] LOG:  duration: ([\d.]+) ms  (.*)$"
)
SETTINGS = {"log_min_duration_statement": "0", "log_line_prefix": "'%m [%p] '"}


def main() -> None:
    from stage4.config import settings
    from stage4.plumbing import migrations
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    cluster = Cluster.from_settings(settings())
    url = cluster.url()
    rev = sys.argv[1] if len(sys.argv) > 1 else migrations.current(url)
    if migrations.current(url) != rev:
        raise SystemExit(f"bring the cluster to {rev} first (stage4 upgrade/downgrade --to {rev})")

    def configure(values: dict[str, str] | None) -> None:
        with connect(url, autocommit=True) as conn:
            for name in SETTINGS:
                conn.execute(f"ALTER SYSTEM SET {name} = {values[name]}" if values
                             else f"ALTER SYSTEM RESET {name}")  # fmt: skip
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)  # the postmaster signals the backends; give them time to re-read

    configure(SETTINGS)
    try:
        with migrations.session(url):
            for _ in range(3):
                offset = cluster.log.stat().st_size
                t0 = time.perf_counter()
                migrations.downgrade(url, migrations.previous(rev))
                wall = (time.perf_counter() - t0) * 1000
                end = cluster.log.stat().st_size
                migrations.upgrade(url, rev)
    finally:
        configure(None)
    with cluster.log.open("rb") as f:
        f.seek(offset)
        text = f.read(end - offset).decode(errors="replace")
    server, first = 0.0, None
    print(
        f"{rev}'s downgrade in a session: {wall:.2f} ms wall; statements as the server logged them"
    )
    print("  at ms  server ms  statement")
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        at = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f")
        first = first or at
        server += float(m[2])
        print(f"{(at - first).total_seconds() * 1000:7.0f}  {float(m[2]):9.3f}  {m[3][:90]}")
    print(f"server total {server:.2f} ms of {wall:.2f} ms; the rest is the client's")


if __name__ == "__main__":
    main()
