"""The benchmark's throughput phase: ``concurrency`` clients for ``duration`` seconds.

pgbench runs one script file per (query, parameter set) with the literals inlined
(pgbench variables cannot carry a bbox or a date), picked at random with a fixed
``--random-seed``; QPS = pgbench's tps since every script is one query. Without a
pgbench binary the same scripts run on Python threads (the run records which). Either
way every session is read-only: a script that writes fails.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from stage4.config import split_password
from stage4.errors import Stage4Error
from stage4.measure.workload import READ_ONLY, READ_ONLY_OPTION
from stage4.plumbing.db import connect, where
from stage4.plumbing.interrupts import die_with_parent


def pgbench_path() -> str | None:
    """pgbench on PATH, else the newest one under /usr/lib/postgresql."""
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    return str(candidates[-1]) if candidates else None


def measure(url, scripts, concurrency, duration, seed, tick) -> tuple[float, str]:
    """(QPS, the tool that measured it): pgbench when there is one, else Python threads."""
    # counted in seconds (pgbench -T runs whole ones): a display can show time elapsed of it
    seconds = max(1, math.ceil(duration))
    tick("throughput", 0, seconds)
    binary = pgbench_path()
    if binary:
        qps = _pgbench(binary, url, scripts, concurrency, duration, seed)
        tool = f"pgbench ({binary})"
    else:
        qps, tool = threads(url, scripts, concurrency, duration, seed), "python threads"
    tick("throughput", seconds, seconds)
    return qps, tool


def _pgbench(binary, url, scripts, concurrency, duration, seed) -> float:
    """Run pgbench with one file per script; the password travels in PGPASSWORD only."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    clean_url, password = split_password(url)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    # read-only sessions: the URL's options replace PGOPTIONS, so both are carried over
    given = conninfo_to_dict(clean_url).get("options") or env.get("PGOPTIONS")
    target = make_conninfo(clean_url, options=" ".join(filter(None, [given, READ_ONLY_OPTION])))
    seconds = max(1, math.ceil(duration))  # pgbench -T takes whole seconds
    with tempfile.TemporaryDirectory(prefix="stage4-pgbench-") as tmp:
        args = [
            binary,
            "-n",
            "-c",
            str(concurrency),
            "-j",
            str(min(concurrency, os.cpu_count() or 1)),
            "-T",
            str(seconds),
            f"--random-seed={seed}",
        ]
        for i, sql in enumerate(scripts):
            path = Path(tmp) / f"s{i:03d}.sql"
            # newlines kept (pgbench reads a statement up to its semicolon, lines and all):
            # joined into one line, a `--` comment would swallow the rest of the statement
            path.write_text(sql.rstrip() + "\n;\n")
            args += ["-f", str(path)]
        args.append(target)
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=env,
            timeout=seconds + 120,
            preexec_fn=die_with_parent,
        )
    match = re.search(r"^tps = ([0-9.]+)", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise Stage4Error(f"pgbench failed on {where(url)}: {' / '.join(tail)}")
    return float(match.group(1))


def threads(url, scripts, concurrency, duration, seed) -> float:
    """The pgbench phase on Python threads (psycopg releases the GIL while waiting)."""
    import random

    stop = time.perf_counter() + duration
    counts = [0] * concurrency
    failed: list[str] = []

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        with connect(url, autocommit=True, prepare_threshold=None) as conn:
            conn.execute(READ_ONLY)
            while time.perf_counter() < stop:
                try:
                    conn.execute(rng.choice(scripts)).fetchall()
                except Exception as e:  # said after the join, as pgbench says its own
                    failed.append((str(e).strip().splitlines() or [type(e).__name__])[0])
                    return
                counts[k] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise Stage4Error(f"the throughput phase failed on {where(url)}: {failed[0]}")
    return sum(counts) / (time.perf_counter() - t0)
