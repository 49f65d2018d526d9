"""Interrupts (SIGINT, SIGTERM) that end in a judged state, and children that do not outlive us.

SIGTERM is turned into the KeyboardInterrupt SIGINT raises, so both unwind the same way:
a statement in flight is cancelled and its transaction rolled back by PostgreSQL, a child
started with ``subprocess.run`` (pg_dump, pgbench) is killed by it, and the gate decides
what becomes of a step that committed but was not judged. A child also gets SIGTERM when
stage4 dies without unwinding (SIGKILL): ``die_with_parent`` as its ``preexec_fn``.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from contextlib import contextmanager

from stage4.errors import Stage4Error

_PR_SET_PDEATHSIG = 1


class Interrupted(Stage4Error):
    """SIGINT or SIGTERM: the message says what was done about it and where the database is."""

    exit_code = 130


_pending = False  # a signal arrived and its KeyboardInterrupt may have been swallowed


def _raise(signum, frame) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def check() -> None:
    """Raise the interrupt again if it arrived where Python could not raise it (inside a
    finaliser or a callback, which prints "Exception ignored in ..." and goes on): called at
    each phase boundary, so a swallowed signal still stops the rollout there."""
    if _pending:
        raise KeyboardInterrupt


def clear() -> None:
    """The interrupt has been handled."""
    global _pending
    _pending = False


@contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGINT and SIGTERM raise KeyboardInterrupt and are remembered
    until handled (``check``, ``clear``). Only the main thread can set a handler: elsewhere
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear()
    previous = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def shielded():
    """Keep SIGINT/SIGTERM off a few lines that must finish together (recording a state)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def die_with_parent() -> None:
    """``preexec_fn`` of a child: Linux sends it SIGTERM when this process dies, however it
    dies. Elsewhere it does nothing (the ``subprocess.run`` kill still covers interrupts)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
