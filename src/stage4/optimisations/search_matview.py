"""opt3, the search index behind ``buscar_geometrias``: a GIN index on the table's own tsvector.

The index is on the expression the search RPC filters by (``ddl.functions.tsv``: the
same text, so the planner matches one with the other), on ``public.geometrias`` itself.
Nothing to keep in sync: PostgreSQL updates it in the writing transaction, so a row
committed is found by the next search, and row level security applies as on any read
of the table (the RPC reads the table, as at ``schema``).

The RPC is re-pointed to the same query in PL/pgSQL with ``plan_cache_mode =
force_custom_plan``: planned at each call with its arguments. A SQL function's body is
planned without them (PostgreSQL 15), and on the partitioned table the planner then
guesses a bbox of one row per partition and never uses the GIN; with the term and bbox
known it combines GIN and GiST (or takes the better one). Same signature, same query,
same rows. Only the baseline body is re-pointed: a body of the app's own is kept (the
revision says so). The previous definition is kept in the index's comment and
re-created exactly on downgrade.

Why an index and not an indexed view (a table of tsvector, bbox and centroid kept by
triggers): every write would pay a second row and its indexes, the table would need its
own grants and could not follow the table's RLS (a SECURITY INVOKER search reading it
would show every row's lexemes to anon), and the search would still join back for
``nome``. What such a table stores beyond the index, the tsvector ``ts_rank`` reads, saves
recomputing ``to_tsvector`` for the matching rows only.
"""

from __future__ import annotations

from dataclasses import replace

from stage4.config import Settings
from stage4.ddl import functions, literal
from stage4.ddl.cron import Job
from stage4.ddl.matviews import MatView
from stage4.ddl.online_index import OnlineIndex
from stage4.ddl.partitioning import partitions_sql
from stage4.optimisations.base import (
    Creates,
    Promise,
    Reference,
    Rewrite,
    copy_sql,
    creates_relation,
)

REVISION = "opt3"
# What the generic modules ask of every unit (``base.Unit``): none here.
REBUILDS_TABLE = False
STALENESS: dict[str, str] = {}
CLAIMS: dict[str, float] = {}
MARK = "stage4 opt3: the search RPC's tsvector, dropped on downgrade"
SAVED = "\n-- previous definition of buscar_geometrias, restored on downgrade --\n"
PLANNED_PER_CALL = "plan_cache_mode = force_custom_plan"


def index(s: Settings) -> OnlineIndex:
    """GIN on Q4's tsvector expression, on the app's table (every partition)."""
    return OnlineIndex(
        table=s.qualified_table,
        name=f"{s.table}_busca_gin",
        using=f"gin (({functions.tsv(s, None)}))",
        marker=MARK,
    )


def search(s: Settings) -> functions.Function:
    """Q4's baseline query as PL/pgSQL, planned at each call with its arguments."""
    body = functions.search(s).body.strip()
    return replace(
        functions.search(
            s, source=f"#variable_conflict use_column\nBEGIN\nRETURN QUERY\n{body};\nEND"
        ),
        language="plpgsql",
        settings=(PLANNED_PER_CALL,),
    )


def _is_baseline_sql(s: Settings) -> str:
    fn = functions.search(s)
    return (
        f"(SELECT btrim(prosrc, E' \\n') = {literal(fn.body.strip())} FROM pg_proc "
        f"WHERE oid = to_regprocedure('{fn.identity}'))"
    )


def is_baseline(bind, s: Settings) -> bool:
    """Is the live search RPC the baseline body (which opt3 re-points)?"""
    return bool(bind.exec_driver_sql(f"SELECT coalesce({_is_baseline_sql(s)}, false)").scalar())


def repoint_sql(s: Settings) -> str:
    """While the search RPC is the baseline body: its definition saved after the index's
    marker, then the RPC re-pointed (one DO block: online and in offline ``--sql`` alike)."""
    fn, ix = functions.search(s), index(s)
    return f"""DO $do$
BEGIN
  IF coalesce({_is_baseline_sql(s)}, false) THEN
    EXECUTE 'COMMENT ON INDEX {ix.qualified} IS '
      || quote_literal({literal(ix.marker + SAVED)} || pg_get_functiondef('{fn.identity}'::regprocedure));
    EXECUTE {literal(search(s).create_sql())};
  END IF;
END
$do$"""


def restore_sql(s: Settings) -> str:
    """Re-create the definition saved in the index's comment, if one is (one DO block)."""
    ix = index(s)
    head = ix.marker + SAVED
    return f"""DO $do$
DECLARE
  saved text := obj_description(to_regclass('{ix.qualified}'), 'pg_class');
BEGIN
  IF position({literal(head)} IN saved) = 1 THEN
    EXECUTE substr(saved, length({literal(head)}) + 1);
  END IF;
END
$do$"""


# ------------------------------------------------------------------ what the unit declares


def views(s: Settings) -> list[MatView]:
    """None: the index is the table's, kept by PostgreSQL."""
    return []


def promises(s: Settings) -> list[Promise]:
    ix, fn = index(s), functions.search(s)
    return [
        Promise(
            f"{ix.qualified}: GIN on the search tsvector, valid on every partition",
            f"SELECT coalesce((SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = "
            f"to_regclass('{ix.qualified}') AND i.indrelid = '{s.qualified_table}'::regclass), "
            "false)",
        ),
        Promise(
            "buscar_geometrias is planned at each call with its arguments",
            f"SELECT coalesce({literal(PLANNED_PER_CALL.replace(' ', ''))} = ANY(proconfig), "
            f"false) FROM pg_proc WHERE oid = to_regprocedure('{fn.identity}')",
            # only where opt3 re-pointed it (it saved the baseline definition)
            f"SELECT coalesce(position({literal(SAVED)} IN "
            f"obj_description(to_regclass('{ix.qualified}'), 'pg_class')) > 0, false)",
        ),
    ]


def repoints(s: Settings) -> dict[str, functions.Function]:
    """Q4's RPC, planned per call (``search``)."""
    return {"Q4": search(s)}


def jobs(s: Settings) -> list[Job]:
    """None: its step schedules nothing."""
    return []


def rewrites(s: Settings) -> dict[str, Rewrite]:
    """None: Q4 is an RPC, re-pointed by the revision itself."""
    return {}


def reference(conn, s: Settings, direction: str, scratch: str) -> Reference:
    """Up: the plain CREATE INDEX, rolled back. Down: the same index on a partitioned copy
    of the table in ``scratch``, dropped and committed."""
    ix = index(s)
    if direction == "up":
        return Reference((ix.create_sql(),))
    r = replace(s, schema=scratch)
    copy = replace(ix, table=r.qualified_table)
    setup = copy_sql(conn, s, r.qualified_table, "", partitions_sql(r, r.qualified_table, scratch))
    return Reference((f"DROP INDEX {copy.qualified}",), setup=(*setup, copy.create_sql()),
                     committed=True)  # fmt: skip


def creates(s: Settings) -> list[Creates]:
    """The GIN index; one of the table carrying the marker is a killed build's, which the
    step resumes."""
    ix = index(s)
    mine = (
        f"SELECT coalesce((SELECT position({literal(MARK)} IN obj_description(i.indexrelid, "
        f"'pg_class')) = 1 FROM pg_index i WHERE i.indexrelid = to_regclass("
        f"{literal(ix.qualified)}) AND i.indrelid = to_regclass({literal(s.qualified_table)})), "
        "false)"
    )
    return [creates_relation(ix.qualified, "the search index (GIN)", mine)]
