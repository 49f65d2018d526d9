"""Who can see and change what: taken before and after a step, compared by the gate.

For each API role that exists (anon, authenticated, service_role and the roles named
in ``[tool.stage4] api_roles``), ``take`` records, in one REPEATABLE READ snapshot:

* its **rule** on the app table: may it read it (a column grant is enough), and which
  rows: all of them (no row level security, or the role bypasses it) or those its
  SELECT policies let through (the permissive ones OR'ed, the restrictive ones AND'ed,
  as PostgreSQL combines them), as one SQL expression;
* the columns it may read of every relation in the exposed schemas
  (``[tool.stage4] exposed_schemas``, default ``public``, plus the table's own and
  stage4's, whose partitions and views the table's rows reach);
* what it reads through every relation (table, partition, view, materialized view,
  foreign table) there, as that role (``SET LOCAL ROLE`` in a transaction that is rolled
  back, so row level security applies as it would to the API): a count, and for
  relations with the table's ``id`` column how many of those ids the table itself hides
  from that role;
* what it can change: INSERT, UPDATE, DELETE, TRUNCATE on those relations (column
  grants included), USAGE and UPDATE on their sequences (``nextval``/``setval``) and
  EXECUTE on their SECURITY DEFINER functions (which run with their owner's rights).

``take(..., since=before)`` also evaluates, where a role's rule on the table changed,
the rule it had before over the rows it reads now, in the same snapshot: the rows the
role reads that the old rule would not have shown it. The table is judged by rule, never
by counting rows at two moments: the app inserts and deletes rows while a step runs.

``wider`` compares two of them: a step that lets a role read the table it could not,
read rows of it its old rule hid, read a column it could not, read a row the table hides
from it through another relation, newly read a relation without ``id`` while the table
has RLS, or change something it could not, breaks the promise; each reason names the
role and the object.

Why counts: the ids never leave the server. A relation whose rows do not depend on the
role (a materialized view, a table without RLS) is read once and shared by the roles that
may read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stage4.config import Settings

if TYPE_CHECKING:
    from stage4.plumbing.db import Session

ROLES = ("anon", "authenticated", "service_role")
_KINDS = ("r", "p", "v", "m", "f")
_NAME = "quote_ident(n.nspname) || '.' || quote_ident(c.relname)"  # as Settings.qualified_table


@dataclass(frozen=True)
class Read:
    """What one role reads through one relation."""

    rows: int
    hidden: int | None = None  # of its ids, how many the table does not show the role


@dataclass
class Reach:
    """Every checked role's rule on the table, readable columns, reads (by role and
    relation) and writes (by role)."""

    table: str
    rls: bool  # the table has row level security enabled
    roles: list[str] = field(default_factory=list)
    # role -> the rows of the table it may read, as SQL ("true": all); None: not the table
    rules: dict[str, str | None] = field(default_factory=dict)
    columns: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # (relation, column)
    existing: set[tuple[str, str]] = field(default_factory=set)  # every column checked
    reads: dict[tuple[str, str], Read] = field(default_factory=dict)
    writes: dict[str, set[str]] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)  # roles we may not SET ROLE to
    # with ``since``: role -> rows it reads now that its rule in ``since`` did not show it
    # (an int), or why that rule could not be evaluated now (a str)
    beyond: dict[str, int | str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the gate's record of what was checked."""
        rels = len({rel for _, rel in self.reads})
        if not self.roles and not self.unchecked:
            return (
                f"who can see what: no API role ({', '.join(ROLES)}) exists here: nothing to check"
            )
        text = (
            f"who can see what: {', '.join(self.roles)} read and write no more than before "
            f"({rels} readable relations checked)"
            if self.roles
            else "who can see what: no API role could be checked"
        )
        if self.unchecked:
            text += f"; not checked (cannot SET ROLE): {', '.join(self.unchecked)}"
        return text


def roles(conn, s: Settings) -> list[str]:
    """The API roles that exist, in the order given."""
    wanted = list(dict.fromkeys([*ROLES, *s.api_roles]))
    found = {
        r
        for (r,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,)
        ).fetchall()
    }
    return [r for r in wanted if r in found]


