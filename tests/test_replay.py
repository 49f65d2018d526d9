"""The replayed state of a revision (the chain run in a scratch database on an empty copy of
the table) as what `stage4 drift` compares with and what `stage4 plan` diffs; the fallback
to the record or the promises when the chain cannot be replayed. Real PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from typer.testing import CliRunner

from stage4 import cli, optimisations
from stage4.catalog import drift
from stage4.config import settings
from stage4.optimisations import search_matview
from stage4.plumbing import migrations

runner = CliRunner()
ROOT = migrations.ROOT
GIST_GONE = "index public.geometrias_geom_gist on public.geometrias: missing"
SEARCH = (
    "function public.buscar_geometrias(termo text, min_lon double precision, min_lat double "
    "precision, max_lon double precision, max_lat double precision, limite integer)"
)
READER, READER_PASSWORD = "replay_reader", "replay-reader-pw"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch) -> Path:
    """Each test replays afresh: its own stage4 home, where the replays are cached."""
    home = tmp_path / "home"
    monkeypatch.setenv("STAGE4_HOME", str(home))
    return home


def _sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def _drift(url: str, *args: str):
    return runner.invoke(cli.app, ["--database-url", url, "drift", *args])


def _scratch_left(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'stage4_replay_%'")
        return [r[0] for r in rows]


@pytest.mark.slow
def test_plain_alembic_then_a_dropped_gist_index_is_drift(db_url: str, _own_cache) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "-x", f"url={db_url}", "upgrade", "schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with psycopg.connect(db_url) as conn:  # no stage4 record: alembic alone ran
        assert conn.execute("SELECT to_regclass('benchmarking.catalog_records')").fetchone() == (
            None,
        )
    clean = _drift(db_url)
    assert (clean.exit_code, clean.output) == (0, "no drift (the replay of schema)\n")
    _sql(db_url, "DROP INDEX public.geometrias_geom_gist")
    result = _drift(db_url)
    assert result.exit_code == 1, result.output
    assert result.output == f"1 difference(s) from the replay of schema:\n  {GIST_GONE}\n"
    assert list((_own_cache / "replay").glob("schema-*.json")), "the replay is cached"
    assert _scratch_left(db_url) == []


@pytest.mark.slow
def test_at_opt3_a_dropped_search_index_is_drift(seeded_url: str) -> None:
    migrations.upgrade(seeded_url, "opt3")
    assert drift.check(seeded_url).differences == []
    index = search_matview.index(settings()).qualified
    _sql(seeded_url, f"DROP INDEX {index}")
    result = _drift(seeded_url)
    assert result.exit_code == 1, result.output
    assert f"  index {index} on public.geometrias: missing" in result.output.splitlines()


@pytest.mark.slow
def test_at_opt3_a_changed_rpc_body_is_drift(seeded_url: str) -> None:
    migrations.upgrade(seeded_url, "opt3")
    with psycopg.connect(seeded_url) as conn:
        definition = conn.execute(
            "SELECT pg_get_functiondef('public.buscar_geometrias(text, double precision, double "
            "precision, double precision, double precision, integer)'::regprocedure)"
        ).fetchone()[0]
    edited = definition.replace("AS $function$\n", "AS $function$\n-- by hand\n", 1)
    assert edited != definition
    _sql(seeded_url, edited)
    found = drift.check(seeded_url)
    assert found.source == "the replay of opt3"
    assert found.managed == [f"{SEARCH}: body differs from the replay"]
    result = _drift(seeded_url)
    assert result.exit_code == 1, result.output


def _plan(url: str, *args: str):
    return runner.invoke(
        cli.app, ["--database-url", url, "plan", "--to", "opt5", "--since", "schema", *args]
    )


@pytest.mark.slow
def test_plan_leads_with_the_catalog_diff_on_one_screen(seeded_url: str) -> None:
    s = settings()
    result = _plan(seeded_url)
    assert result.exit_code == 0, result.output
    head, sep, sql = result.stdout.partition("-- upgrade schema -> opt5\n")
    assert sep and sql, result.stdout
    lines = head.splitlines()
    assert len(lines) <= 40, head
    assert lines[0].startswith("-- catalog schema -> opt5 ")
    assert all(line.startswith("--") for line in lines)
    created = [c.name for _, c in optimisations.creates(s, migrations.chain())]
    partitions = [
        n for n in created if re.fullmatch(rf"{s.own_schema}\.{s.table}_(p\d{{4}}|default)", n)
    ]
    views = [v.qualified for v in optimisations.views(s)]
    functions = [n.split("(")[0] for n in created if "(" in n]
    assert partitions and views and functions
    added = {line.split(":")[0].removeprefix("--   "): line for line in lines}
    for name in partitions:
        assert f" {name}," in added["added partitions (13)"] + ",", name
    for name in views:
        assert name in added[f"added materialized views ({len(views)})"], name
    for name in functions:
        assert f" {name}(" in added[f"added functions ({len(functions)})"], name
    assert "grants, policies" in head and "carried" in head
    assert "cron jobs not replayed" not in head  # the database has no pg_cron: none to run
    up, down = migrations.offline_plan("schema", "opt5")
    only_sql = _plan(seeded_url, "--sql")
    assert only_sql.exit_code == 0, only_sql.output
    assert (
        only_sql.stdout == f"-- upgrade schema -> opt5\n{up}\n-- rollback opt5 -> schema\n{down}\n"
    )
    assert head + sep + sql == result.stdout and sql.startswith(up)


@pytest.mark.slow
@pytest.mark.cron
def test_plan_names_the_cron_jobs_the_revisions_declare(cron_url: str) -> None:
    """pg_cron cannot run in a scratch database: the jobs are named as the units declare them."""
    result = _plan(cron_url)
    assert result.exit_code == 0, result.output
    head = result.stdout.partition("-- upgrade schema -> opt5\n")[0]
    (line,) = [x for x in head.splitlines() if "cron jobs added" in x]
    jobs = optimisations.jobs(settings(), migrations.chain())
    assert len(jobs) == 3 and all(f"{j.name} ({j.schedule}, {rev})" in line for rev, j in jobs)
    assert "pg_cron cannot run in a scratch database" in line


@pytest.fixture
def reader_url(seeded_url: str):
    """``seeded_url`` as a role that reads everything and may not create a database."""
    _sql(
        seeded_url,
        f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN "
        f"CREATE ROLE {READER} LOGIN NOCREATEDB PASSWORD '{READER_PASSWORD}'; END IF; END$$",
        f"GRANT pg_read_all_data TO {READER}",
    )
    parts = urlsplit(seeded_url)
    netloc = f"{READER}:{READER_PASSWORD}@{parts.hostname}:{parts.port}"
    yield urlunsplit(parts._replace(netloc=netloc))


def test_a_chain_that_cannot_replay_falls_back_to_the_record(seeded_url, reader_url) -> None:
    record_id = drift.record(seeded_url)
    _sql(seeded_url, "DROP INDEX public.geometrias_geom_gist")
    result = _drift(reader_url)
    assert result.exit_code == 1, result.output
    where = f"{READER}@{urlsplit(reader_url).hostname}:{urlsplit(reader_url).port}"
    warning = result.stderr.splitlines()
    assert len(warning) == 1, result.stderr
    assert re.fullmatch(
        rf"warning: cannot replay schema: role {READER} may not create a database on "
        rf"{re.escape(where)}/\w+ and no --scratch-url was given; compared with record "
        rf"{record_id} of schema, taken .* instead",
        warning[0],
    ), warning
    assert re.fullmatch(
        rf"1 difference\(s\) from record {record_id} of schema, taken [-\d]+ [:\d]+:\n"
        rf"  {re.escape(GIST_GONE)}\n",
        result.stdout,
    ), result.stdout
    scratch = _drift(reader_url, "--scratch-url", reader_url)
    assert f"may not create a database on --scratch-url {where}/" in scratch.stderr
    assert READER_PASSWORD not in result.output + scratch.output


def test_without_a_record_the_fallback_is_the_promises(reader_url) -> None:
    result = _drift(reader_url)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "no drift (the promises of schema (no record of schema kept on the way up))\n"
    )
    assert result.stderr.startswith("warning: cannot replay schema: role ")


def test_plan_without_a_replay_warns_and_prints_the_sql(reader_url) -> None:
    result = _plan(reader_url)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"warning: no catalog diff: role {READER} may not create ")
    assert result.stdout.startswith("-- upgrade schema -> opt5\n")


APP_OBJECTS = (
    "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN "
    "CREATE ROLE anon NOLOGIN; END IF; END$$",
    "GRANT SELECT ON public.geometrias TO anon",
    "ALTER TABLE public.geometrias ENABLE ROW LEVEL SECURITY",
    "CREATE FUNCTION public.e_escola(c text) RETURNS boolean LANGUAGE sql IMMUTABLE "
    "AS $$ SELECT c = 'escola' $$",
    "CREATE POLICY so_escolas ON public.geometrias FOR SELECT TO anon "
    "USING (public.e_escola(categoria))",
    "CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$",
    "CREATE TRIGGER geometrias_touch BEFORE UPDATE ON public.geometrias "
    "FOR EACH ROW EXECUTE FUNCTION public.touch()",
    "CREATE TABLE public.app_extra (id serial PRIMARY KEY, n integer DEFAULT 3)",
    "CREATE INDEX app_extra_n ON public.app_extra (n)",
    "CREATE PUBLICATION replay_pub FOR TABLE public.geometrias",
)


@pytest.mark.slow
def test_the_apps_own_objects_are_carried_into_the_replay_and_listed(seeded_url) -> None:
    """The app's grants, policy (calling a function of its own), trigger, other table and
    publication: at opt1 (a rebuilt, partitioned table) nothing the revisions manage
    differs from the replay, and what the app added is listed as its own."""
    _sql(seeded_url, *APP_OBJECTS)
    migrations.upgrade(seeded_url, "opt1")
    found = drift.check(seeded_url)
    assert found.source == "the replay of opt1"
    assert found.managed == [], found.managed
    own = "\n".join(found.own)
    for said in (
        "policy so_escolas of public.geometrias: not in the replay (added)",
        "function public.e_escola(c text): not in the replay (added)",
        "trigger geometrias_touch of public.geometrias: not in the replay (added)",
        "table public.app_extra: not in the replay (added)",
        "row level security False in the replay, True now",
    ):
        assert said in own, own


MAKER, MAKER_PASSWORD = "replay_maker", "replay-maker-pw"


def _as(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}"))


@pytest.mark.slow
def test_a_chain_run_by_a_role_that_is_not_a_superuser_is_no_drift(db_url: str) -> None:
    """The chain run by a role with CREATEDB only (it owns the database): PostGIS cannot be
    created in a scratch database of its own (the warning says so, the fallback holds);
    replayed by a superuser (``--scratch-url``), or compared by one, the objects that role
    owns live are no drift: the replay's role stands for each object's live owner."""
    with psycopg.connect(db_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
    _sql(
        db_url,
        f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{MAKER}') THEN "
        f"CREATE ROLE {MAKER} LOGIN CREATEDB NOSUPERUSER PASSWORD '{MAKER_PASSWORD}'; "
        "END IF; END$$",
        f'ALTER DATABASE "{name}" OWNER TO {MAKER}',
    )
    maker = _as(db_url, MAKER, MAKER_PASSWORD)
    migrations.upgrade(maker, "opt1")
    with psycopg.connect(db_url) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace IN "
            "('public'::regnamespace, 'stage4'::regnamespace) AND relname LIKE 'geometrias%'"
        ).fetchall()
    assert owners == [(MAKER,)]  # the chain's objects are the role's, not the superuser's

    alone = drift.check(maker)
    assert "extension postgis is missing there" in (alone.warning or ""), alone.warning
    assert not alone.drifted, alone.managed

    for url, scratch in ((maker, db_url), (db_url, None)):  # replayed by postgres
        found = drift.check(url, scratch_url=scratch)
        assert (found.source, found.warning) == ("the replay of opt1", None)
        assert found.differences == [], found.differences
    assert MAKER_PASSWORD not in repr(alone) + _drift(maker, "--scratch-url", db_url).output
    assert _scratch_left(db_url) == []


@pytest.mark.slow
def test_a_scratch_database_a_killed_replay_left_is_dropped(seeded_url: str) -> None:
    """One of a process of this host that is gone is dropped by the next replay; a running
    process's, and another host's, stay."""
    import os

    from stage4.catalog import replay

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead, tag = int(done.stdout), replay._host_tag()
    left = {
        "killed": f"stage4_replay_{dead}_{tag}_0badc0de",
        "running": f"stage4_replay_{os.getpid()}_{tag}_0badc0de",
        "elsewhere": f"stage4_replay_{dead}_{'0' * 8 if tag != '0' * 8 else '1' * 8}_0badc0de",
    }
    _sql(seeded_url, *(f'CREATE DATABASE "{n}" TEMPLATE template0' for n in left.values()))
    try:
        assert drift.check(seeded_url).source == "the replay of schema"
        assert sorted(_scratch_left(seeded_url)) == sorted([left["running"], left["elsewhere"]])
    finally:
        _sql(seeded_url, *(f'DROP DATABASE IF EXISTS "{n}"' for n in left.values()))


@pytest.mark.slow
def test_status_reads_the_cached_replay_and_creates_nothing(seeded_url: str, _own_cache, tmp_path):
    """`stage4 status` is read-only: without a cached replay it compares with the record and
    says how to build one; after `stage4 drift`, it reads the replay that one cached."""
    record_id = drift.record(seeded_url)
    args = ["--database-url", seeded_url, "status", "--reports-dir", str(tmp_path)]
    before = runner.invoke(cli.app, args)
    assert before.exit_code == 0, before.output
    assert re.search(
        rf"^drift: no drift \(record {record_id} of schema, taken [-\d]+ [:\d]+ "
        r"\(replay not cached: `stage4 drift` builds it\)\)$",
        before.stdout,
        re.M,
    ), before.stdout
    assert not (_own_cache / "replay").exists(), "status replayed nothing"
    assert _drift(seeded_url).exit_code == 0
    after = runner.invoke(cli.app, args)
    assert "\ndrift: no drift (the replay of schema)\n" in after.stdout, after.stdout


def test_an_added_object_under_a_name_no_revision_creates_is_the_apps_in_any_schema() -> None:
    """What the replay does not make is no managed change (listed, never refusing), in
    stage4's schema too; under a name a revision creates it is drift (and pre-flight names
    the collision when a pending step would create it)."""
    s = settings()

    def table(nsp: str, name: str) -> list:
        return [nsp, name, "r", "p", False, False, "", "", "", "", "", "postgres"]

    fn = ["stage4", "minha", "x integer", "CREATE FUNCTION …", "", "", False, ""]
    now = {"relations": [table("stage4", "notas"), table("stage4", "geometrias_p2029")]}
    assert drift.differences({}, {**now, "functions": [fn]}, s, "the replay") == [
        ("table stage4.geometrias_p2029: not in the replay (added)", False),
        ("table stage4.notas: not in the replay (added)", True),
        ("function stage4.minha(x integer): not in the replay (added)", True),
    ]


def test_the_cache_key_reads_the_revisions_the_units_and_the_ddl_helpers():
    """A changed unit or helper must miss the cached replay: the digest reads their files."""
    from stage4.catalog.replay import chain_sources

    names = {name for name, _ in chain_sources()}
    assert {"opt5_aggregate_matviews.py", "aggregates.py", "base.py", "counts.py"} <= names
    assert "gis_columns/online.py" in names  # a unit that is a package
