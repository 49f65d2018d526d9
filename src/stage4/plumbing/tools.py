"""Processes: the PostgreSQL client programs stage4 runs, and whether one of this host's
processes still runs (what a file or a scratch database left behind names).

Low in the package: rehearsal, replay, backup and status use it, and it imports none of
them.
"""

from __future__ import annotations

import os
import socket
import subprocess

from stage4.config import redact, split_password
from stage4.errors import Stage4Error


def run(name: str, url: str | None, args: list[str], error: type[Stage4Error] = Stage4Error) -> str:
    """Run pg_dump, pg_restore or psql (on ``url``, if any; the cluster's own binary when
    there is one); its stdout. The password goes through the environment, never the
    command line; a failure raises ``error`` naming the program and its last words."""
    from stage4.plumbing.cluster import bindir

    env = dict(os.environ)
    exe = bindir() / name
    cmd = [str(exe if exe.is_file() else name), *args]
    if url is not None:
        clean, password = split_password(url)
        if password is not None:
            env["PGPASSWORD"] = password
        cmd += ["--dbname", clean]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
        reason = redact(" ".join(lines[-2:]) if lines else "failed")
        raise error(f"{name} failed: {reason}")
    return out.stdout


def alive(pid: int, host: str | None) -> bool:
    """Whether a process (a rollout's, a dump's, a replay's) still runs; assumed so when
    that cannot be known here (another host)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True
