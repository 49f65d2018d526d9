"""The app's own objects (policies, row level security, grants, comments, an extra index
or column) are carried: listed by drift, never a reason to refuse an upgrade; a
difference in what the revisions manage still refuses. Real database throughout."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from conftest import ANY_SPEED
from fixtures_supabase import ROLES
from stage4 import cli
from stage4.catalog import drift
from stage4.config import settings
from stage4.errors import PreflightError
from stage4.plumbing import migrations, seed
from stage4.rollout import gate

runner = CliRunner()
FAST = ANY_SPEED
APP_OWN = (
    "ALTER TABLE public.geometrias ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY so_escolas ON public.geometrias FOR SELECT TO anon USING (categoria = 'escola')",
    "GRANT SELECT ON public.geometrias TO anon",
    "COMMENT ON TABLE public.geometrias IS 'as escolas e o resto'",
    "CREATE INDEX geometrias_nome_app ON public.geometrias (nome)",
    "ALTER TABLE public.geometrias ADD COLUMN nota text",
)


def _sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def _anon_sees(url: str) -> list[int]:
    """The ids anon reads, through the policy."""
    with psycopg.connect(url) as conn:
        conn.execute("SET ROLE anon")
        return [r[0] for r in conn.execute("SELECT id FROM public.geometrias ORDER BY id")]


def _adopted(url: str, tmp_path) -> None:
    """`stage4 upgrade --to schema` (the gate records the catalog), then the app's rows,
    with some of them schools for the policy to pick."""
    _sql(url, ROLES)
    gate.upgrade(url, "schema", gate.GateOptions(reports_dir=tmp_path / "schema", **FAST))
    with psycopg.connect(url) as conn:
        seed.seed(conn, settings(), features=400, seed=7)
    _sql(url, "UPDATE public.geometrias SET categoria = 'escola' WHERE id % 3 = 0")


@pytest.mark.slow
def test_the_apps_own_objects_do_not_refuse_an_upgrade(db_url: str, tmp_path) -> None:
    _adopted(db_url, tmp_path)
    _sql(db_url, *APP_OWN)
    found = drift.check(db_url)
    assert found.source == "the replay of schema"
    assert not found.drifted and found.managed == []
    assert found.own == found.differences
    own = "\n".join(found.own)
    for said in (
        "policy so_escolas of public.geometrias: not in the replay (added)",
        "row level security False in the replay, True now",
        "index public.geometrias_nome_app on public.geometrias: not in the replay (added)",
        "column nota of public.geometrias: not in the replay (added)",
    ):
        assert said in own, own
    assert "grants " in own and "comment '' in the replay" in own, own

    url = ["--database-url", db_url]
    result = runner.invoke(cli.app, [*url, "drift"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "no drift (the replay of schema)", lines
    assert lines[1].startswith(f"the app's own, {len(found.own)} change(s) from the replay")
    assert "  policy so_escolas of public.geometrias: not in the replay (added)" in lines
    status = runner.invoke(cli.app, [*url, "status", "--reports-dir", str(tmp_path)])
    assert status.exit_code == 0, status.output
    assert "\ndrift: no drift (the replay of schema)" in status.output, status.output
    assert "\ndrift: the app's own, " in status.output, status.output

    before = _anon_sees(db_url)
    assert 0 < len(before) < 400, len(before)  # the policy, not the grant alone, decides
    rollout = gate.upgrade(db_url, "opt1", gate.GateOptions(reports_dir=tmp_path / "o1", **FAST))
    assert rollout.outcome.startswith("GO"), rollout.outcome
    assert migrations.current(db_url) == "opt1"
    assert any(p.startswith("the app's own, carried: policy so_escolas") for p in rollout.preflight)
    assert _anon_sees(db_url) == before
    assert drift.check(db_url).managed == []  # the app's own stay listed, apart


@pytest.mark.slow
def test_a_managed_index_dropped_still_refuses(db_url: str, tmp_path) -> None:
    _adopted(db_url, tmp_path)
    _sql(db_url, *APP_OWN[:3], "DROP INDEX public.geometrias_geom_gist")
    found = drift.check(db_url)
    assert found.managed == ["index public.geometrias_geom_gist on public.geometrias: missing"]
    assert found.own and found.drifted
    with pytest.raises(PreflightError) as refused:
        gate.upgrade(db_url, "opt1", gate.GateOptions(reports_dir=tmp_path / "o1", **FAST))
    said = str(refused.value)
    assert "index public.geometrias_geom_gist on public.geometrias: missing" in said
    assert "so_escolas" not in said and "row level security" not in said, said
    assert migrations.current(db_url) == "schema"
    result = runner.invoke(cli.app, ["--database-url", db_url, "drift"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("1 difference(s) from the replay of schema:"), result.output
    assert "the app's own, " in result.output


def test_a_dropped_policy_is_the_apps_and_a_dropped_column_is_not() -> None:
    """The classification alone, on two catalogs as ``snapshot.catalog`` gives them."""
    s = settings()
    col = ["public", "geometrias", "nome", "text", True, "", "", "", "x", "", "", ""]
    pol = ["public", "geometrias", "so_escolas", "r", True, "anon", "true", ""]
    found = drift.differences({"columns": [col], "policies": [pol]}, {}, s)
    assert found == [
        ("column nome of public.geometrias: missing", False),
        ("policy so_escolas of public.geometrias: missing", True),
    ]
    # stage4's own schema, or a column a revision creates, is never the app's
    gis = ["public", "geometrias", "area_m2", "double precision", *col[4:]]
    ours = ["stage4", "geometrias_p2020", "nome", *col[3:]]
    assert drift.differences({}, {"columns": [gis]}, s) == [
        ("column area_m2 of public.geometrias: not in the record (added)", False)
    ]
    assert drift.differences({"columns": [ours]}, {"columns": [[*ours[:-1], "memo"]]}, s) == [
        ("column nome of stage4.geometrias_p2020: comment '' in the record, 'memo' now", False)
    ]


@pytest.mark.slow
def test_an_index_and_a_column_added_to_the_partitioned_table_are_the_apps(
    seeded_url: str,
) -> None:
    """On the partitioned table they reach every partition (in stage4's schema): still the
    app's own; a partition of the table dropped is not."""
    migrations.upgrade(seeded_url, "opt1")
    drift.record(seeded_url)
    _sql(seeded_url, *APP_OWN[-2:])
    found = drift.check(seeded_url)
    assert found.managed == [] and len(found.own) > 2, found.differences
    assert any(d.startswith("column nota of stage4.geometrias_p2020") for d in found.own)
    _sql(seeded_url, "DROP TABLE stage4.geometrias_p2020")
    assert drift.check(seeded_url).managed == ["partition stage4.geometrias_p2020: missing"]