def take(conn, s: Settings, since: Reach | None = None) -> Reach:
    """Record what every API role reads and writes now (psycopg connection, not in a
    transaction; everything is read in one REPEATABLE READ transaction, rolled back).
    ``since``: an earlier ``take``, whose rules are evaluated in this snapshot where they
    changed (``Reach.beyond``)."""
    table = s.qualified_table
    schemas = list(dict.fromkeys([*s.exposed_schemas, s.schema, s.own_schema]))
    idle = conn.info.transaction_status == _idle()
    with conn.transaction(force_rollback=True):
        if idle:  # one snapshot for every read (else: the caller's transaction)
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rls = conn.execute(
            "SELECT coalesce((SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(%s)),"
            " false)",
            (table,),
        ).fetchone()[0]
        reach = Reach(table=table, rls=rls)
        rels = _relations(conn, schemas)
        reach.existing = _columns(conn, schemas)
        shared: dict[tuple[str, bool], Read | None] = {}
        for role in roles(conn, s):
            if not conn.execute(
                "SELECT pg_has_role(current_user, %s, 'MEMBER')", (role,)
            ).fetchone()[0]:
                reach.unchecked.append(role)
                continue
            reach.roles.append(role)
            reach.rules[role] = _rule(conn, role, table)
            reach.columns[role] = _columns(conn, schemas, role)
            reach.writes[role] = _writes(conn, role, schemas)
            old = since.rules.get(role) if since is not None else None
            changed = old not in (None, "true", reach.rules[role])
            _reads(conn, role, table, rels, reach, shared, old if changed else None)
    return reach


# A policy applies to ``role`` when it is for SELECT or ALL and names PUBLIC or a role that
# ``role`` is a member of (policies are checked against every role the user belongs to).
_APPLIES = """p.polrelid = c.oid AND p.polcmd IN ('r', '*') AND p.polqual IS NOT NULL
  AND (0 = ANY(p.polroles)
       OR EXISTS (SELECT 1 FROM unnest(p.polroles) x WHERE x <> 0
                  AND pg_has_role(%(r)s, x, 'MEMBER')))"""


def _rule(conn, role: str, table: str) -> str | None:
    """The rows of ``table`` that ``role`` may read, as a boolean SQL expression over its
    columns: "true" for all of them (no RLS, or the role bypasses it or owns the table
    without FORCE), else PostgreSQL's own combination of its SELECT policies (no
    permissive one: no row); None when it may not read the table."""
    row = conn.execute(
        f"""SELECT has_any_column_privilege(%(r)s, c.oid, 'SELECT')
                 AND has_schema_privilege(%(r)s, c.relnamespace, 'USAGE'),
               NOT c.relrowsecurity OR a.rolsuper OR a.rolbypassrls
                 OR (pg_has_role(%(r)s, c.relowner, 'USAGE') AND NOT c.relforcerowsecurity),
               (SELECT string_agg('(' || pg_get_expr(p.polqual, p.polrelid) || ')', ' OR '
                                  ORDER BY p.polname)
                  FROM pg_policy p WHERE p.polpermissive AND {_APPLIES}),
               (SELECT string_agg('(' || pg_get_expr(p.polqual, p.polrelid) || ')', ' AND '
                                  ORDER BY p.polname)
                  FROM pg_policy p WHERE NOT p.polpermissive AND {_APPLIES})
           FROM pg_class c, pg_roles a WHERE c.oid = to_regclass(%(t)s) AND a.rolname = %(r)s""",
        {"r": role, "t": table},
    ).fetchone()
    if row is None or not row[0]:
        return None
    _, whole, permissive, restrictive = row
    if whole:
        return "true"
    if permissive is None:
        return "false"
    return f"({permissive})" + (f" AND {restrictive}" if restrictive else "")


