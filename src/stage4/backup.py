"""Backup before migrating: ``pg_dump -Fc`` of what the upgrade touches.

The password never reaches the command line (it goes through PGPASSWORD in
the child's environment), so it cannot leak through ``ps`` or error text.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from stage4.cluster import bindir
from stage4.config import Settings, redact, split_password
from stage4.errors import Stage4Error


class BackupError(Stage4Error):
    """The backup could not be written; nothing was migrated."""


def check_writable(folder: Path) -> Path:
    """Create the folder if needed and prove we can write into it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".stage4-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise BackupError(
            f"backup directory {folder} is not writable ({e.strerror}); "
            "pass --backup-dir DIR or --no-backup"
        ) from None
    return folder


def dump(url: str, s: Settings, folder: Path, label: str) -> Path:
    """Dump the app schema (table, partitions, functions, views) to a timestamped file."""
    check_writable(folder)
    target = folder / f"stage4-{label}-{time.strftime('%Y%m%d-%H%M%S')}.dump"
    clean_url, password = split_password(url)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    pg_dump = bindir() / "pg_dump"
    if not pg_dump.is_file():
        pg_dump = Path("pg_dump")
    cmd = [str(pg_dump), "-Fc", "--no-sync", f"--schema={s.schema}", "-f", str(target),
           "--dbname", clean_url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        target.unlink(missing_ok=True)
        reason = redact(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed")
        raise BackupError(f"pg_dump failed: {reason}")
    return target
