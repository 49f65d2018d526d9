"""Where the throughput phase's time goes: the bench's own pgbench scripts (one per query and
parameter set, literals inlined, picked at random), run on an existing embedded cluster,
with pgbench's per-script report summed per query.

QPS counts transactions, so the queries that take longest decide it: this prints, per
query, its transactions, its mean latency under the concurrent load and its share of the
clients' time. Run it on the two clusters of a same-window A/B to see why QPS moved less
(or more) than the latencies of the bench's serial phase.

    STAGE4_HOME=/tmp/scale-1m .venv/bin/python -m benchmarks.probes.throughput_split [--seconds 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

_SCRIPT = re.compile(
    r"SQL script (\d+): .*?\n - weight: \d+ \([^)]*\)\n - (\d+) transactions .*?\n"
    r" - latency average = ([\d.]+) ms",
    re.S,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workload", default="benchmarks/workload")
    args = ap.parse_args()
    from stage4.config import settings
    from stage4.measure import bench, throughput, workload
    from stage4.plumbing import migrations
    from stage4.plumbing.cluster import Cluster
    from stage4.plumbing.db import connect

    s = settings()
    url = Cluster.from_settings(s).url()
    catalogue = bench._catalogue(s, args.workload or None)
    with connect(url, autocommit=True, prepare_threshold=None) as conn:
        catalogue = workload.as_sent(conn, s, catalogue)
        draw = bench._draw(conn, s, catalogue, bench.SETS, 42)
        scripts = bench._throughput_scripts(conn, draw, 42)
    per = max(1, min(bench.THROUGHPUT_SETS, bench.PGBENCH_SCRIPTS // len(draw.catalogue)))
    owner = [q for q in draw.catalogue for _ in range(per)]
    with tempfile.TemporaryDirectory(prefix="stage4-split-") as tmp:
        cmd = [throughput.pgbench_path(), "-n", "-r", "-c", str(args.clients), "-j", "2",
               "-T", str(args.seconds), "--random-seed=42"]  # fmt: skip
        for i, sql in enumerate(scripts):
            path = Path(tmp) / f"s{i:03d}.sql"
            path.write_text(sql.rstrip().rstrip(";") + ";\n")
            cmd += ["-f", str(path)]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    tps = re.search(r"tps = ([\d.]+)", out).group(1)
    per_query: dict[str, list[float]] = {}
    for idx, n, lat in _SCRIPT.findall(out):
        q = owner[int(idx) - 1]
        per_query.setdefault(q, [0.0, 0.0])
        per_query[q][0] += int(n)
        per_query[q][1] += int(n) * float(lat)
    total = sum(v[1] for v in per_query.values()) or 1.0
    print(f"revision {migrations.current(url)}: {tps} tps, {args.clients} clients, "
          f"{args.seconds} s; per query: transactions, mean ms, share of the time")  # fmt: skip
    for q, (n, ms) in sorted(per_query.items(), key=lambda kv: -kv[1][1]):
        print(f"  {q:12s} {int(n):6d} {ms / n if n else 0:9.2f} {100 * ms / total:6.1f} %")


if __name__ == "__main__":
    main()
