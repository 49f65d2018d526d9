"""Outside the optimisation units, the revision files and the tests, no Python module names
an optimisation's revision by its id: generic code asks the registry
(``stage4.optimisations``: the unit that declares a capability, ``revisions()``,
``rebuilder()``…) or ``migrations.chain()`` for the first and last revision.

Every string constant is read with ``ast`` (f-strings' fixed parts included, docstrings and
comments are not constants that code acts on: docstrings are skipped). A constant equal to
``opt1`` … ``opt5`` in any case (``"opt1"``, ``metrics.get("OPT1")``) is a hit. The first
revision's id, ``schema``, is exempt: the same word is a config key (``s.schema``), a SQL
word and a label everywhere, so it cannot be told from the revision by its text. No
database is needed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXEMPT = ("src/stage4/optimisations/", "alembic/versions/", "tests/")
REVISION_ID = re.compile(r"opt[1-5]", re.IGNORECASE)


def scanned() -> list[Path]:
    """Every .py the rule covers: src/, benchmarks/ and alembic/ (env.py), minus EXEMPT."""
    files = [p for d in ("src", "benchmarks", "alembic") for p in (ROOT / d).rglob("*.py")]
    return sorted(p for p in files if not p.relative_to(ROOT).as_posix().startswith(EXEMPT))


def docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, kinds)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }


def hits(source: str, filename: str) -> list[str]:
    """``file:line: 'constant'`` for every constant naming an optimisation's revision."""
    tree = ast.parse(source, filename=filename)
    skip = docstrings(tree)
    found = [
        (n.lineno, f"{filename}:{n.lineno}: {n.value!r}")
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and id(n) not in skip
        and REVISION_ID.fullmatch(n.value)
    ]
    return [hit for _, hit in sorted(found)]


def test_the_scan_covers_the_generic_modules_and_the_benchmarks():
    names = {p.relative_to(ROOT).as_posix() for p in scanned()}
    assert {"src/stage4/measure/report.py", "benchmarks/scale.py", "alembic/env.py"} <= names
    assert not any(n.startswith(EXEMPT) for n in names)


def test_the_scan_finds_an_id_and_lets_the_word_schema_pass():
    source = '''"""Docstring naming opt1."""
x = metrics.get("OPT1")
y = {"schema": 1, "opt5": 2}
z = f"{a}opt3{b}"
w = "opt1 recreates the table"
'''
    assert hits(source, "m.py") == ["m.py:2: 'OPT1'", "m.py:3: 'opt5'", "m.py:4: 'opt3'"]


@pytest.mark.parametrize("path", scanned(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_names_an_optimisation_revision(path):
    found = hits(path.read_text(), path.relative_to(ROOT).as_posix())
    assert found == [], "revision ids named outside the units (ask stage4.optimisations): " + (
        "; ".join(found)
    )


def test_the_registry_answers_what_generic_code_asked_by_id():
    """What report, freshness, pre-flight and the benchmarks ask instead of naming ids."""
    from stage4 import optimisations
    from stage4.measure import report
    from stage4.measure.workload import TITLES
    from stage4.plumbing import migrations

    revs = optimisations.revisions()
    assert migrations.chain()[1:] == revs
    assert optimisations.rebuilder(revs) == "opt1"
    assert optimisations.rebuilder(revs[1:]) is None
    assert optimisations.staleness(migrations.chain()[0]) is None
    budgets = {rev: optimisations.staleness(rev) for rev in revs}
    assert all(b == {} for b in budgets.values()), budgets  # nothing in the chain is stale
    claims = optimisations.claims()
    assert [rev for rev, _ in claims] == ["opt1", "opt5"]
    for _, figures in claims:
        assert set(figures) <= set(report.OVERALL_FIGURES) | set(TITLES), figures


@pytest.mark.parametrize("path", sorted((ROOT / "alembic" / "versions").glob("*.py")),
                         ids=lambda p: p.stem)  # fmt: skip
def test_a_revision_with_a_unit_leaves_its_staleness_to_the_unit(path):
    tree = ast.parse(path.read_text())
    names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Name)}  # fmt: skip
    assert "STALENESS" not in names, f"{path.name}: declare STALENESS in its unit"


def test_the_first_revision_is_created_not_gated_under_its_own_name(db_url, tmp_path):
    """The gate knows the first revision from the chain, not by its id."""
    from stage4.plumbing import migrations
    from stage4.rollout import gate

    opts = gate.GateOptions(backup=False, reports_dir=tmp_path / "reports")
    rollout = gate.upgrade(db_url, "schema", opts)
    assert [(st.revision, st.verdict) for st in rollout.steps] == [
        ("schema", "GO (reference schema, not gated)")
    ]
    assert rollout.outcome == "GO: at schema"
    assert migrations.current(db_url) == "schema"
