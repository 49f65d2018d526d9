"""Query plans for the verdict: what PostgreSQL did for a query, and what changed after a step.

A NO-GO that says "Q5 slower" tells what, not why. The why is nearly always the plan:
an index scan became a parallel append over partitions, a bitmap scan a sequential
one. ``explain`` runs ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` once (after the timed
rounds, so its own cost never enters a latency); ``compact`` turns the JSON into a few
lines a report can hold (node types, index and relation names, rows, buffers);
``headline`` names a plan's access path in a phrase, and ``describe_change`` compares
two of them ("Index Scan using geometrias_geom_gist → Parallel Append over 10
partitions"). Pure functions over the JSON but ``explain``.

An RPC declared with ``SET search_path`` (ours are: nothing can be shadowed through the
path) is never inlined by the planner: its plan is one Function Scan. For a geo read whose
live body is a query planned per call (``ddl.functions.per_call``), ``sql_of`` gives that
query with the call's arguments, and its plan is the one shown; other bodies show the call.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stage4.plumbing.db import Session

Plan = dict[str, Any]
# nodes that only pass rows on: a headline looks through them to the access path
_PASS = {
    "Limit",
    "Sort",
    "Incremental Sort",
    "Aggregate",
    "Gather",
    "Gather Merge",
    "Result",
    "Unique",
    "Materialize",
    "Memoize",
    "WindowAgg",
    "Hash",
    "SetOp",
    "ProjectSet",
    "Subquery Scan",
    "Group",
}
_APPEND = {"Append", "Merge Append"}


def explain(conn: Any, sql: str, params: Mapping[str, Any] | None = None) -> Plan:
    """``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` of one query: the root node, with the
    planning and execution times. ANALYZE runs the query: the caller's transaction is
    rolled back after (a read-only workload changes nothing, but a write would)."""
    row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params).fetchone()[0]
    doc = (json.loads(row) if isinstance(row, str) else row)[0]
    plan = dict(doc["Plan"])
    plan["Planning Time"] = doc.get("Planning Time")
    plan["Execution Time"] = doc.get("Execution Time")
    return plan


def sql_of(conn: Any, query: Any, params: Mapping[str, Any] | None = None) -> str:
    """What to explain for a workload query: the live body's query of a geo read's RPC
    (``ddl.functions.query_of``; an argument the call leaves out of ``params`` takes its
    default), else what the app sends."""
    from stage4.config import settings
    from stage4.ddl import functions

    s = settings()
    fn = next((f for f in functions.baseline(s) if f"{f.schema}.{f.name}(" in query.sql), None)
    if fn is None or not query.rpc:
        return query.sql
    row = conn.execute(
        "SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(%s)", (fn.identity,)
    ).fetchone()
    given = None if params is None else set(params)
    return (functions.query_of(row[0], fn.args, given) if row else None) or query.sql


def walk(plan: Plan, depth: int = 0) -> Iterator[tuple[int, Plan]]:
    """Every node, depth first, with its depth."""
    yield depth, plan
    for child in plan.get("Plans", []):
        yield from walk(child, depth + 1)


def label(node: Plan) -> str:
    """``Parallel Index Scan using idx on rel``, ``Append over 10 partitions``."""
    kind = node.get("Node Type", "?")
    if node.get("Parallel Aware") and not kind.startswith("Parallel"):
        kind = f"Parallel {kind}"
    if node.get("Node Type") in _APPEND:
        children = len(node.get("Plans", []))
        return f"{kind} over {children} partition{'s' if children != 1 else ''}"
    if node.get("Index Name"):
        kind += f" using {node['Index Name']}"
    if node.get("Relation Name") and "Index Name" not in node:
        kind += f" on {node['Relation Name']}"
    elif node.get("Function Name"):
        kind += f" on {node['Function Name']}"
    return kind


def compact(plan: Plan, limit: int = 12) -> list[str]:
    """At most ``limit`` lines, one per node: label, actual rows (× loops), buffers."""
    lines = []
    for depth, node in walk(plan):
        rows = node.get("Actual Rows")
        loops = node.get("Actual Loops", 1)
        figures = [] if rows is None else [f"rows {rows}" + (f"×{loops}" if loops != 1 else "")]
        hit, read = node.get("Shared Hit Blocks"), node.get("Shared Read Blocks")
        if hit is not None:
            figures.append(f"buffers hit {hit}" + (f" read {read}" if read else ""))
        lines.append("  " * depth + label(node) + (f" ({', '.join(figures)})" if figures else ""))
    if len(lines) > limit:
        lines = [*lines[: limit - 1], f"… {len(lines) - limit + 1} more nodes"]
    return lines


def headline(plan: Plan) -> str:
    """The access path in a phrase: the first node below those that only pass rows on;
    for an append, how its partitions are read; for a join, its inputs' access paths
    joined by " + "."""
    node = _through(plan)
    kind = node.get("Node Type", "")
    if kind in _APPEND:  # "Append over 10 partitions (Index Scan ×9, Seq Scan ×1)"
        reads = Counter(_kind(_through(child)) for child in node.get("Plans", []))
        return label(node) + f" ({', '.join(f'{k} ×{n}' for k, n in reads.items())})"
    if kind == "Bitmap Heap Scan":  # the index is in the bitmap nodes below it
        used = dict.fromkeys(n["Index Name"] for _, n in walk(node) if n.get("Index Name"))
        return label(node) + (f" via {' + '.join(used)}" if used else "")
    if kind in _APPEND or "Scan" in kind or not node.get("Plans"):
        return label(node)
    return " + ".join(dict.fromkeys(headline(child) for child in node["Plans"]))


def _through(node: Plan) -> Plan:
    while node.get("Node Type") in _PASS and len(node.get("Plans", [])) == 1:
        node = node["Plans"][0]
    return node


def _kind(node: Plan) -> str:
    kind = node.get("Node Type", "?")
    return f"Parallel {kind}" if node.get("Parallel Aware") else kind


def describe_change(before: Plan, after: Plan) -> str | None:
    """ "<before's access path> → <after's>", or None when the access path is the same."""
    a, b = headline(before), headline(after)
    return None if a == b else f"{a} → {b}"


def buffers(plan: Plan) -> int:
    """Shared buffers the root touched (hit + read): what the query cost in pages."""
    return int(plan.get("Shared Hit Blocks") or 0) + int(plan.get("Shared Read Blocks") or 0)


def of_workload(db: str | Session, seed: int = 42) -> dict[str, Plan]:
    """One plan per workload query, for the first parameter set the bench times it with;
    in a transaction rolled back after."""
    from stage4.config import settings
    from stage4.measure import workload
    from stage4.plumbing.db import lend

    s = settings()
    out: dict[str, Plan] = {}
    with lend(db) as conn:
        anchors = workload.sample_anchors(conn, s, seed)
        if not anchors.features:
            return out
        for qid, query in workload.as_sent(conn, s, workload.queries(s)).items():
            params = workload.parameters(qid, anchors, 1, seed)[0]
            out[qid] = explain(conn, sql_of(conn, query, params), params)
        conn.rollback()
    return out


def summarise(now: Mapping[str, Plan], before: Mapping[str, Plan]) -> dict[str, dict]:
    """What a step record keeps per query: headline, compact form, change since ``before``."""
    return {
        qid: {
            "headline": headline(plan),
            "compact": compact(plan),
            "change": describe_change(before[qid], plan) if qid in before else None,
            "execution_ms": plan.get("Execution Time"),
        }
        for qid, plan in now.items()
    }


def report_lines(step_plans: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """REPORT.md lines for one step: each query's access path (and its change), then the
    compact plans in a collapsed block."""
    if not step_plans:
        return []
    lines = []
    for qid, p in step_plans.items():
        change = f" (changed: {p['change']})" if p.get("change") else ""
        lines.append(f"- plan {qid}: {p['headline']}{change}")
    lines += [
        "",
        "<details><summary>plans (EXPLAIN ANALYZE, BUFFERS, once after the timed rounds)</summary>",
        "",
        "```",
    ]
    for qid, p in step_plans.items():
        lines += [f"{qid}:", *(f"  {line}" for line in p["compact"])]
    return [*lines, "```", "", "</details>"]
