"""Who can see and change what: taken before and after a step, compared by the gate.

For each API role that exists (anon, authenticated, service_role and the roles named
in ``[tool.stage4] api_roles``), ``take`` records

* what it can read through every relation (table, partition, view, materialized view,
  foreign table) in the exposed schemas (``[tool.stage4] exposed_schemas``, default
  ``public``, plus the table's own): the rows it gets as that role (``SET LOCAL ROLE``
  in a transaction that is rolled back, so row level security applies as it would to
  the API) — a count, and for relations with the table's ``id`` column an md5 of the
  id set and how many of those ids the table itself hides from that role;
* what it can change: INSERT, UPDATE, DELETE, TRUNCATE on those relations (column
  grants included), USAGE and UPDATE on their sequences (``nextval``/``setval``) and
  EXECUTE on their SECURITY DEFINER functions (which run with their owner's rights).

``wider`` compares two of them: a step that lets a role read a row the table hides
from it (through any relation), read more of the table itself, newly read a relation
without ``id`` while the table has RLS, or change something it could not, breaks the
promise; each reason names the role and the object.

Why hashes and counts: the ids never leave the server (at 20,000 rows a snapshot of
three roles reads each relation once per role that can read it). A relation whose
rows do not depend on the role (a materialized view, a table without RLS) is read
once and shared by the roles that may read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stage4.config import Settings

ROLES = ("anon", "authenticated", "service_role")
_KINDS = ("r", "p", "v", "m", "f")
_NAME = "quote_ident(n.nspname) || '.' || quote_ident(c.relname)"  # as Settings.qualified_table


@dataclass(frozen=True)
class Read:
    """What one role reads through one relation."""

    rows: int
    ids: str | None = None  # md5 of the sorted id set; None: the relation has no id column
    hidden: int | None = None  # of those ids, how many the table does not show the role


@dataclass
class Reach:
    """Every checked role's reads (by role and relation) and writes (by role)."""

    table: str
    rls: bool  # the table has row level security enabled
    roles: list[str] = field(default_factory=list)
    reads: dict[tuple[str, str], Read] = field(default_factory=dict)
    writes: dict[str, set[str]] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)  # roles we may not SET ROLE to

    def summary(self) -> str:
        """One line for the gate's record of what was checked."""
        rels = len({rel for _, rel in self.reads})
        text = (
            f"who can see what: {', '.join(self.roles) or 'no API role exists'} read and "
            f"write no more than before ({rels} readable relations checked)"
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


def take(conn, s: Settings) -> Reach:
    """Record what every API role reads and writes now (psycopg connection, not in a
    transaction; everything is read in one REPEATABLE READ transaction, rolled back)."""
    table = s.qualified_table
    schemas = list(dict.fromkeys([*s.exposed_schemas, s.schema]))
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
        shared: dict[tuple[str, bool], Read | None] = {}
        for role in roles(conn, s):
            if not conn.execute(
                "SELECT pg_has_role(current_user, %s, 'MEMBER')", (role,)
            ).fetchone()[0]:
                reach.unchecked.append(role)
                continue
            reach.roles.append(role)
            reach.writes[role] = _writes(conn, role, schemas)
            _reads(conn, role, table, rels, reach, shared)
    return reach


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


def _reads(conn, role, table, rels, reach: Reach, shared) -> None:
    """Read every relation ``role`` may SELECT from, as ``role``."""
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
                got = _read(conn, name, has_id, table, may.get(table, False), name == table)
                if same_for_all:
                    shared[key] = got
            if got is not None:
                reach.reads[(role, name)] = got


def _read(conn, rel: str, has_id: bool, table: str, may_table: bool, is_table: bool):
    """One relation as the current role; None when reading it fails (a view that reads
    what the role may not, a column grant without ``id``...)."""
    try:
        with conn.transaction():
            if not has_id:
                return Read(conn.execute(f"SELECT count(*) FROM {rel}").fetchone()[0])
            rows, ids = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(id::text, ',' ORDER BY id), '')) "
                f"FROM {rel}"
            ).fetchone()
            if is_table:
                hidden = 0
            elif not may_table:
                hidden = rows
            else:  # a top-level NOT EXISTS: one anti-join, not a probe per row
                hidden = conn.execute(
                    f"SELECT count(*) FROM {rel} v WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {table} t WHERE t.id = v.id)"
                ).fetchone()[0]
            return Read(rows, ids, hidden)
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
    and the object (empty: nobody reads or writes more)."""
    out = []
    for (role, rel), now in sorted(after.reads.items()):
        was = before.reads.get((role, rel))
        if rel == after.table:
            if was is None:
                if now.rows:
                    out.append(f"{role} can now read {now.rows} rows of {rel}")
            elif now.ids != was.ids and now.rows >= was.rows:
                out.append(
                    f"{role} reads other rows of {rel} than before "
                    f"({now.rows} rows, {was.rows} before)"
                )
        elif now.hidden is not None:
            already = was.hidden if was is not None and was.hidden is not None else 0
            if now.hidden > already:
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
        for what in sorted(after.writes.get(role, set()) - before.writes.get(role, set())):
            out.append(f"{role} can now {what}")
    return out


def at(url: str, s: Settings) -> Reach:
    """``take`` on a connection of its own."""
    from stage4.db import connect

    with connect(url, autocommit=True) as conn:
        return take(conn, s)


def already_open(reach: Reach) -> list[str]:
    """Rows the table hides that a role reads through another relation anyway: not a step's
    doing when they were there before it (e.g. RLS enabled after opt3 granted its view),
    but worth saying."""
    return [
        f"{role} reads {got.hidden} rows through {rel} that {reach.table} hides from it"
        for (role, rel), got in sorted(reach.reads.items())
        if got.hidden
    ]


def check(url: str, s: Settings, before: Reach) -> tuple[list[str], list[str]]:
    """After a step: (the line saying what was checked, or what was open already; what widened)."""
    now = at(url, s)
    widened = wider(before, now)
    if widened:
        return [], widened
    old = [f"already before this step: {line}" for line in already_open(before)]
    return [now.summary(), *old], []
