"""The catalog as drift compares it: what one row of each section is, the live catalog,
the records of it, and the names the revisions create.

Below both ``drift`` (which compares) and ``replay`` (which builds the desired catalog):
each reads catalogs through here, and this module knows neither.
"""

from __future__ import annotations

import re
from typing import Any

from stage4.config import Settings, settings

# section: (what one row is, how many leading columns name it, what the others are)
SECTIONS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "schemas": ("schema", 1, ("grants", "comment")),
    "relations": (
        "relation",
        2,
        (
            "kind",
            "persistence",
            "row level security",
            "forced row level security",
            "storage options",
            "partition bound",
            "partition key",
            "grants",
            "comment",
            "owner",
        ),
    ),
    "columns": (
        "column",
        3,
        (
            "type",
            "not null",
            "default",
            "identity",
            "generated",
            "storage",
            "compression",
            "grants",
            "comment",
        ),
    ),
    "indexes": ("index", 2, ("table", "definition", "comment")),
    "constraints": ("constraint", 3, ("type", "definition", "comment")),
    "functions": ("function", 3, ("body", "grants", "comment", "security definer", "settings")),
    "views": ("view", 2, ("kind", "definition")),
    "policies": ("policy", 3, ("command", "permissive", "roles", "using", "with check")),
    "triggers": ("trigger", 3, ("definition", "enabled")),
    "sequences": ("sequence", 2, ("increment", "type")),
    "publications": ("publication", 1, ("via root", "insert", "update", "delete", "tables")),
    "database_settings": ("database setting", 2, ()),
    "cron_jobs": ("cron job", 1, ("schedule", "command", "database", "username", "active")),
}
KINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
    "f": "foreign table",
}
_INDEX_NAME = re.compile(r"INDEX (?:CONCURRENTLY )?(?:IF NOT EXISTS )?(\S+) ON ")
REACHED = "reached"  # the record's key saying how its revision was reached ("up")


def live(conn: Any, s: Settings | None = None) -> dict[str, list[list[Any]]]:
    """The catalog as drift compares it (``snapshot.catalog`` minus what rows move)."""
    from stage4.catalog import snapshot

    s = s or settings()
    cat = snapshot.catalog(conn, s.bench_schema)
    cat["sequences"] = [[nsp, name, inc, typ] for nsp, name, _last, inc, typ in cat["sequences"]]
    here = conn.execute("SELECT current_database()").fetchone()[0]
    cat["cron_jobs"] = [job for job in cat["cron_jobs"] if job[3] == here]
    return cat


def recorded(conn: Any, revision: str, s: Settings | None = None) -> tuple | None:
    """(record id, taken at, catalog) of the newest record of ``revision`` reached going
    up, or None. Read-only: a database without the table has no record."""
    s = s or settings()
    table = f"{s.bench_schema}.catalog_records"
    if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
        return None
    return conn.execute(
        f"SELECT record_id, taken_at, catalog FROM {table} WHERE revision = %s "
        f"AND catalog ->> '{REACHED}' = 'up' ORDER BY record_id DESC LIMIT 1",
        (revision,),
    ).fetchone()


def created_names(s: Settings) -> set[str]:
    """Qualified names of what any revision creates (``optimisations.creates``)."""
    from stage4 import optimisations
    from stage4.plumbing import migrations

    return {c.name for _, c in optimisations.creates(s, migrations.chain())}


def keyed(section: str, rows: list[list[Any]]) -> dict[tuple, tuple]:
    _, n, _ = SECTIONS[section]
    out = {}
    for row in rows:
        if section == "indexes":  # named by the index, not by its table
            nsp, table, definition, comment = row
            m = _INDEX_NAME.search(definition)
            row = [nsp, m.group(1) if m else definition, f"{nsp}.{table}", definition, comment]
        out[tuple(row[:n])] = tuple(row[n:])
    return out


def relation(section: str, key: tuple, old: dict, new: dict) -> tuple | None:
    """The (schema, relation) a row of ``section`` belongs to, if any."""
    if section in ("columns", "constraints", "policies", "triggers", "views", "sequences"):
        return key[:2]
    if section == "indexes":
        table = (old.get(key) or new.get(key))[0]
        return tuple(table.split(".", 1))
    return None
