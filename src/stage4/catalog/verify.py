"""What each revision promises, checked on the live database after it is applied.

The promises are the optimisation units' own (``stage4.optimisations``); revision
``schema`` promises the table. The gate treats a broken promise like a regression:
NO-GO, roll the step back.
"""

from __future__ import annotations

from stage4 import optimisations
from stage4.config import Settings
from stage4.optimisations import Promise
from stage4.plumbing import migrations
from stage4.plumbing.db import Session, lend


def promises(s: Settings, rev: str) -> list[Promise]:
    """What ``rev`` promises; nothing for an unknown revision."""
    if rev == migrations.chain()[0]:  # the reference schema: its table
        q = s.qualified_table
        return [Promise(f"{q} exists", f"SELECT to_regclass('{q}') IS NOT NULL")]
    return optimisations.promises(s, rev)


def revision(db: str | Session, s: Settings, rev: str) -> tuple[list[str], list[str]]:
    """(kept promises, broken promises) of ``rev`` on the database ``db`` (a URL or a session); a promise
    with a condition is checked only where the condition holds."""
    kept, broken = [], []
    with lend(db) as conn:
        for p in promises(s, rev):
            if p.condition and not conn.execute(p.condition).fetchone()[0]:
                continue
            (kept if conn.execute(p.sql).fetchone()[0] else broken).append(p.text)
    return kept, broken
