"""The package's import graph, read from the source with ``ast``.

Every ``import stage4.x`` / ``from stage4 import x`` / ``from stage4.x import y`` counts,
wherever it sits: a function-level (lazy) import is still a dependency, and a cycle through
one is a cycle a newcomer cannot see from the top of the file. So does
``importlib.import_module("stage4.…")``: with an f-string, every module its fixed prefix
can name. No database is needed.

Layers: the optimisation units (``stage4.optimisations.<unit>``, a module or a package whose
modules are the unit's) are named only by the registry (the package itself), by their own
revision file and by their own modules; every other module, the benchmarks included, learns
about them from the registry. ``stage4.ddl`` holds one helper per kind of object and knows
no optimisation. Neither layer imports the modules that measure or judge.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "stage4"
VERSIONS = ROOT / "alembic" / "versions"
BENCHMARKS = ROOT / "benchmarks"
REGISTRY = "stage4.optimisations"

# The DDL layer and the revisions describe objects; the measuring and judging layers sit above.
DDL_FORBIDDEN = {
    "stage4.measure.workload",
    "stage4.measure.bench",
    "stage4.measure.store",
    "stage4.measure.stats",
    "stage4.measure.report",
    "stage4.rollout.gate",
    "stage4.rollout.judging",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(node: ast.AST, here: str, is_package: bool, known: set[str]) -> set[str]:
    """The stage4 modules one import statement names (``from stage4 import x`` counts x
    when x is a module, else stage4 itself)."""
    out: set[str] = set()
    if isinstance(node, ast.Import):
        out |= {a.name for a in node.names if a.name.split(".")[0] == "stage4"}
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = here.split(".") if is_package else here.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target.split(".")[0] != "stage4":
            return out
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            out.add(sub if sub in known else target)
    elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            out.add(arg.value)
        elif isinstance(arg, ast.JoinedStr) and arg.values:
            head = arg.values[0]
            prefix = head.value if isinstance(head, ast.Constant) else ""
            if prefix.startswith("stage4."):
                out |= {m for m in known if m.startswith(prefix)}
    return out


def _is_import_module(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id == "import_module"


def file_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The stage4 modules one file imports (function-level imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    deps: set[str] = set()
    for node in ast.walk(tree):
        for dep in imported(node, name, path.name == "__init__.py", known):
            # ``import stage4.ddl.cron`` also runs stage4/__init__ and stage4/ddl/__init__;
            # keep the named module only (the registry's own imports are its edges).
            if dep in known and dep != name:
                deps.add(dep)
    return deps


@cache
def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: file_imports(path, name, known) for name, path in mods.items()}


def units() -> set[str]:
    """The optimisation units: every module or package directly in the registry's package
    but its shared types."""
    return {
        m
        for m in modules()
        if m.startswith(REGISTRY + ".")
        and m.count(".") == REGISTRY.count(".") + 1
        and m != f"{REGISTRY}.base"
    }


def unit_of(module: str) -> str | None:
    """The unit ``module`` belongs to (a unit that is a package owns its modules), or None."""
    head = ".".join(module.split(".")[: REGISTRY.count(".") + 2])
    return head if head in units() else None


def units_named(deps: set[str]) -> set[str]:
    """The units some of ``deps`` belong to."""
    return {u for d in deps if (u := unit_of(d))}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_the_source():
    edges = graph()
    # A few edges that exist, so an empty graph (a parsing slip) cannot pass the checks below.
    assert "stage4.errors" in edges["stage4.config"]
    assert "stage4.ddl.privileges" in edges["stage4.ddl.partitioning"]
    assert "stage4.rollout.gate" in edges["stage4.cli.rollout"]
    assert (
        REGISTRY in edges["stage4.catalog.verify"] and REGISTRY in edges["stage4.measure.workload"]
    )
    assert f"{REGISTRY}.aggregates" in edges[REGISTRY]
    assert f"{REGISTRY}.aggregates" in revision_imports(VERSIONS / "opt5_aggregate_matviews.py")
    assert REGISTRY in file_imports(BENCHMARKS / "scale.py", "benchmarks.scale", set(modules()))
    assert len(units()) == 5
    assert unit_of(f"{REGISTRY}.gis_columns.online") == f"{REGISTRY}.gis_columns"


def test_import_module_with_an_f_string_names_every_module_of_its_prefix():
    known = {"stage4.ddl.cron", "stage4.ddl.table", "stage4.queries"}
    call = ast.parse('importlib.import_module(f"stage4.ddl.{name}")').body[0].value
    assert imported(call, "x", False, known) == {"stage4.ddl.cron", "stage4.ddl.table"}


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    found = cycles(graph())
    assert found == [], "import cycles (function-level imports included): " + "; ".join(
        " <-> ".join(c) for c in found
    )


# The folders, top to bottom: a module imports only from its own folder or one below
# (README, "Where the code lives"). The top-level modules beside them (config, errors,
# queries, progress) are the floor every folder stands on.
FLOORS = ["cli", "rollout", "catalog", "measure", "optimisations", "ddl", "plumbing", ""]
# Alembic driven from Python settles (vacuums) the views the registry declares, after a step.
UPWARD = {("stage4.plumbing.migrations", REGISTRY)}


def floor(name: str) -> int:
    parts = name.split(".")
    folder = parts[1] if len(parts) > 2 or name in (REGISTRY, "stage4.cli") else ""
    return FLOORS.index(folder)


def test_the_floors_name_every_folder():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders <= set(FLOORS), f"a folder without a floor: {sorted(folders - set(FLOORS))}"
    order = ["stage4.cli", "stage4.rollout.gate", "stage4.measure.bench", REGISTRY]
    order += ["stage4.ddl.table", "stage4.plumbing.db", "stage4.config"]
    assert [floor(m) for m in order] == sorted(floor(m) for m in order)
    assert len({floor(m) for m in order}) == len(order)


@pytest.mark.parametrize("name", sorted(modules()), ids=lambda m: m)
def test_a_module_imports_only_its_floor_or_below(name):
    up = {d for d in graph()[name] if floor(d) < floor(name) and (name, d) not in UPWARD}
    assert up == set(), f"{name} imports from a floor above it: {sorted(up)}"


@pytest.mark.parametrize(
    "name",
    sorted(m for m in modules() if m.startswith(("stage4.ddl.", f"{REGISTRY}."))),
    ids=lambda m: m,
)
def test_ddl_and_units_import_no_measuring_or_judging_module(name):
    assert set(modules()) >= DDL_FORBIDDEN, "a forbidden module was renamed: update the list"
    bad = graph()[name] & DDL_FORBIDDEN
    assert bad == set(), f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", sorted(set(modules()) - {REGISTRY}), ids=lambda m: m)
def test_only_the_registry_names_a_unit(name):
    """A generic module (migrations, verify, gate, judging, bench, workload, preflight…), a
    ``ddl`` helper or a unit asks the registry; it never imports a unit by name."""
    bad = units_named(graph()[name]) - {unit_of(name)}  # a unit's own modules may name it
    assert bad == set(), f"{name} imports the unit(s) {sorted(bad)}: ask {REGISTRY} instead"


@pytest.mark.parametrize("name", sorted(m for m in modules() if m.startswith("stage4.ddl.")))
def test_ddl_helpers_know_no_optimisation(name):
    bad = {d for d in graph()[name] if d == REGISTRY or d.startswith(REGISTRY + ".")}
    assert bad == set(), f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted(BENCHMARKS.rglob("*.py")), ids=lambda p: p.stem)
def test_benchmarks_name_no_unit(path):
    bad = units_named(file_imports(path, "benchmarks." + path.stem, set(modules())))
    assert bad == set(), f"{path.name} imports {sorted(bad)}: ask {REGISTRY} instead"


def revision_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    known = set(modules())
    return {d for node in ast.walk(tree) for d in imported(node, "revision", False, known)}


@pytest.mark.parametrize("path", sorted(VERSIONS.glob("*.py")), ids=lambda p: p.stem)
def test_revisions_import_no_measuring_or_judging_module(path):
    bad = {d for d in revision_imports(path) if d.removeprefix("stage4.") in DDL_FORBIDDEN}
    assert bad == set(), f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted(VERSIONS.glob("*.py")), ids=lambda p: p.stem)
def test_a_revision_imports_its_own_unit_only(path):
    """opt1 … opt5 each import the unit whose ``REVISION`` is theirs, and no other unit."""
    from stage4 import optimisations

    rev = ast.literal_eval(
        next(
            n.value
            for n in ast.parse(path.read_text()).body
            if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "revision"
        )
    )
    unit = optimisations.by_revision(rev)
    expected = set() if unit is None else {unit.__name__}
    assert units_named(revision_imports(path)) == expected
