"""Catalog snapshot and data fingerprint: "is the database exactly as it was?".

The round-trip tests and the gate's NO-GO path both compare a snapshot taken
before a step with one taken after its rollback. A snapshot is plain data
(sections of sorted rows) so it diffs, serialises and compares by value. It
covers user schemas only: extension members (PostGIS, pg_cron), the
benchmarking schema and Alembic's version table are left out, and objects are
named, never identified by OID, since a rollback legitimately recreates them.
"""

from __future__ import annotations

from typing import Any

# Schemas never part of the app's state.
_SKIP = (
    "'pg_catalog', 'information_schema', 'pg_toast', 'cron', 'partman', 'topology', "
    "'tiger', 'tiger_data'"
)


def _scope(s_alias: str, bench_schema: str) -> str:
    return (
        f"{s_alias}.nspname NOT IN ({_SKIP}, '{bench_schema}') "
        f"AND {s_alias}.nspname NOT LIKE 'pg_temp%' AND {s_alias}.nspname NOT LIKE 'pg_toast%'"
    )


def _not_extension(oid: str, catalog: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
        f"AND d.objid = {oid} AND d.deptype = 'e')"
    )


def _queries(bench_schema: str) -> dict[str, str]:
    scope = _scope("n", bench_schema)
    rel = f"{scope} AND {_not_extension('c.oid', 'pg_class')} AND c.relname <> 'alembic_version'"
    return {
        "relations": f"""
            SELECT n.nspname, c.relname, c.relkind, c.relpersistence, c.relrowsecurity,
                   c.relforcerowsecurity, coalesce(c.reloptions::text, ''),
                   coalesce(pg_get_expr(c.relpartbound, c.oid), ''),
                   coalesce(pg_get_partkeydef(c.oid), ''),
                   coalesce(c.relacl::text, ''), coalesce(obj_description(c.oid, 'pg_class'), ''),
                   pg_get_userbyid(c.relowner)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {rel}""",
        "columns": f"""
            SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                   a.attnotnull, coalesce(pg_get_expr(ad.adbin, ad.adrelid), ''),
                   a.attidentity, a.attgenerated, a.attstorage,
                   coalesce(a.attcompression::text, ''), coalesce(a.attacl::text, ''),
                   coalesce(col_description(c.oid, a.attnum), '')
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
            WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
              AND {rel}""",
        "indexes": f"""
            SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid),
                   coalesce(obj_description(i.indexrelid, 'pg_class'), '')
            FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {rel}""",
        "constraints": f"""
            SELECT n.nspname, c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid),
                   coalesce(obj_description(k.oid, 'pg_constraint'), '')
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {rel}""",
        "functions": f"""
            SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
                   pg_get_functiondef(p.oid), coalesce(p.proacl::text, ''),
                   coalesce(obj_description(p.oid, 'pg_proc'), ''), p.prosecdef,
                   coalesce(array_to_string(p.proconfig, ','), '')
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE p.prokind IN ('f', 'p') AND {scope} AND {_not_extension("p.oid", "pg_proc")}""",
        "views": f"""
            SELECT n.nspname, c.relname, c.relkind, pg_get_viewdef(c.oid)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('v', 'm') AND {rel}""",
        "policies": f"""
            SELECT n.nspname, c.relname, p.polname, p.polcmd, p.polpermissive,
                   array_to_string(ARRAY(SELECT rolname FROM pg_roles
                                          WHERE oid = ANY(p.polroles) ORDER BY 1), ','),
                   coalesce(pg_get_expr(p.polqual, p.polrelid), ''),
                   coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
            FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {rel}""",
        "triggers": f"""
            SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT t.tgisinternal AND {rel}""",
        "sequences": f"""
            SELECT s.schemaname, s.sequencename, s.last_value, s.increment_by, s.data_type::text
            FROM pg_sequences s JOIN pg_namespace n ON n.nspname = s.schemaname
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
            WHERE {rel}""",
        "publications": """
            SELECT p.pubname, p.pubviaroot, p.pubinsert, p.pubupdate, p.pubdelete,
                   coalesce(string_agg(t.schemaname || '.' || t.tablename, ','
                            ORDER BY t.schemaname, t.tablename), '')
            FROM pg_publication p LEFT JOIN pg_publication_tables t ON t.pubname = p.pubname
            GROUP BY 1, 2, 3, 4, 5""",
        # settings of this database (all roles and none): a revision may carry one
        "database_settings": """
            SELECT coalesce(r.rolname, ''), c
            FROM pg_db_role_setting d LEFT JOIN pg_roles r ON r.oid = d.setrole,
                 unnest(d.setconfig) c
            WHERE d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        "schemas": f"""
            SELECT n.nspname, coalesce(n.nspacl::text, ''),
                   coalesce(obj_description(n.oid, 'pg_namespace'), '')
            FROM pg_namespace n WHERE {scope}""",
    }


def catalog(conn: Any, bench_schema: str = "benchmarking") -> dict[str, list[list[Any]]]:
    """The catalog sections, each a sorted list of rows (psycopg connection)."""
    snap: dict[str, list[list[Any]]] = {}
    for section, sql in _queries(bench_schema).items():
        snap[section] = sorted([_plain(v) for v in row] for row in conn.execute(sql).fetchall())
    has_cron = conn.execute("SELECT to_regclass('cron.job') IS NOT NULL").fetchone()[0]
    snap["cron_jobs"] = (
        sorted(
            [
                list(r)
                for r in conn.execute(
                    "SELECT jobname, schedule, command, database, username, active FROM cron.job"
                ).fetchall()
            ]
        )
        if has_cron
        else []
    )
    return snap


def data(
    conn: Any, bench_schema: str = "benchmarking", own_schema: str = "stage4"
) -> dict[str, list[Any]]:
    """Per table (not partitions: their parent covers them): row count and an order-free hash.

    Not stage4's own schema's tables: their rows are derived from the app's table (the
    nearest-features copy) and move with its writes; the version table is not data."""
    tables = conn.execute(
        f"""SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND c.relname <> 'alembic_version' AND n.nspname <> '{own_schema}'
              AND {_scope("n", bench_schema)}
              AND {_not_extension("c.oid", "pg_class")}"""
    ).fetchall()
    out: dict[str, list[Any]] = {}
    for (name,) in tables:
        out[name] = list(
            conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') "
                f"FROM (SELECT md5(t::text) AS h FROM {name} t) x"
            ).fetchone()
        )
    return out


def take(
    conn: Any, bench_schema: str = "benchmarking", own_schema: str = "stage4"
) -> dict[str, Any]:
    """Catalog and data together: what "exactly as before" compares."""
    return {
        "catalog": catalog(conn, bench_schema),
        "data": data(conn, bench_schema, own_schema),
    }


def without_app_writes(snap: dict[str, Any], table: str) -> dict[str, Any]:
    """``snap`` minus what the app's own writes move: the app table's rows and every
    sequence's last value. A rollback during live writes is compared this way; its rows are
    proved by the downgrade's exact "every row kept" check instead."""
    catalog = dict(snap.get("catalog", {}))
    catalog["sequences"] = [[*r[:2], None, *r[3:]] for r in catalog.get("sequences", [])]
    data = {k: v for k, v in snap.get("data", {}).items() if k != table}
    return {**snap, "catalog": catalog, "data": data}


