"""Backup before migrating: ``pg_dump -Fc`` of what the upgrade touches.

The password never reaches the command line (it goes through PGPASSWORD in
the child's environment), so it cannot leak through ``ps`` or error text.
A dump holds every row, those that row-level security hides too: the folder is
created 0700 and each file 0600. ``retain`` keeps the newest few, and only after this
process wrote one of its own: a run refused before its backup deletes nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from stage4.config import Settings, redact, split_password
from stage4.errors import Stage4Error
from stage4.plumbing.cluster import bindir
from stage4.plumbing.interrupts import die_with_parent


class BackupError(Stage4Error):
    """The backup could not be written; nothing was migrated."""


# The dumps this process completed, with when: what ``retain`` may call this run's backup.
_written: list[tuple[Path, float]] = []
# A dump being written: ``<dump name>.<host>-<pid>.partial``, renamed once complete.
_PARTIAL = re.compile(r"^(stage4-.+\.dump)\.(.+)-(\d+)\.partial$")


def check_writable(folder: Path) -> Path:
    """Create the folder if needed and prove we can write into it."""
    try:
        existed = folder.is_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not existed:
            folder.chmod(0o700)  # mkdir's mode is masked by the umask
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
    """Dump the app schema (table, partitions, functions, views) and stage4's own (the
    revision) to a timestamped file."""
    check_writable(folder)
    target = folder / f"stage4-{label}-{time.strftime('%Y%m%d-%H%M%S')}.dump"
    clean_url, password = split_password(url)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    pg_dump = bindir() / "pg_dump"
    if not pg_dump.is_file():
        pg_dump = Path("pg_dump")
    # written under another name, renamed once complete: an interrupted or killed dump
    # never looks like a backup, and the next dump removes one whose process is gone
    # (SIGKILL leaves no one else to delete it)
    clean_partials(folder)
    partial = target.with_name(f"{target.name}.{socket.gethostname()}-{os.getpid()}.partial")
    cmd = [
        str(pg_dump),
        "-Fc",
        "--no-sync",
        f"--schema={s.schema}",
        f"--schema={s.own_schema}",  # the revision, the partitions and views of stage4
        "-f",
        str(partial),
        "--dbname",
        clean_url,
    ]
    # pg_dump creates the file with our umask: make it exist, private, before it writes
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    partial.chmod(0o600)
    try:  # interrupted, run() kills pg_dump
        out = subprocess.run(
            cmd, capture_output=True, text=True, env=env, check=False, preexec_fn=die_with_parent
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.chmod(0o600)
    if out.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = redact(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed")
        raise BackupError(f"pg_dump failed: {reason}")
    partial.rename(target)
    _written.append((target, time.time()))
    return target


def clean_partials(folder: Path) -> list[Path]:
    """Delete the ``.partial`` dumps of processes of this host that are gone (killed
    mid-dump); a live one's, or another host's, stays. Returns what was deleted."""
    from stage4.rollout.status import alive

    gone = []
    for path in folder.glob("stage4-*.partial") if folder.is_dir() else []:
        m = _PARTIAL.match(path.name)
        if m and m.group(2) == socket.gethostname() and not alive(int(m.group(3)), m.group(2)):
            path.unlink(missing_ok=True)
            gone.append(path)
    return gone


def backups(folder: Path) -> list[Path]:
    """stage4's dumps in ``folder``, oldest first (their names carry the time)."""
    found = folder.glob("stage4-*-*.dump") if folder.is_dir() else []
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def prune(folder: Path, keep: int, mine: Path | None = None) -> list[Path]:
    """Delete all but the ``keep`` newest dumps in ``folder`` (never ``mine``); return what
    was deleted. Only stage4's own files (``stage4-<revision>-<time>.dump``) are considered."""
    if keep < 1:
        raise BackupError(f"--keep-backups must be at least 1, not {keep}")
    found = [p for p in backups(folder) if p != mine]
    gone = found[: max(0, len(found) - (keep - (mine is not None)))]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def retain(folder: Path, keep: int, since: float) -> tuple[Path | None, list[Path]]:
    """After a rollout begun at ``since`` (epoch seconds): the dump this process wrote in
    ``folder`` since then (None when none), and the older dumps deleted beyond the ``keep``
    newest, whatever the outcome. Without a dump of its own, nothing is deleted: a run
    refused before its backup (another rollout holds the lock) must not thin out the
    backups of the others."""
    mine = [p for p, at in _written if at >= since and p.parent == folder and p.is_file()]
    if not mine:
        return None, []
    return mine[-1], prune(folder, keep, mine[-1])


def restore_command(path: str | Path, url: str, schema: str = "public") -> str:
    """One shell line that restores a dump into a new database ``<db>_restored`` next to
    the original (password hidden: PGPASSWORD supplies it, or the embedded cluster's
    passfile). Compare, then point the app at it or copy back what is missing.

    A new database, because a dump of one schema cannot be replayed over a half-migrated
    one; its extensions come first, and the schema entry is left out of the list (the
    new database has that schema already)."""
    from stage4.config import redact

    q = shlex.quote
    clean = split_password(url)[0]
    parts = urlsplit(clean)
    new = f"{parts.path.strip('/')}_restored"
    target = urlunsplit(parts._replace(path=f"/{new}"))
    ident = '"' + new.replace('"', '""') + '"'
    return redact(
        f"psql {q(clean)} -c {q(f'CREATE DATABASE {ident}')} && "
        f"psql {q(target)} -c 'CREATE EXTENSION postgis; CREATE EXTENSION btree_gist' && "
        f"pg_restore -l {q(str(path))} | grep -v {q(f' SCHEMA - {schema} ')} | "
        f"pg_restore -L /dev/stdin --no-owner --exit-on-error --single-transaction "
        f"-d {q(target)} {q(str(path))}"
    )
