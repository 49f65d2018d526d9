"""Every command has help with an explanation; `stage4 --help` is complete."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from stage4.cli import app

runner = CliRunner()


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [(*prefix, c.name or c.callback.__name__) for c in group.registered_commands]
    for sub in group.registered_groups:
        found += _commands(sub.typer_instance, (*prefix, sub.name))
    return found


def test_top_level_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in _commands(app):
        assert command[0] in result.output


def test_every_command_has_a_docstring_help() -> None:
    commands = _commands(app)
    assert len(commands) >= 8
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage:" in result.output
        body = result.output.split("Usage:", 1)[1]
        assert len(body.strip().splitlines()) > 3, f"{command} has no help text"
