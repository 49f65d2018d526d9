"""CPU hogs: busy loops that make a benchmark's machine busy on purpose, the same way each time."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

HOG = [sys.executable, "-c", "while True: pass"]


@contextmanager
def cpu_hogs(n: int) -> Iterator[None]:
    """``n`` busy loops (a core each) for the block; killed however the block ends."""
    procs = [subprocess.Popen(HOG) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
