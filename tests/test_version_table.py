"""The revision lives in stage4's own schema, out of the API roles' reach.

On a database dressed as Supabase dresses it (default privileges in ``public`` granting
every new table to anon and authenticated), the version table must be neither readable
nor writable by an API role: one that could rewrite it could make stage4 believe the
database is at another revision. A table left in ``public`` by an earlier stage4 is moved
by the next migration, its API grants taken back, and the move back is one statement.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from fixtures_supabase import DEFAULTS, ROLES
from stage4.config import settings
from stage4.plumbing import migrations, version_table

S = settings()


def _where(url: str) -> tuple[bool, bool]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT to_regclass('{version_table.qualified()}') IS NOT NULL, "
            f"to_regclass('{version_table.legacy()}') IS NOT NULL"
        ).fetchone()


def _as(url: str, role: str, sql: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(f"SET ROLE {role}")
        conn.execute(sql)


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_an_api_role_can_neither_read_nor_rewrite_the_revision(db_url, role):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(DEFAULTS)
    migrations.upgrade(db_url, "schema")
    assert _where(db_url) == (True, False)
    for sql in (
        f"SELECT * FROM {version_table.qualified()}",
        f"UPDATE {version_table.qualified()} SET version_num = 'opt5'",
        f"DELETE FROM {version_table.qualified()}",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            _as(db_url, role, sql)
    assert migrations.current(db_url) == "schema"


def test_a_table_left_in_public_is_moved_with_its_api_grants_taken_back(seeded_url, capfd):
    own = S.own_schema
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(DEFAULTS)
        # as an earlier stage4 left it: in public, granted to the API roles by the defaults
        conn.execute(f"ALTER TABLE {own}.alembic_version SET SCHEMA public")
        conn.execute("GRANT ALL ON public.alembic_version TO anon, authenticated")
    assert migrations.current(seeded_url) == "schema"  # read where it is
    _as(seeded_url, "anon", "UPDATE public.alembic_version SET version_num = 'schema'")

    migrations.upgrade(seeded_url, "opt1")

    assert _where(seeded_url) == (True, False)
    assert migrations.current(seeded_url) == "opt1"
    said = capfd.readouterr().err
    assert f"moved public.alembic_version to {own}.alembic_version" in said
    assert version_table.move_back() in said
    with psycopg.connect(seeded_url) as conn:
        acl = conn.execute(
            f"SELECT coalesce(relacl::text, '') FROM pg_class "
            f"WHERE oid = '{own}.alembic_version'::regclass"
        ).fetchone()[0]
    assert "anon" not in acl and "authenticated" not in acl, acl

    # the move back is one statement, after which an older stage4 finds it where it was
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(version_table.move_back())
    assert _where(seeded_url) == (False, True)
    assert migrations.current(seeded_url) == "opt1"


def test_own_schema_may_not_be_a_schema_the_api_shows():
    from stage4.config import Settings
    from stage4.errors import ConfigError

    with pytest.raises(ConfigError, match="own_schema = 'public'"):
        Settings(own_schema="public")


@pytest.mark.slow
def test_status_names_a_version_table_left_in_public(seeded_url):
    from typer.testing import CliRunner

    from stage4.cli import app

    run = lambda: CliRunner().invoke(app, ["status"], env={"DATABASE_URL": seeded_url})  # noqa: E731
    assert "version table:" not in run().output
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {S.own_schema}.alembic_version SET SCHEMA public")
    out = run().output
    assert "version table: public.alembic_version" in out
    assert f"moves it to {S.own_schema}.alembic_version" in out
    assert "revision: schema" in out


def test_the_own_schema_is_closed_when_created_and_left_alone_after(db_url):
    own = S.own_schema
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(ROLES)
        # default privileges on new schemas, as a project may have set them
        conn.execute("ALTER DEFAULT PRIVILEGES GRANT USAGE ON SCHEMAS TO anon")
    try:
        migrations.upgrade(db_url, "schema")
        usage = f"SELECT has_schema_privilege('anon', '{own}', 'USAGE')"
        with psycopg.connect(db_url, autocommit=True) as conn:
            assert conn.execute(usage).fetchone()[0] is False
            # a USAGE a revision gives later (opt5's view readers) is not taken back by the
            # next migration: only that revision's downgrade takes it back
            conn.execute(f"GRANT USAGE ON SCHEMA {own} TO anon")
        migrations.upgrade(db_url, "opt1")
        with psycopg.connect(db_url) as conn:
            assert conn.execute(usage).fetchone()[0] is True
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ALTER DEFAULT PRIVILEGES REVOKE USAGE ON SCHEMAS FROM anon")
