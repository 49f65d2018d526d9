"""The README's commands on their defaults: rehearse judges as upgrade does, the Makefile
passes options on, a refused run deletes no backup, status finds the baseline, and the
small things a user sees first (help, pipes, typos, quoting, killed dumps, --no-gate)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from stage4 import cli
from stage4.config import settings
from stage4.measure import store
from stage4.plumbing import locks, migrations
from stage4.rollout import backup, status
from stage4.rollout.record import GateOptions
from test_gate import FAST, scripts  # noqa: F401  (scripts: the fixture, used by name)

ROOT = Path(__file__).resolve().parents[1]
STAGE4 = Path(sys.executable).with_name("stage4")
QUICK = ["--iterations", "3", "--concurrency", "1", "--duration", "1"]
runner = CliRunner()


def _command(*path: str):
    group = typer.main.get_command(cli.app)
    for name in path:
        group = group.commands[name]
    return group


def _options(command) -> dict[str, typer.core.TyperOption]:
    return {p.name: p for p in command.params if isinstance(p, typer.core.TyperOption)}


def _help(*command: str, columns: int = 200) -> str:
    result = runner.invoke(cli.app, [*command, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------ rehearse = upgrade's judging
def test_rehearse_takes_every_judging_option_of_upgrade_defined_once() -> None:
    upgrade, rehearse = _options(_command("upgrade")), _options(_command("rehearse"))
    judging = set(cli.JUDGING)
    # every option of upgrade that reaches the rollout is a judging one, or about the real
    # database only (its backup, its report folder, overriding the gate, an interrupt)
    real_only = {"backup", "backup_dir", "reports_dir", "gate", "keep_unjudged"}
    to_rollout = {f.name for f in fields(GateOptions)} & {*upgrade, "gate"}
    assert to_rollout - real_only <= judging, to_rollout - real_only - judging
    shown = _help("rehearse")
    for name in judging:
        mine, theirs = rehearse[name], upgrade[name]
        assert (mine.opts, mine.help, mine.default) == (theirs.opts, theirs.help, theirs.default)
        for flag in theirs.opts:
            assert flag in _help("upgrade") and flag in shown, flag


@pytest.mark.slow
def test_rehearse_passes_the_judging_options_to_its_rollout(
    seeded_url: str, db_url: str, tmp_path: Path
) -> None:
    args = ["--threshold", "0.5", "--min-delta-ms", "7", "--confidence", "0.9", "--accept-stale"]
    result = runner.invoke(
        cli.app,
        [
            "--database-url",
            seeded_url,
            "rehearse",
            "--to",
            "opt1",
            "--scratch-url",
            db_url,
            "--reports-dir",
            str(tmp_path),
            "--expect-features",
            "2000",
            *QUICK,
            *args,
        ],
    )
    assert result.exit_code in (0, 3), result.output  # GO or NO-GO: a verdict either way
    (saved,) = tmp_path.glob("*/rollout.json")
    options = json.loads(saved.read_text())["options"]
    assert (options["threshold"], options["min_delta_ms"], options["confidence"]) == (
        "0.5",
        "7.0",
        "0.9",
    )
    assert options["accept_stale"] == "True" and options["expect_features"] == "2000"
    assert options["backup"] == "False"  # a rehearsal never dumps


def test_rehearse_checks_expect_features_on_the_source_before_copying(
    seeded_url: str, db_url: str
) -> None:
    result = runner.invoke(
        cli.app,
        [
            "--database-url",
            seeded_url,
            "rehearse",
            "--scratch-url",
            db_url,
            "--expect-features",
            "5",
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "FAILED: pre-flight failed: feature count: 2000 features in public.geometrias, "
        "expected 5 (--expect-features); nothing was copied"
    )
    with psycopg.connect(db_url) as conn:  # the scratch was not touched
        assert conn.execute("SELECT to_regclass('public.geometrias')").fetchone()[0] is None


def test_no_op_rehearse_and_upgrade_both_exit_0(seeded_url: str, tmp_path: Path) -> None:
    for command in ("rehearse", "upgrade"):
        result = runner.invoke(
            cli.app,
            [
                "--database-url",
                seeded_url,
                command,
                "--to",
                "schema",
                "--reports-dir",
                str(tmp_path),
            ],
        )
        assert result.exit_code == 0, (command, result.output)
        assert "already at schema: nothing to do" in result.stdout


# ------------------------------------------------------------------ Makefile
MIRRORS = {  # target: the stage4 command it runs
    "upgrade": "upgrade",
    "rehearse": "rehearse",
    "downgrade": "downgrade",
    "status": "status",
    "plan": "plan",
    "bench": "bench",
    "baseline": "baseline",
    "compare": "compare",
    "report": "report",
    "refresh": "refresh",
    "workload-capture": "workload capture",
    "seed": "seed",
    "db-start": "db start",
    "db-stop": "db stop",
}


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_target_that_mirrors_a_command_passes_args() -> None:
    phony = re.search(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    commands = {" ".join(c) for c in _all_commands()}
    mirrored = {t for t in phony if t.replace("-", " ") in commands}
    assert mirrored <= set(MIRRORS), mirrored - set(MIRRORS)
    for target, command in MIRRORS.items():
        done = _make("-n", target, "ARGS=--some-option 'two words'")
        assert done.returncode == 0, done.stderr
        (line,) = [ln for ln in done.stdout.splitlines() if f"stage4 {command}" in ln]
        words = shlex.split(line.split("||")[0].replace("; fi", "").replace("; else", " ; "))
        assert "--some-option" in words and "two words" in words, (target, line)


def test_make_upgrade_keeps_judge_and_accept_stale_and_names_a_no_go() -> None:
    done = _make(
        "-n", "upgrade", "TO=opt4", "JUDGE=target", "ACCEPT_STALE=1", "ARGS=--accept-drift"
    )
    (line,) = [ln for ln in done.stdout.splitlines() if "stage4 upgrade" in ln]
    run = shlex.split(line.split("||")[0])
    assert run[1:] == ["upgrade", "--to", "opt4", "--judge", "target", "--accept-stale",
                       "--accept-drift"]  # fmt: skip
    # the recipe's own tail: exit 3 said as NO-GO, every code passed on to make
    tail = "{" + line.split("|| {", 1)[1]
    for code, said in ((3, True), (2, False), (0, False)):
        shell = subprocess.run(
            ["bash", "-c", f"(exit {code}) || {tail}"], capture_output=True, text=True, check=False
        )
        assert shell.returncode == code
        assert ("exit 3 = NO-GO" in shell.stderr) is said, shell.stderr


# ------------------------------------------------------------------ backups
def _fake_dumps(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        path = folder / f"stage4-schema-2026010{i}-000000.dump"
        path.write_bytes(b"an older run's dump")
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
        made.append(path)
    return made


def test_a_refused_rollout_deletes_no_backup(seeded_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    dumps = _fake_dumps(folder, 4)
    # another process's rollout: a session of its own holding the lock (this process's own
    # rollout_lock would be re-entrant)
    with psycopg.connect(
        seeded_url, autocommit=True, application_name="stage4 upgrade --to opt3"
    ) as other:
        key = (locks.ROLLOUT_CLASS, settings().qualified_table)
        other.execute(f"SELECT pg_advisory_lock({locks._KEY})", key)
        result = runner.invoke(
            cli.app,
            [
                "--database-url",
                seeded_url,
                "upgrade",
                "--to",
                "opt1",
                "--backup-dir",
                str(folder),
                "--keep-backups",
                "1",
                "--reports-dir",
                str(tmp_path / "reports"),
            ],
        )
    assert result.exit_code == 1
    assert result.stderr.startswith("FAILED: another rollout is running"), result.stderr
    assert "removed" not in result.output
    assert sorted(folder.iterdir()) == dumps  # every backup still there


def test_a_killed_runs_partial_dump_is_cleaned_and_never_a_backup(
    seeded_url: str, tmp_path: Path
) -> None:
    host = socket.gethostname()
    dead_pid = subprocess.Popen(["true"])  # a process that has exited
    dead_pid.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        tmp_path.mkdir(exist_ok=True)
        dead = tmp_path / f"stage4-schema-20260101-000000.dump.{host}-{dead_pid.pid}.partial"
        alive = tmp_path / f"stage4-schema-20260102-000000.dump.{host}-{live.pid}.partial"
        other = tmp_path / f"stage4-schema-20260103-000000.dump.elsewhere-{dead_pid.pid}.partial"
        for path in (dead, alive, other):
            path.write_bytes(b"")  # what SIGKILL during pg_dump leaves
        assert backup.backups(tmp_path) == []  # never counted as a backup
        made = backup.dump(seeded_url, settings(), tmp_path, "schema")
        assert not dead.exists()  # its process is gone: removed by the next dump
        assert alive.exists() and other.exists()  # a running dump's, another host's: kept
        assert backup.backups(tmp_path) == [made] and made.stat().st_size > 0
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow
def test_the_restore_command_quotes_a_path_with_a_space_and_a_substitution(
    seeded_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "back up $(touch pwned)"
    made = backup.dump(seeded_url, settings(), folder, "schema")
    command = backup.restore_command(made, seeded_url, settings().schema)
    assert shlex.quote(str(made)) in command
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    restored = seeded_url.split("?")[0] + "_restored"
    try:
        assert done.returncode == 0, done.stderr
        assert not (tmp_path / "pwned").exists()  # nothing ran out of the path
        with psycopg.connect(restored) as conn:
            assert conn.execute("SELECT count(*) FROM geometrias").fetchone()[0] == 2000
    finally:
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            name = restored.rsplit("/", 1)[-1]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------ status: the baseline
@pytest.mark.slow
def test_status_finds_the_baseline_after_many_runs(seeded_url: str) -> None:
    s = settings()
    b = s.bench_schema
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        store.ensure(conn, s)
        ids = []
        for i in range(35):
            run_id = conn.execute(
                f"INSERT INTO {b}.runs (label, revision, iterations, sets, concurrency, duration) "
                "VALUES (%s, 'schema', 1, 1, 1, 1) RETURNING run_id",
                (f"RUN{i}",),
            ).fetchone()[0]
            conn.execute(
                f"INSERT INTO {b}.samples (run_id, query_id, seq, round, latency_ms) "
                "VALUES (%s, 'Q1', 0, 0, %s)",
                (run_id, 1.0 + i),
            )
            ids.append(run_id)
        store.set_baseline(conn, ids[0], s=s)
        assert store.baseline_run_id(conn, s) == ids[0]  # where baseline and compare look
    info = status.collect(seeded_url, s)
    assert info["baseline"]["run_id"] == ids[0]
    result = runner.invoke(cli.app, ["--database-url", seeded_url, "status"])
    assert result.exit_code == 0, result.output
    assert re.search(rf"^baseline: run {ids[0]} at schema, .*, mean 1\.00 ms$", result.stdout, re.M)
    assert "none yet" not in result.stdout


# ------------------------------------------------------------------ the small things
def _all_commands(group=None, path=()):
    group = group or typer.main.get_command(cli.app)
    for name, command in group.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            yield from _all_commands(command, (*path, name))
        else:
            yield (*path, name)


def test_help_texts_wrap_at_80_columns_without_hard_breaks() -> None:
    for command in [(), *_all_commands()]:
        text = _help(*command, columns=80)
        prose = text.split("Usage:", 1)[1].split("╭", 1)[0].splitlines()[1:]
        for line, after in itertools.pairwise(prose):
            line, after = line.rstrip(), after.strip()
            if not line.strip() or not after or after.startswith("Example:"):
                continue
            # a line ends early only when the next word did not fit on it
            assert len(line) + 1 + len(after.split()[0]) > 79, (command, line, after)
        for i, line in enumerate(prose):  # an example is a line of its own, whole
            if "Example:" in line:
                assert line.strip().startswith("Example:"), (command, line)
                assert not prose[i + 1].strip(), (command, line, prose[i + 1])
    # an option's help is markup to typer: a bracketed word must be escaped to be shown
    assert "default: [tool.stage4] lock_timeout." in _help("upgrade")


@pytest.mark.slow
def test_a_closed_stdout_ends_quietly() -> None:
    for command in (
        ["upgrade", "--help"],
        ["--help"],
        ["plan", "--to", "opt5", "--since", "schema"],
    ):
        read, write = os.pipe()
        os.close(read)
        try:
            done = subprocess.run(
                [str(STAGE4), *command], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60
            )
        finally:
            os.close(write)
        assert done.stderr == "", (command, done.stderr)
        assert done.returncode == 1


def test_a_missing_passfile_is_named(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:1/x?passfile={tmp_path}/nonexistent"
    result = runner.invoke(cli.app, ["--database-url", url, "status"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"FAILED: the passfile the database URL names does not exist: {tmp_path}/nonexistent"
    )


def test_plan_to_base_plans_the_downgrade(seeded_url: str) -> None:
    # --sql: the SQL alone (without it, the catalog diff leads, as for an upgrade)
    args = ["--database-url", seeded_url, "plan", "--to", "base", "--sql"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "-- downgrade schema -> base"
    assert "-- its reverse: upgrade base -> schema" in lines
    down = "\n".join(lines[: lines.index("-- its reverse: upgrade base -> schema")])
    assert "DROP TABLE" in down and "CREATE TABLE" not in down
    assert migrations.current(seeded_url) == "schema"  # offline: nothing ran


@pytest.mark.slow
def test_no_gate_says_what_the_gate_would_have_refused(
    seeded_url: str,
    scripts,  # noqa: F811
    tmp_path: Path,
) -> None:
    scripts("wrong")  # the search RPC returns one row: Q4's results change
    result = runner.invoke(
        cli.app,
        [
            "--database-url",
            seeded_url,
            "upgrade",
            "--to",
            "wrong",
            "--no-gate",
            "--no-backup",
            "--reports-dir",
            str(tmp_path),
            *[str(v) for k, v in FAST.items() for v in (f"--{k}", v)],
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("wrong: GO (gate disabled with --no-gate)")
    assert (
        "  not GO without --no-gate: Q4 result changed: fingerprint differs from baseline" in lines
    )
    assert lines[-1] == "GO: at wrong (--no-gate kept wrong, which the gate would have refused)"
    report = next(tmp_path.glob("*/REPORT.md")).read_text()
    assert "Q4 result changed" in report


@pytest.mark.slow
def test_accepted_drift_is_said_once(seeded_url: str, tmp_path: Path) -> None:
    from stage4.catalog import drift

    drift.record(seeded_url)
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("DROP INDEX public.geometrias_geom_gist")
    result = runner.invoke(
        cli.app,
        [
            "--database-url",
            seeded_url,
            "upgrade",
            "--to",
            "opt1",
            "--no-backup",
            "--no-gate",
            "--accept-drift",
            "--reports-dir",
            str(tmp_path),
            *QUICK,
        ],
    )
    assert result.exit_code == 0, result.output
    said = [ln for ln in result.stderr.splitlines() if "drift accepted" in ln]
    assert len(said) >= 1 and len(said) == len(set(said)), result.stderr
    assert all(
        re.fullmatch(r"pre-flight drift accepted \(--accept-drift\): .*\S", ln) for ln in said
    )
    assert not any(ln.endswith(" s") for ln in said), said  # a finding, not a timed phase
