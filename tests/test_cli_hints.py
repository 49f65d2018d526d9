"""Every command a message or help text tells the user to run is one that works.

The hints are found in the source itself (every string literal of ``src/stage4`` and
``alembic/``, f-strings with their placeholders filled), so a new message is checked
without anyone listing it here. Each ``stage4 …`` hint must name real commands and
options and pass Typer's parser with ``--help`` appended (which parses every option
before it prints help); each ``alembic …`` hint must pass Alembic's own parser. The
lock-timeout hint is then run for real against a locked table.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import psycopg
import pytest
import typer
from alembic.config import CommandLine
from typer.testing import CliRunner

from stage4.cli import app
from stage4.plumbing import migrations

ROOT = Path(__file__).resolve().parents[1]
# A hint starts after a backtick, a bracket, a comma or a lead-in, and ends at the next of these.
HINT = re.compile(r"(?:`|\(|, |Example: |run |with: |: )((?:stage4|alembic) [^`()\n,;]*)")
# Words after "stage4" that are prose, not a command ("the stage4 benchmarking schema v1").
PROSE = {"benchmarking"}
# Filling for placeholders: f-string fields and the <…> of generic descriptions.
FILL = {"{X}": "opt1", "<command>": "upgrade", "<spec>": "head"}


def _strings(path: Path):
    tree = ast.parse(path.read_text())
    inner = {
        id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "{X}" for v in node.values)
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inner
        ):
            yield node.value


def _hints() -> list[tuple[str, str]]:
    found = set()
    files = [*ROOT.glob("src/stage4/**/*.py"), *ROOT.glob("alembic/**/*.py")]
    for path in sorted(files):
        for text in _strings(path):
            for match in HINT.finditer(text):
                hint = match.group(1).split(" && ")[0].split(" prints ")[0].strip().rstrip(".")
                for k, v in FILL.items():
                    hint = hint.replace(k, v)
                if hint.split()[1] not in PROSE:
                    found.add((str(path.relative_to(ROOT)), hint))
    return sorted(found)


HINTS = _hints()


def test_the_hints_are_found() -> None:
    """The search is not vacuous: it sees the messages known to carry hints."""
    hints = {h for _, h in HINTS}
    assert "stage4 upgrade --lock-timeout 30s" in hints
    assert "stage4 downgrade --lock-timeout 30s" in hints
    assert "alembic -x lock_timeout=30s" in hints
    assert "stage4 db start" in hints
    assert len(HINTS) >= 30


def _command(tokens: list[str]):
    """The (click) command a token list names, and the tokens after its name."""
    cmd = typer.main.get_command(app)
    ctx = typer.Context(cmd)
    while hasattr(cmd, "get_command") and tokens and not tokens[0].startswith("-"):
        sub = cmd.get_command(ctx, tokens[0])
        assert sub is not None, f"no command {tokens[0]!r}"
        cmd, tokens = sub, tokens[1:]
    return cmd, tokens


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "hint"),
    [h for h in HINTS if h[1].startswith("stage4 ")],
    ids=lambda v: v if " " in str(v) else "",
)
def test_stage4_hint_parses(where: str, hint: str) -> None:
    tokens = shlex.split(hint)[1:]
    cmd, rest = _command(tokens)
    names = {"--help", *(n for p in cmd.params for n in (*p.opts, *p.secondary_opts))}
    for token in rest:
        if token.startswith("--"):
            assert token.split("=")[0] in names, f"{where}: {hint!r}: {cmd.name} has no {token}"
    takes_value = [
        t
        for t in rest
        if t.startswith("--")
        and not any(
            t in p.secondary_opts or (t in p.opts and getattr(p, "is_flag", 0)) for p in cmd.params
        )
    ]
    if takes_value and rest[-1] == takes_value[-1]:
        return  # names an option without a value ("see --min-delta-ms"): checked above
    result = CliRunner().invoke(app, [*tokens, "--help"])
    assert result.exit_code == 0, f"{where}: {hint!r}: {result.output}"


@pytest.mark.parametrize(
    ("where", "hint"),
    [h for h in HINTS if h[1].startswith("alembic ")],
    ids=lambda v: v if " " in str(v) else "",
)
def test_alembic_hint_parses(where: str, hint: str) -> None:
    try:
        CommandLine(prog="alembic").parser.parse_args(shlex.split(hint)[1:])
    except SystemExit as e:
        pytest.fail(f"{where}: alembic refuses {hint!r} (exit {e.code})")


@pytest.mark.slow
def test_the_lock_timeout_hint_runs(seeded_url: str) -> None:
    """The message's hint, run as written (with the database URL), gets past the lock
    it had queued behind once the holder commits within the raised timeout."""
    migrations.upgrade(seeded_url, "opt1")
    blocker = psycopg.connect(seeded_url)
    try:
        blocker.execute("LOCK TABLE geometrias IN ACCESS SHARE MODE")
        failed = CliRunner().invoke(
            app, ["--database-url", seeded_url, "downgrade", "--lock-timeout", "1s"]
        )
        assert failed.exit_code == 1
        assert "stage4 downgrade --lock-timeout 30s" in failed.stderr
    finally:
        blocker.rollback()
        blocker.close()
    hint = shlex.split("stage4 downgrade --lock-timeout 30s")[1:]
    done = CliRunner().invoke(app, ["--database-url", seeded_url, *hint])
    assert done.exit_code == 0, done.stderr
    assert migrations.current(seeded_url) == "schema"
