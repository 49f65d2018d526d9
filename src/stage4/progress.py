"""What a long command shows while it works: a rollout's phases and the benchmark's parts.

On a terminal: a line per phase and a bar for long work (the throughput phase, counted
in seconds, shows seconds elapsed of its total). Elsewhere (CI logs, pipes): one plain
line per phase and per measured part, with its duration. Only the CLI uses it.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress_bar import ProgressBar
from rich.text import Text

# A phase's findings: a check's result ("[ok] postgis: 3.3.2"), an accepted drift.
_FINDINGS = ("[", "drift accepted")


class Live:
    """Gate progress on ``console``; ``with Live(console) as (phase, progress):`` hands
    the two callbacks ``gate.upgrade`` and ``rehearse.run`` take."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __enter__(self):
        self.clock = time.monotonic
        self.tty = self.console.is_terminal
        self.open: tuple[str, float] | None = None  # the phase running, when it began
        self.details: list[str] = []
        self.started: dict[str, float] = {}
        self.tasks: dict[str, object] = {}
        if self.tty:
            columns = (SpinnerColumn(), TextColumn("{task.description}"), _Bar(), _Count())
            self.bar = Progress(*columns, console=self.console, transient=True)
            self.bar.__enter__()
        return self.phase, self.progress

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def _close(self) -> None:
        if self.open is not None:
            text, began = self.open
            self._print(f"{text}: {self.clock() - began:.1f} s")
            self.open = None
        for line in self.details:
            self._print(line)
        self.details.clear()

    def phase(self, step: str, text: str) -> None:
        if self.tty:
            self.bar.console.print(f"[bold]{escape(step)}[/bold] {escape(text)}", highlight=False)
            return
        if text.startswith(_FINDINGS) and self.open is not None:
            self.details.append(f"{step} {text}")  # what a phase found, not a phase:
            return  # printed under its line, without a duration of its own
        self._close()
        self.open = (f"{step} {text}", self.clock())

    def progress(self, what: str, done: int, total: int) -> None:
        if not self.tty:
            began = self.started.setdefault(what, self.clock())
            if done >= total:
                del self.started[what]
                unit = " s" if what == "throughput" else ""
                self._print(f"  {what} {total}{unit}: {self.clock() - began:.1f} s")
            return
        if what not in self.tasks:
            self.tasks[what] = self.bar.add_task(what, total=total, clock=what == "throughput")
        self.bar.update(self.tasks[what], completed=done, total=total)
        if done >= total:
            self.bar.remove_task(self.tasks.pop(what))

    def __exit__(self, *exc) -> None:
        if self.tty:
            self.bar.__exit__(*exc)
        else:  # on an error too: the log shows how far it got and what the checks found
            self._close()


def bench_bars(console: Console) -> Progress:
    """The bars of ``stage4 bench``/``baseline``: one per part of the run."""
    columns = (TextColumn("{task.description:>12}"), _Bar(), _Count(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


def _clock_done(task) -> float:
    """A task counted in seconds advances with the clock (its worker reports only the end)."""
    if task.fields.get("clock") and task.total:
        return min(task.elapsed or 0.0, task.total)
    return task.completed


class _Bar(BarColumn):
    def render(self, task):
        return ProgressBar(
            total=max(0, task.total or 0),
            completed=_clock_done(task),
            width=self.bar_width,
            pulse=not task.started,
            animation_time=task.get_time(),
        )


class _Count(ProgressColumn):
    """``done/total``, or ``elapsed/total s`` for a task counted in seconds."""

    def render(self, task):
        if task.fields.get("clock"):
            return Text(f"{int(_clock_done(task))}/{task.total:.0f} s")
        return Text(f"{task.completed}/{task.total}")
