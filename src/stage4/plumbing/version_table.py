"""Where Alembic keeps the database's revision: in stage4's own schema, out of the API's sight.

PostgREST exposes what the API schema (``public``) holds, and Supabase's default privileges
grant every new table there to ``anon`` and ``authenticated``: a version table in ``public``
is one any API client could rewrite, and with it what stage4 believes the database is. So
the table lives in ``[tool.stage4] own_schema`` (``stage4``), a schema no API role may use,
as Supabase's own CLI keeps its history in ``supabase_migrations``.

A database migrated where the table sat in ``public`` is moved by the next migration
(``stage4 upgrade``/``downgrade`` or ``alembic``), which says so in one line; ``stage4
status`` names where the table is until then. The move back is one statement, given by
``MOVE_BACK``.
"""

from __future__ import annotations

from stage4.config import Settings, settings

TABLE = "alembic_version"
LEGACY_SCHEMA = "public"


def qualified(s: Settings | None = None) -> str:
    """``own_schema.alembic_version``."""
    return f"{(s or settings()).own_schema}.{TABLE}"


def legacy() -> str:
    return f"{LEGACY_SCHEMA}.{TABLE}"


def move_back(s: Settings | None = None) -> str:
    """The statement that puts the table back where an older stage4 kept it."""
    return f"ALTER TABLE {qualified(s)} SET SCHEMA {LEGACY_SCHEMA}"


def create_schema_sql(s: Settings | None = None) -> list[str]:
    """The own schema, created where absent and then closed to every role but its owner
    (default privileges on schemas may have granted it). Only when created: the USAGE a
    revision gives later (readers of opt5's views) is that revision's to take back."""
    own = (s or settings()).own_schema
    return [
        f"""DO $own$
DECLARE
    g record;
BEGIN
    IF to_regnamespace('{own}') IS NULL THEN
        CREATE SCHEMA {own};
        -- an explicit ACL from the start (the owner's), as a grant and its revoke leave it
        REVOKE ALL ON SCHEMA {own} FROM PUBLIC;
        FOR g IN
            SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC'
                                           ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who
            FROM pg_namespace n, aclexplode(n.nspacl) a
            WHERE n.nspname = '{own}' AND a.grantee <> n.nspowner
        LOOP
            EXECUTE 'REVOKE ALL ON SCHEMA {own} FROM ' || g.who;
        END LOOP;
        COMMENT ON SCHEMA {own} IS 'stage4''s own objects (revision table, partitions, views, '
                                   'routines), out of the API schema';
    END IF;
END
$own$"""
    ]


# Moves the table from public when it is only there, and takes back every privilege that
# the API schema's default privileges gave on it (anyone's but the owner's).
_MOVE = """
DO $move$
DECLARE
    g record;
BEGIN
    IF to_regclass('{own}.{table}') IS NULL AND to_regclass('{legacy}.{table}') IS NOT NULL THEN
        ALTER TABLE {legacy}.{table} SET SCHEMA {own};
    END IF;
    IF to_regclass('{own}.{table}') IS NOT NULL THEN
        FOR g IN
            SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC'
                                           ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who
            FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = '{own}.{table}'::regclass AND a.grantee <> c.relowner
        LOOP
            EXECUTE 'REVOKE ALL ON {own}.{table} FROM ' || g.who;
        END LOOP;
    END IF;
END
$move$"""


def ensure_sql(s: Settings | None = None) -> list[str]:
    """Statements that leave the version table (if any) in the own schema, closed."""
    s = s or settings()
    move = _MOVE.format(own=s.own_schema, table=TABLE, legacy=LEGACY_SCHEMA)
    return [*create_schema_sql(s), move]


def located(conn, s: Settings | None = None) -> str | None:
    """The qualified name of the version table that holds the revision, or None (psycopg)."""
    own, old = conn.execute(
        f"SELECT to_regclass('{qualified(s)}') IS NOT NULL, to_regclass('{legacy()}') IS NOT NULL"
    ).fetchone()
    return qualified(s) if own else legacy() if old else None


def revision(conn, s: Settings | None = None) -> str | None:
    """The revision recorded in the database (psycopg connection), or None."""
    table = located(conn, s)
    if table is None:
        return None
    row = conn.execute(f"SELECT version_num FROM {table}").fetchone()
    return row[0] if row else None