def diff(before: dict[str, Any], after: dict[str, Any], limit: int = 20) -> list[str]:
    """Human-readable differences (``- row`` gone, ``+ row`` new), at most ``limit`` lines."""
    lines: list[str] = []
    for part in ("catalog", "data"):
        a, b = before.get(part, {}), after.get(part, {})
        for section in sorted(set(a) | set(b)):
            old, new = a.get(section, []), b.get(section, [])
            if isinstance(old, dict) or isinstance(new, dict) or part == "data":
                old_items = old if isinstance(old, dict) else {}
                new_items = new if isinstance(new, dict) else {}
                if part == "data":  # a table that is not there shows as None
                    old_items, new_items = {section: a.get(section)}, {section: b.get(section)}
                for key in sorted(set(old_items) | set(new_items)):
                    if old_items.get(key) != new_items.get(key):
                        lines.append(f"{part}.{key}: {old_items.get(key)} -> {new_items.get(key)}")
                continue
            olds = {repr(r) for r in old}
            news = {repr(r) for r in new}
            lines += [f"{section}: - {r}" for r in sorted(olds - news)]
            lines += [f"{section}: + {r}" for r in sorted(news - olds)]
    return lines[:limit] + ([f"… and {len(lines) - limit} more"] if len(lines) > limit else [])


def _plain(value: Any) -> Any:
    """JSON-friendly values (so snapshots can be stored in reports)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