def _columns(conn, schemas: list[str], role: str | None = None) -> set[tuple[str, str]]:
    """(relation, column) of every relation checked; with ``role``: those it may read."""
    may = (
        "true"
        if role is None
        else "has_column_privilege(%(r)s, c.oid, a.attnum, 'SELECT') "
        "AND has_schema_privilege(%(r)s, c.relnamespace, 'USAGE')"
    )
    rows = conn.execute(
        f"""SELECT {_NAME}, a.attname::text
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE n.nspname = ANY(%(s)s) AND c.relkind::text = ANY(%(k)s) AND {may}""",
        {"s": schemas, "k": list(_KINDS), "r": role},
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def _relations(conn, schemas: list[str]) -> list[tuple[str, str, bool, bool, str]]:
    """(name, relkind, has the id column, RLS enabled, owner) of every relation checked."""
    return [
        tuple(r)
        for r in conn.execute(
            f"""SELECT {_NAME}, c.relkind::text,
                  EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                          AND a.attname = 'id' AND NOT a.attisdropped
                          AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)),
                  c.relrowsecurity, pg_get_userbyid(c.relowner)::text
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = ANY(%s) AND c.relkind::text = ANY(%s)
           ORDER BY 1""",
            (schemas, list(_KINDS)),
        ).fetchall()
    ]


def _writes(conn, role: str, schemas: list[str]) -> set[str]:
    rows = conn.execute(
        f"""SELECT p.priv || ' on ' || {_NAME}
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p(priv)
           WHERE n.nspname = ANY(%(s)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
             AND (has_table_privilege(%(r)s, c.oid, p.priv)
                  OR (p.priv IN ('INSERT', 'UPDATE')
                      AND has_any_column_privilege(%(r)s, c.oid, p.priv)))
           UNION ALL
           SELECT p.priv || ' on sequence ' || {_NAME}
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           CROSS JOIN unnest(ARRAY['USAGE', 'UPDATE']) p(priv)
           WHERE n.nspname = ANY(%(s)s) AND c.relkind = 'S'
             AND has_sequence_privilege(%(r)s, c.oid, p.priv)
           UNION ALL
           SELECT 'EXECUTE on SECURITY DEFINER function ' || quote_ident(n.nspname) || '.'
                  || quote_ident(f.proname) || '(' || pg_get_function_identity_arguments(f.oid) || ')'
           FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
           WHERE n.nspname = ANY(%(s)s) AND f.prosecdef
             AND has_function_privilege(%(r)s, f.oid, 'EXECUTE')""",
        {"s": schemas, "r": role},
    ).fetchall()
    return {r[0] for r in rows}


def _reads(conn, role, table, rels, reach: Reach, shared, old_rule: str | None) -> None:
    """Read every relation ``role`` may SELECT from, as ``role``; with ``old_rule``, count
    the rows of the table it reads that this rule would not show it."""
    attrs = conn.execute(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (role,)
    ).fetchone()
    bypass = bool(attrs[0] or attrs[1])
    may = dict(
        conn.execute(
            f"""SELECT {_NAME}, has_any_column_privilege(%(r)s, c.oid, 'SELECT')
                  AND has_schema_privilege(%(r)s, c.relnamespace, 'USAGE')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE {_NAME} = ANY(%(n)s)""",
            {"r": role, "n": [r[0] for r in rels]},
        ).fetchall()
    )
    owner_of = {name: owner for name, _, _, _, owner in rels}
    # Does the role get every row of the table (no RLS, or it bypasses it)? Then a
    # relation that shows everyone the same rows shows this role the same as any other.
    table_rls = next((r[3] for r in rels if r[0] == table), False)
    sees_table_whole = bool(may.get(table)) and (
        not table_rls or bypass or owner_of.get(table) == role
    )
    with conn.transaction(force_rollback=True):  # the rollback to it resets the role
        conn.execute("SELECT set_config('role', %s, true)", (role,))
        for name, kind, has_id, rel_rls, owner in rels:
            if not may.get(name):
                continue
            free = not rel_rls or bypass or owner == role  # (FORCE aside: owners are not API roles)
            # The rows are the same for every role; so is the count of those the table hides
            # when the role sees all of the table (else that count is the role's own).
            same_for_all = (kind == "m" or (kind in ("r", "p") and free)) and (
                sees_table_whole or not has_id
            )
            key = (name, sees_table_whole)
            if same_for_all and key in shared:
                got = shared[key]
            else:
                got = _read(
                    conn,
                    name,
                    has_id and name != table,
                    table,
                    may.get(table, False),
                    sees_table_whole,
                )
                if same_for_all:
                    shared[key] = got
            if got is not None:
                reach.reads[(role, name)] = got
        if old_rule is not None and (role, table) in reach.reads:
            reach.beyond[role] = _beyond(conn, table, old_rule)


def _beyond(conn, table: str, rule: str) -> int | str:
    """Rows of ``table`` the current role reads (its policies now apply) that ``rule``
    does not let through (NULL lets nothing through, as in a policy); or why ``rule``
    cannot be evaluated now (it names a column or function that is gone...)."""
    try:
        with conn.transaction():
            return conn.execute(
                f"SELECT count(*) FROM {table} WHERE NOT coalesce(({rule}), false)"
            ).fetchone()[0]
    except _db_errors() as e:
        if isinstance(e, _fatal()):
            raise
        return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _read(conn, rel: str, has_id: bool, table: str, may_table: bool, whole: bool = False):
    """One relation as the current role (``has_id``: also how many of its ids the table
    hides from the role; none when it reads the ``whole`` table: an id the table lacks is
    a row the app deleted since a materialized view's refresh, not a hidden one); None
    when reading it fails (a view that reads what the role may not, a column grant
    without ``id``...)."""
    try:
        with conn.transaction():
            rows = conn.execute(f"SELECT count(*) FROM {rel}").fetchone()[0]
            if not has_id:
                return Read(rows)
            if not may_table:
                hidden = rows
            elif whole:
                hidden = 0
            else:  # a top-level NOT EXISTS: one anti-join, not a probe per row
                hidden = conn.execute(
                    f"SELECT count(*) FROM {rel} v WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {table} t WHERE t.id = v.id)"
                ).fetchone()[0]
            return Read(rows, hidden)
    except _db_errors() as e:
        if isinstance(e, _fatal()):
            raise
        return None


def _idle():
    from psycopg.pq import TransactionStatus

    return TransactionStatus.IDLE


def _db_errors():
    import psycopg

    return psycopg.errors.Error


def _fatal():
    import psycopg

    return (psycopg.errors.QueryCanceled, psycopg.OperationalError)


def wider(before: Reach, after: Reach) -> list[str]:
    """What ``after`` lets a role do that ``before`` did not: one line each, naming the role
    and the object (empty: nobody reads or writes more). ``after`` is taken ``since``
    ``before`` for a changed rule on the table to be judged by its rows."""
    out = [line for role in after.roles for line in _table_wider(before, after, role)]
    for (role, rel), now in sorted(after.reads.items()):
        if rel == after.table:
            continue
        was = before.reads.get((role, rel))
        if now.hidden is not None:
            # A relation that showed hidden rows before the step is open already (said by
            # ``already_open``): how many rows it shows moves with the app's writes.
            already = was.hidden if was is not None and was.hidden is not None else 0
            if now.hidden and not already:
                out.append(
                    f"{role} can read {now.hidden} rows through {rel} that {after.table} "
                    f"hides from it ({already} before)"
                )
        elif was is None and after.rls:
            out.append(
                f"{role} can now read {rel} ({now.rows} rows) while {after.table} "
                "has row level security"
            )
    for role in after.roles:
        had = before.columns.get(role, set())
        partly = {rel for rel, _ in had}  # a column of a relation already partly readable
        for rel, col in sorted(after.columns.get(role, set()) - had):
            if rel in partly and (rel, col) in before.existing:
                out.append(f"{role} can now read column {col} of {rel}")
    for role in after.roles:
        for what in sorted(after.writes.get(role, set()) - before.writes.get(role, set())):
            out.append(f"{role} can now {what}")
    return out


def _table_wider(before: Reach, after: Reach, role: str) -> list[str]:
    """The table by rule: may the role read it now and not before, or read rows its old
    rule did not show it (counted in ``after``'s snapshot, so rows the app wrote meanwhile
    are judged by the same rule as the rest)?"""
    rel, now = after.table, after.reads.get((role, after.table))
    old, new = before.rules.get(role), after.rules.get(role)
    if now is None or new is None or old in ("true", new):
        return []
    if old is None:
        return [f"{role} can now read {now.rows} rows of {rel}"] if now.rows else []
    beyond = after.beyond.get(role, f"not evaluated: {rel} was read without the old rule")
    if beyond == 0:
        return []
    if isinstance(beyond, int):
        return [
            f"{role} can read {beyond} rows of {rel} that its row level security did not "
            "show it before (the old policies evaluated on the rows it reads now)"
        ]
    return [
        f"{role}'s row level security on {rel} changed and the old policies cannot be "
        f"evaluated now ({beyond})"
    ]


def at(db: str | Session, s: Settings, since: Reach | None = None) -> Reach:
    """``take`` on a connection of its own (``db``: a URL), or the session's."""
    from stage4.plumbing.db import lend

    with lend(db, autocommit=True) as conn:
        return take(conn, s, since)


def already_open(reach: Reach) -> list[str]:
    """Rows the table hides that a role reads through another relation anyway: not a step's
    doing when they were there before it (e.g. RLS enabled after opt3 granted its view),
    but worth saying."""
    return [
        f"{role} reads {got.hidden} rows through {rel} that {reach.table} hides from it"
        for (role, rel), got in sorted(reach.reads.items())
        if got.hidden
    ]


def check(db: str | Session, s: Settings, before: Reach) -> tuple[list[str], list[str]]:
    """After a step: (the line saying what was checked, or what was open already; what widened)."""
    now = at(db, s, since=before)
    widened = wider(before, now)
    if widened:
        return [], widened
    old = [f"already before this step: {line}" for line in already_open(before)]
    return [now.summary(), *old], []
