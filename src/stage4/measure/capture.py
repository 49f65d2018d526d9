"""``stage4 workload capture``: the app's heaviest reads, as workload files to complete.

pg_stat_statements knows what the app really runs; its normalised text (constants
replaced by ``$1``, ``$2`` …) is written in the workload's pgbench script format with
``:p1``, ``:p2`` … in their place and one ``\\set pN TODO`` line each. The loader refuses
a ``TODO`` with the file and line, so nothing is measured until the user has given each
parameter a range or a value; a realistic value is the app's to give, not a guess.

Only reads are captured (top-level SELECT or WITH of this database, as the workload loader
takes them: a WITH that writes is left out), one file per statement text, not the catalog's
or stage4's own statements (its bench schema, alembic_version): a workload file is run
hundreds of times by every bench.
"""

from __future__ import annotations

import re
from pathlib import Path

from stage4.errors import ConfigError
from stage4.measure import sqltext

_EXTENSION = """
SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'"""

_TOP = """
SELECT query, calls, total_exec_time, mean_exec_time FROM {ns}.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND toplevel AND query ~* '^\\s*(select|with)\\s'
  AND query !~* '(\\mpg_|information_schema|alembic_version|\\m{bench}\\.)'
ORDER BY total_exec_time DESC
LIMIT %s"""

_PARAM = re.compile(r"\$(\d+)\b")
PREFIX = "captured_"


def top_statements(conn, top: int, bench_schema: str) -> list[tuple[str, int, float, float]]:
    """(query, calls, total ms, mean ms) of the ``top`` heaviest reads, heaviest first."""
    import psycopg
    from psycopg import sql

    row = conn.execute(_EXTENSION).fetchone()
    if row is None:
        loaded = "pg_stat_statements" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        raise ConfigError(
            "pg_stat_statements is not installed in this database: "
            + ("" if loaded else "add it to shared_preload_libraries, restart, then ")
            + "run CREATE EXTENSION pg_stat_statements"
        )
    text = _TOP.format(ns=sql.Identifier(row[0]).as_string(conn), bench=bench_schema)
    try:  # more than ``top``: one text may hold several entries (another role, search_path)
        found = conn.execute(text, (top * 4,)).fetchall()
        return distinct([r for r in found if _a_read(r[0])])[:top]
    except psycopg.errors.ObjectNotInPrerequisiteState as e:
        raise ConfigError(
            "pg_stat_statements is installed but not loaded: add it to "
            "shared_preload_libraries and restart PostgreSQL"
        ) from e


def _a_read(query: str) -> bool:
    """What the workload loader takes: a WITH that writes (``WITH n AS (UPDATE …)``) is not."""
    from stage4.measure.workload import not_a_read

    try:
        return not_a_read(sqltext.code(sqltext.tokens(query))) is None
    except sqltext.LexError:
        return False


def normalised(query: str) -> str:
    """The statement as code: comments out, spaces collapsed, unquoted words in lower case
    (literals and quoted identifiers kept)."""
    try:
        toks = sqltext.code(sqltext.tokens(query.strip().rstrip(";")))
    except sqltext.LexError:
        return " ".join(query.split())
    return " ".join(t.text.lower() if t.kind == "word" else t.text for t in toks)


def distinct(rows) -> list[tuple[str, int, float, float]]:
    """One entry per normalised text (pg_stat_statements keeps one per role, database and
    search_path): calls and time summed, heaviest first."""
    merged: dict[str, list] = {}
    for query, calls, total, _mean in rows:
        key = normalised(query)
        if key in merged:
            merged[key][1] += calls
            merged[key][2] += total
        else:
            merged[key] = [query, calls, total]
    out = [(q, c, t, t / c if c else 0.0) for q, c, t in merged.values()]
    return sorted(out, key=lambda r: -r[2])


def as_script(query: str, calls: int, total_ms: float, mean_ms: float) -> str:
    """One statement of pg_stat_statements in the workload's script format."""
    params = sorted({int(n) for n in _PARAM.findall(query)})
    body = _PARAM.sub(lambda m: f":p{m.group(1)}", query.strip().rstrip(";"))
    head = [
        f"-- captured from pg_stat_statements: {calls} calls, mean {mean_ms:.2f} ms, "
        f"total {total_ms / 1000:.1f} s",
    ]
    if params:
        head += [
            "-- Replace each TODO with random(a, b) or a number, as the app sends them; a",
            "-- text or date parameter: write its value in place of :pN and drop its line.",
        ]
    return "\n".join([*head, *(f"\\set p{n} TODO" for n in params), body + ";", ""])


def write(rows, folder: Path) -> list[Path]:
    """Each statement as ``captured_NN.sql`` in ``folder``; never over an existing file."""
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(p.name for p in folder.glob(f"{PREFIX}*.sql"))
    if old:
        raise ConfigError(
            f"{folder} already holds {', '.join(old[:3])}{' …' if len(old) > 3 else ''}: "
            "choose another folder (--out) or move them away first"
        )
    paths = []
    for i, (query, calls, total, mean) in enumerate(rows, 1):
        path = folder / f"{PREFIX}{i:02d}.sql"
        path.write_text(as_script(query, calls, total, mean))
        paths.append(path)
    return paths
