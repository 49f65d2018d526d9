"""Readers and writers during every step, up and down: how long each waits, nothing lost.

    .venv/bin/python -m benchmarks.live_waits --features 1000000

On a private embedded cluster (``--home``, default ``/tmp/stage4-waits-<N>``; or ``--url``
SERVER_URL: a scratch database beside it) seeded with ``stage4.plumbing.seed`` (seed 42) at
revision ``schema``, the app of ``benchmarks.live_app`` (a writer at ``--writes-per-s``, a
reader every ``--read-every`` seconds, a lock monitor) runs over loopback while the chain
is walked one revision at a time: upgrade opt1 … opt5, then downgrade back to ``schema``.
Each step is the migration ``stage4`` runs: an upgrade as the gate applies it (under the
rollout lock, one session, retried after a lock timeout; the gate's benchmarks left out),
a downgrade as ``stage4 downgrade -1`` runs it (``gate.downgrade``, checks included).

Per step: the longest statement of each that overlapped the step (its whole call: the
settling VACUUM and a downgrade's checks included), the typical one (the median of the
same kind in a calm window just before the step), the wait (longest minus typical), the
writes committed during the step, what the monitor saw them wait for, and whether nothing
was lost (``Live.check`` after the step). Writes ``benchmarks/results/live_waits.json``
(one entry per scale) and the "Readers and writers during every step" section of
BENCHMARKS.md; ``--render`` rewrites that section from the JSON without running anything.
``--hogs N`` keeps N busy loops running through the walk: the same walk on a busy machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from benchmarks._hogs import cpu_hogs
from benchmarks.live_app import Live, overlapping

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "live_waits.json"
SECTION = "## Readers and writers during every step"
READER_LIMIT_S, WRITER_LIMIT_S = 1.0, 5.0  # the longest wait a step may cause


# ------------------------------------------------------------------ figures


def typical(timings, t0: float, t1: float) -> dict[str, float]:
    """Median seconds per kind of the statements that started and ended inside [t0, t1]."""
    by: dict[str, list[float]] = {}
    for start, seconds, kind in timings:
        if start >= t0 and start + seconds <= t1:
            by.setdefault(kind, []).append(seconds)
    return {k: statistics.median(v) for k, v in by.items()}


def longest_wait(during, usual: dict[str, float]) -> dict:
    """The statement that waited longest: its seconds minus the typical of its kind (the
    median of all kinds when its own has no calm sample)."""
    if not during:
        return {"statements": 0, "longest_s": None, "kind": None, "typical_s": None, "wait_s": None}
    fallback = statistics.median(usual.values()) if usual else 0.0

    def wait(t) -> float:
        return t[1] - usual.get(t[2], fallback)

    worst = max(during, key=wait)
    return {
        "statements": len(during),
        "longest_s": round(max(t[1] for t in during), 4),
        "kind": worst[2],
        "typical_s": round(usual.get(worst[2], fallback), 5),
        "wait_s": round(max(0.0, wait(worst)), 4),
    }


def lock_waits(seen: list[tuple], t0: float, t1: float, top: int = 8) -> list[dict]:
    """The monitor's rows in [t0, t1] grouped by who waited on which statement: the longest
    wait seen during each (the blocker's state and locks at that sample), longest first."""
    groups: dict[tuple, dict] = {}
    for now, who, waited, pid, app, query, state, locks, *behind in seen:
        waited = float(waited or 0)
        g = groups.get((who, app, query))
        if not t0 <= now <= t1 or (g is not None and g["waited_s"] >= waited):
            continue
        groups[(who, app, query)] = {
            "who": who.removeprefix("bench-"),
            "waited_s": round(waited, 3),
            "blocker_pid": pid,
            "blocker": app,
            "statement": query,
            "blocker_waiting_on": state,
            "strong_locks": locks,
            "blocker_waits_for": behind[0] if behind else None,
        }
    return sorted(groups.values(), key=lambda g: -g["waited_s"])[:top]


def chain_steps(chain: list[str]) -> list[tuple[str, str, str]]:
    """(direction, revision, target) for each step: up from schema to the head, then down."""
    ups = [("up", rev, rev) for rev in chain[1:]]
    downs = [("down", rev, prev) for prev, rev in itertools.pairwise(chain)]
    return ups + downs[::-1]


def verdict(steps: list[dict]) -> dict:
    """PASS/FAIL of each target over the steps, with the worst step."""

    def worst(who: str) -> dict:
        s = max(steps, key=lambda r: r[who]["wait_s"] or 0.0)
        return {"wait_s": s[who]["wait_s"] or 0.0, "step": f"{s['revision']} {s['direction']}"}

    r, w = worst("reader"), worst("writer")
    return {
        "reader": {**r, "limit_s": READER_LIMIT_S, "pass": r["wait_s"] < READER_LIMIT_S},
        "writer": {**w, "limit_s": WRITER_LIMIT_S, "pass": w["wait_s"] < WRITER_LIMIT_S},
        "nothing_lost": all(s["nothing_lost"] for s in steps),
        "all_steps_ran": all(not s.get("error") for s in steps),
    }


# ------------------------------------------------------------------ the walk


def apply_step(url: str, direction: str, rev: str, target: str) -> dict:
    """The step as `stage4` runs it: {step_s, settled, and metrics and notes (upgrade)
    or checks (downgrade)}."""
    from stage4.plumbing import locks, migrations, retry
    from stage4.rollout import gate

    if direction == "down":
        done = gate.downgrade(url, target)
        return {
            "step_s": done[0].seconds,
            "settled": done[0].settled,
            "checks": done[0].verified,
        }
    metrics: dict = {}
    notes: list[str] = []
    with locks.rollout_lock(url, f"upgrade --to {rev}"), migrations.session(url):
        seconds, settled = retry.on_lock_timeout(
            lambda: migrations.timed(migrations.upgrade, url, rev, metrics=metrics, notes=notes),
            url=url,
            what=f"upgrade to {rev}",
            notes=notes,
        )
    return {"step_s": seconds, "settled": settled, "metrics": metrics, "notes": notes}


def measure(live: Live, direction: str, rev: str, target: str, calm_s: float) -> dict:
    """One step with the app running: figures, lock waits, the check after it."""
    from stage4.errors import Stage4Error

    c0 = time.perf_counter()
    time.sleep(calm_s)
    c1 = time.perf_counter()
    load = os.getloadavg()[0]
    record: dict = {"revision": rev, "direction": direction, "target": target}
    t0 = time.perf_counter()
    try:
        record.update(apply_step(live.url, direction, rev, target))
    except Stage4Error as e:
        record["error"] = str(e)
    t1 = time.perf_counter()
    live.returned_since(t1)
    writes = live.writer.ops
    record.update(
        total_s=round(t1 - t0, 3),
        load_average=[round(load, 2), round(os.getloadavg()[0], 2)],
        reader=longest_wait(
            overlapping(live.reader.timings, t0, t1), typical(live.reader.timings, c0, c1)
        ),
        writer=longest_wait(
            overlapping([(o.started, o.seconds, o.op) for o in writes], t0, t1),
            typical([(o.started, o.seconds, o.op) for o in writes], c0, c1),
        ),
        writes_committed=sum(1 for o in writes if t0 <= o.started + o.seconds <= t1),
        lock_waits=lock_waits(live.monitor.seen, t0, t1),
        app_errors=[
            f"{who}: {e}"
            for who, app in (("writer", live.writer), ("reader", live.reader))
            for at, e in app.failed
            if t0 <= at <= t1
        ],
    )
    c = time.perf_counter()
    found, rows = live.check()
    record.update(
        rows_after=rows,
        nothing_lost=not found,
        problems=found[:20],
        check_s=round(time.perf_counter() - c, 1),
    )
    return record


def walk(
    url: str, *, writes_per_s: float | None, read_every: float, calm_s: float, say=print
) -> list[dict]:
    """The whole chain up and down with the app running; a failed step ends the walk up
    (the walk down starts from where the database is)."""
    from stage4.plumbing import migrations

    out: list[dict] = []
    with Live(url, writes_per_s, read_every) as live:
        for direction, rev, target in chain_steps(migrations.chain()):
            now = migrations.current(url)
            if (direction == "up" and now != migrations.previous(rev)) or (
                direction == "down" and now != rev
            ):
                continue  # an earlier step failed: not reachable from here
            r = measure(live, direction, rev, target, calm_s)
            say(line(r))
            out.append(r)
        out.append(
            {
                "writer_errors": live.writer.errors[:20],
                "reader_errors": live.reader.errors[:20],
                "writes_total": len(live.writer.ops),
                "reads_total": len(live.reader.timings),
            }
        )
    return out


def line(r: dict) -> str:
    rd, wr = r["reader"], r["writer"]
    return (
        f"{r['revision']:5} {r['direction']:4} total {r['total_s']:8.2f} s | reader wait "
        f"{rd['wait_s']} s (longest {rd['longest_s']}) | writer wait {wr['wait_s']} s "
        f"(longest {wr['longest_s']}) | writes {r['writes_committed']} | nothing lost "
        f"{r['nothing_lost']} (checked in {r['check_s']} s)"
        + (f" | FAILED: {r['error']}" if r.get("error") else "")
    )


# ------------------------------------------------------------------ BENCHMARKS.md


def command(n: int, hogs: int = 0) -> str:
    return f".venv/bin/python -m benchmarks.live_waits --features {n}" + (
        f" --hogs {hogs}" if hogs else ""
    )


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


METHOD = (
    "A writer (INSERT, UPDATE moving rows between years, DELETE; autocommit, paced) and a "
    "reader (a lookup by id, a viewport count + area, a quarter + bbox list, in turn) run "
    "over loopback while the chain is walked one revision at a time, up from `schema` to "
    "opt5 and back down, each step as `stage4` runs it: an upgrade as the gate applies it "
    "(rollout lock, retried after a lock timeout; the gate's benchmarks left out), a "
    "downgrade as `stage4 downgrade -1` runs it, its checks included. Per step, in "
    "seconds: **step**, the migration as stage4 times it; **total**, the whole call (the "
    "VACUUM (ANALYZE) after it and a downgrade's checks included), the window in which "
    "the reads and writes below are counted; the **longest** read and write that "
    "overlapped it, beside the **typical** one of the same kind (median in a calm window "
    "of a few seconds just before the step, the app running); the **wait** = longest − "
    "typical; the writes committed during the step; **nothing lost**: the writer paused "
    "after the step, the whole table compared row by row with its state before the walk "
    "plus every committed write. A monitor polls `pg_blocking_pids` every 0.1 s and "
    "names what a waiting reader or writer waited for. Targets: every reader wait under "
    f"{READER_LIMIT_S:g} s, every writer wait under {WRITER_LIMIT_S:g} s."
)


def _wrap(text: str, bullet: bool = False) -> list[str]:
    import textwrap

    return textwrap.wrap(
        text,
        88,
        subsequent_indent="  " if bullet else "",
        break_long_words=False,
        break_on_hyphens=False,
    )


def runs_of(doc: dict) -> dict[int, list[dict]]:
    """{features: [run, …]} from the JSON (a scale's entry is a run or a list of runs)."""
    out = {int(k): v if isinstance(v, list) else [v] for k, v in doc["runs"].items()}
    return dict(sorted(out.items(), reverse=True))


def markdown(doc: dict) -> str:
    scales = runs_of(doc)
    said = [r.get("command", command(n)) for n, runs in scales.items() for r in runs]
    lines = [SECTION, "", "```bash", *said, "```", ""]
    lines += _wrap(METHOD)
    for n, runs in scales.items():
        lines += ["", f"### {n:,} features"]
        for r in runs:
            lines += ["", *run_markdown(r)]
    return "\n".join(lines) + "\n"


def run_markdown(r: dict) -> list[str]:
    steps, v = r["steps"], r["verdict"]
    loads = [x for s in steps for x in s["load_average"]]
    out = _wrap(
        f"Measured {r['when']} (`benchmarks/results/live_waits.json`), writer paced at "
        f"{r['writes_per_s']:g} writes/s, a read every {r['read_every_s']:g} s; 1-minute load "
        f"average {min(loads):.1f}–{max(loads):.1f} during the steps, on the 2-core machine"
        + (
            f", with {r['hogs']} CPU hog{'s' if r['hogs'] > 1 else ''} (busy loops) running "
            "through the walk."
            if r.get("hogs")
            else "."
        )
    )
    out += [
        "",
        "| revision | direction | step | total | longest read (typical) | reader wait "
        "| longest write (typical) | writer wait | writes committed | app errors | nothing lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        rd, wr = s["reader"], s["writer"]
        out.append(
            f"| {s['revision']} | {s['direction']} | {_s(s.get('step_s'))} | {_s(s['total_s'])} | "
            f"{_s(rd['longest_s'])} ({_s(rd['typical_s'])}) | {_s(rd['wait_s'])} | "
            f"{_s(wr['longest_s'])} ({_s(wr['typical_s'])}) | {_s(wr['wait_s'])} | "
            f"{s['writes_committed']} | {len(s['app_errors']) if 'app_errors' in s else '—'} | "
            f"{'yes' if s['nothing_lost'] else 'NO'} |"
        )
    mark = {True: "PASS", False: "FAIL"}
    out += [""]
    for who, limit in (("reader", READER_LIMIT_S), ("writer", WRITER_LIMIT_S)):
        out += _wrap(
            f"- every {who} wait < {limit:g} s: **{mark[v[who]['pass']]}** (longest "
            f"{_s(v[who]['wait_s'])} s, {v[who]['step']})",
            bullet=True,
        )
    out.append(f"- nothing lost after every step: **{mark[v['nothing_lost']]}**")
    app = r.get("app", {})
    refused = [f"{who} {e}" for who in ("writer", "reader") for e in app.get(f"{who}_errors", [])]
    out += _wrap(
        f"- statements of the app that failed over the whole walk: "
        f"{'; '.join(refused) if refused else 'none'}",
        bullet=True,
    )
    for note in r.get("observed", []):  # measured beside the run, said with their command
        out += _wrap(f"- {note}", bullet=True)
    for s in steps:
        if s.get("error"):
            out += _wrap(f"- {s['revision']} {s['direction']} failed: {s['error']}", bullet=True)
        errors = sorted(set(s.get("app_errors", [])))
        if errors:
            out += _wrap(
                f"- {s['revision']} {s['direction']}: the app got "
                f"{len(s['app_errors'])} error(s): {'; '.join(errors)}",
                bullet=True,
            )
    waits = [(s, w) for s in steps for w in s["lock_waits"][:1] if w["waited_s"] >= 0.2]
    if not waits:
        return out
    said = (
        "The longest lock wait the monitor saw in each step (0.2 s and more; polled every "
        "0.1 s, so a lower bound), the statement the session waited for was running at that "
        'moment, and the strong table locks it held ("and N more": its partitions and '
        "indexes, and relations it created and has not committed yet):"
    )
    out += ["", *_wrap(said), ""]
    for s, w in waits:
        text = (
            f"- {s['revision']} {s['direction']}: the {w['who']} waited {w['waited_s']:.1f} s "
            f"for {w['blocker']} running `{w['statement'][:100]}`"
        )
        text += f", holding {w['strong_locks']}" if w["strong_locks"] else ""
        if w.get("blocker_waits_for"):
            text += f"; it was itself waiting for {w['blocker_waits_for']}"
        out += _wrap(text, True)
    late = [
        (s, who)
        for s in steps
        for who, limit in (("reader", READER_LIMIT_S), ("writer", WRITER_LIMIT_S))
        if (s[who]["wait_s"] or 0) >= limit
    ]
    if late:
        out += [
            "",
            *_wrap(
                "Where a wait missed its target, what the step ran while the app "
                "waited (each statement with how far into the wait the monitor "
                "last saw it):"
            ),
            "",
        ]
        out += [line for s, who in late for line in _wrap(timeline(s, who), True)]
    return out


def timeline(s: dict, who: str) -> str:
    """``- opt1 up, writer (19.07 s): `stmt` (6.2 s), `stmt` (10.9 s) …`` from the monitor."""
    seen = sorted((w for w in s["lock_waits"] if w["who"] == who), key=lambda w: w["waited_s"])
    steps = ", ".join(f"`{w['statement'][:70]}` ({w['waited_s']:.1f} s)" for w in seen)
    return f"- {s['revision']} {s['direction']}, {who} ({s[who]['wait_s']:.2f} s): {steps or 'not seen'}"


def write_markdown(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    if SECTION in doc:
        head, rest = doc.split(SECTION, 1)
        nxt = rest.find("\n## ")
        doc = head + text + ("\n" + rest[nxt + 1 :] if nxt >= 0 else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


# ------------------------------------------------------------------ main


def prepare(args) -> tuple[str, object]:
    """The URL of a database at ``schema`` freshly seeded with ``--features`` rows, and
    what to call when done (stop the cluster / drop the scratch database)."""
    from stage4.config import settings
    from stage4.plumbing import migrations, seed

    if args.url:
        from stage4.plumbing.db import resolve_url

        base = resolve_url(args.url)
        url = urlunsplit(urlsplit(base)._replace(path="/live_waits"))  # keeps ?passfile=
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS live_waits WITH (FORCE)")
            admin.execute("CREATE DATABASE live_waits")

        def done() -> None:
            with psycopg.connect(base, autocommit=True) as admin:
                admin.execute("DROP DATABASE IF EXISTS live_waits WITH (FORCE)")
    else:
        os.environ["STAGE4_HOME"] = args.home or f"/tmp/stage4-waits-{args.features}"
        from stage4.plumbing.cluster import Cluster

        cluster = Cluster.from_settings(settings())
        cluster.ensure_started()
        url, done = cluster.url(), cluster.stop
    s = settings()
    now, first = migrations.current(url), migrations.chain()[0]
    if now not in (None, first):
        migrations.downgrade(url, first)
    if now is None:
        migrations.upgrade(url, first)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {s.qualified_table}")
        conn.execute(f"DROP SCHEMA IF EXISTS {s.bench_schema} CASCADE")
    with psycopg.connect(url) as conn:
        seed.seed(conn, s, features=args.features, seed=42)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return url, done


def main() -> None:
    import platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", type=int, default=100_000)
    ap.add_argument(
        "--home", help="STAGE4_HOME of the embedded cluster (default /tmp/stage4-waits-N)"
    )
    ap.add_argument("--url", help="server URL (a scratch database is created next to it)")
    ap.add_argument("--writes-per-s", type=float, default=50.0, help="the writer's pace")
    ap.add_argument("--read-every", type=float, default=0.05, help="seconds between two reads")
    ap.add_argument("--calm", type=float, default=3.0, help="seconds measured before each step")
    ap.add_argument("--no-markdown", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument(
        "--keep", action="store_true", help="keep the stored runs of this scale beside this one"
    )
    ap.add_argument("--hogs", type=int, default=0, help="busy loops kept running through the walk")
    ap.add_argument(
        "--render",
        action="store_true",
        help="rewrite BENCHMARKS.md's section from live_waits.json; run nothing",
    )
    args = ap.parse_args()
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    if args.render:
        write_markdown(markdown(doc))
        return
    t0 = time.perf_counter()
    url, done = prepare(args)
    seeded = time.perf_counter() - t0
    print(f"seeded {args.features:,} features at schema in {seeded:.1f} s", flush=True)
    try:
        with cpu_hogs(args.hogs):
            steps = walk(
                url,
                writes_per_s=args.writes_per_s,
                read_every=args.read_every,
                calm_s=args.calm,
                say=lambda x: print(x, flush=True),
            )
    finally:
        done()
    app = steps.pop()
    run = {
        "command": command(args.features, args.hogs) + (" --keep" if args.keep else ""),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "features": args.features,
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "writes_per_s": args.writes_per_s,
        "read_every_s": args.read_every,
        "calm_s": args.calm,
        "hogs": args.hogs,
        "seed_s": round(seeded, 1),
        "app": app,
        "verdict": verdict(steps),
        "steps": steps,
    }
    kept = runs_of(doc).get(args.features, []) if args.keep else []
    doc["runs"][str(args.features)] = [*kept, run]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"wrote {RESULTS}")
    text = markdown(doc)
    print(text)
    if not args.no_markdown:
        write_markdown(text)
    v = run["verdict"]
    if not (v["nothing_lost"] and v["all_steps_ran"]) or app["writer_errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
