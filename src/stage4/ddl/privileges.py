"""What a table carries besides its rows, read from one relation and replayed on another.

A revision that swaps a table for a rebuilt copy (opt1: plain -> partitioned and back)
must not lose a grant, a policy or a comment: the app's security model (Supabase
roles, RLS) lives in these. ``capture`` reads them from the live catalog while the
old table still exists; ``replay`` renders the statements for the new one, under
its final name. Offline (``--sql``) there is no catalog to read, so ``offline_note``
says in the script what the live run would carry over.

Carried: owner, table and column grants (in ACL order, so ``relacl::text`` is the
same), identity-sequence grants, RLS enabled/forced, every policy, comments on the
table, its columns, indexes, constraints, triggers and policies, user triggers with
their enabled state, replica identity, and publication membership (row filter and
column list included).

The owner-only policies live here too: partitions (``owner_only_plpgsql``,
``partitions_owner_only_sql``) and functions that must not be RPC endpoints
(``function_owner_only_sql``). Materialized views have their one rule in
``matviews.grants_sql``.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from stage4.ddl import literal

_CMD = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_TRIGGER_STATE = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}
_IDENT = {"d": "DEFAULT", "f": "FULL", "n": "NOTHING"}


@dataclass
class Carry:
    """Everything ``replay`` needs, captured from the old relation."""

    owner: str
    acl: list[tuple[str, str, str, bool]] | None  # (grantor, grantee, privilege, grantable)
    column_acl: list[tuple[str, str, str, str, bool]] = field(default_factory=list)
    sequence_acl: list[tuple[str, str, str, bool]] | None = None
    rls: tuple[bool, bool] = (False, False)
    policies: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    comments: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, text)
    replica_identity: str = "d"
    publications: list[str] = field(default_factory=list)  # ADD TABLE clauses, %s = table


def _q(bind, sql: str, **params) -> list[tuple]:
    return [tuple(r) for r in bind.exec_driver_sql(sql, params).all()]


def _acl(bind, acl_sql: str, rel: str) -> list[tuple[str, str, str, bool]] | None:
    has = _q(
        bind, f"SELECT {acl_sql} IS NOT NULL FROM pg_class c WHERE c.oid = %(r)s::regclass", r=rel
    )
    if not has or not has[0][0]:
        return None
    return _q(
        bind,
        f"""SELECT a.grantor::regrole::text,
                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                   a.privilege_type, a.is_grantable
            FROM pg_class c, aclexplode({acl_sql}) WITH ORDINALITY a(grantor, grantee,
                 privilege_type, is_grantable, n)
            WHERE c.oid = %(r)s::regclass ORDER BY a.n""",
        r=rel,
    )


def capture(bind, rel: str, sequence: str | None) -> Carry:
    """Read what ``rel`` (``schema.table``) carries; ``sequence`` is its identity sequence."""
    owner, rls, force, ident = _q(
        bind,
        "SELECT pg_get_userbyid(relowner)::regrole::text, relrowsecurity, relforcerowsecurity,"
        " relreplident::text FROM pg_class WHERE oid = %(r)s::regclass",
        r=rel,
    )[0]
    carry = Carry(
        owner=owner, acl=_acl(bind, "c.relacl", rel), rls=(rls, force), replica_identity=ident
    )
    if sequence:
        carry.sequence_acl = _acl(bind, "c.relacl", sequence)
    carry.column_acl = _q(
        bind,
        """SELECT quote_ident(at.attname), a.grantor::regrole::text,
                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                  a.privilege_type, a.is_grantable
           FROM pg_attribute at, aclexplode(at.attacl) WITH ORDINALITY a(grantor, grantee,
                privilege_type, is_grantable, n)
           WHERE at.attrelid = %(r)s::regclass AND at.attnum > 0 AND NOT at.attisdropped
           ORDER BY at.attnum, a.n""",
        r=rel,
    )
    for name, permissive, cmd, roles, qual, check in _q(
        bind,
        """SELECT quote_ident(polname), polpermissive, polcmd::text,
                  CASE WHEN polroles = '{0}' THEN 'PUBLIC' ELSE array_to_string(ARRAY(
                      SELECT r::regrole::text FROM unnest(polroles) r), ', ') END,
                  pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid)
           FROM pg_policy WHERE polrelid = %(r)s::regclass ORDER BY polname""",
        r=rel,
    ):
        sql = (
            f"CREATE POLICY {name} ON %s AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'} "
            f"FOR {_CMD[cmd]} TO {roles}"
        )
        sql += f" USING ({qual})" if qual else ""
        sql += f" WITH CHECK ({check})" if check else ""
        carry.policies.append(sql)
    for name, definition, state in _q(
        bind,
        """SELECT quote_ident(tgname), pg_get_triggerdef(oid), tgenabled::text FROM pg_trigger
           WHERE tgrelid = %(r)s::regclass AND NOT tgisinternal AND tgparentid = 0
           ORDER BY tgname""",
        r=rel,
    ):
        carry.triggers.append(definition)
        if state in _TRIGGER_STATE:
            carry.triggers.append(f"ALTER TABLE %s {_TRIGGER_STATE[state]} TRIGGER {name}")
    carry.comments = _q(
        bind,
        """SELECT 'TABLE', '', obj_description(%(r)s::regclass, 'pg_class')
               WHERE obj_description(%(r)s::regclass, 'pg_class') IS NOT NULL
           UNION ALL SELECT 'COLUMN', quote_ident(attname), col_description(attrelid, attnum)
               FROM pg_attribute WHERE attrelid = %(r)s::regclass AND attnum > 0
               AND NOT attisdropped AND col_description(attrelid, attnum) IS NOT NULL
           UNION ALL SELECT 'INDEX', quote_ident(c.relname), obj_description(c.oid, 'pg_class')
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE i.indrelid = %(r)s::regclass AND obj_description(c.oid, 'pg_class')
               IS NOT NULL
           UNION ALL SELECT 'CONSTRAINT', quote_ident(conname), obj_description(oid, 'pg_constraint')
               FROM pg_constraint WHERE conrelid = %(r)s::regclass
               AND obj_description(oid, 'pg_constraint') IS NOT NULL
           UNION ALL SELECT 'TRIGGER', quote_ident(tgname), obj_description(oid, 'pg_trigger')
               FROM pg_trigger WHERE tgrelid = %(r)s::regclass AND NOT tgisinternal
               AND obj_description(oid, 'pg_trigger') IS NOT NULL
           UNION ALL SELECT 'POLICY', quote_ident(polname), obj_description(oid, 'pg_policy')
               FROM pg_policy WHERE polrelid = %(r)s::regclass
               AND obj_description(oid, 'pg_policy') IS NOT NULL""",
        r=rel,
    )
    for pub, cols, qual in _q(
        bind,
        """SELECT quote_ident(p.pubname),
                  array_to_string(ARRAY(SELECT quote_ident(a.attname) FROM unnest(pr.prattrs) k
                      JOIN pg_attribute a ON a.attrelid = pr.prrelid AND a.attnum = k), ', '),
                  pg_get_expr(pr.prqual, pr.prrelid)
           FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
           WHERE pr.prrelid = %(r)s::regclass ORDER BY p.pubname""",
        r=rel,
    ):
        clause = f"ALTER PUBLICATION {pub} ADD TABLE %s"
        clause += f" ({cols})" if cols else ""
        clause += f" WHERE ({qual})" if qual else ""
        carry.publications.append(clause)
    return carry


def _grants(acl, target: str, kind: str, owner: str, column: str = "") -> list[str]:
    """GRANT statements in ACL order; grants made by another role are made as that role."""
    out: list[str] = []
    groups: dict[tuple[str, str, bool], list[str]] = {}
    for grantor, grantee, privilege, grantable in acl:
        groups.setdefault((grantor, grantee, grantable), []).append(privilege)
    cols = f" ({column})" if column else ""
    for (grantor, grantee, grantable), privileges in groups.items():
        privs = ", ".join(f"{p}{cols}" for p in privileges)
        grant = f"GRANT {privs} ON {kind} {target} TO {grantee}"
        grant += " WITH GRANT OPTION" if grantable else ""
        if grantor != owner:
            out += [f"SET LOCAL ROLE {grantor}", grant, "RESET ROLE"]
        else:
            out.append(grant)
    return out


def acl_reset(bind, rel: str, kind: str, owner: str) -> list[str]:
    """REVOKE everything a freshly created ``rel`` got (owner default, default privileges)."""
    grantees = {owner, "PUBLIC"}
    grantees |= {g for _, g, _, _ in _acl(bind, "c.relacl", rel) or []}
    return [f"REVOKE ALL ON {kind} {rel} FROM {', '.join(sorted(grantees))}"]


def default_acl_reset(bind, rel: str, kind: str, owner: str) -> list[str]:
    """The old relation had no ACL (the built-in default: its owner only): REVOKE what
    default privileges gave the new one, so that nobody gains access by the rebuild.
    The owner keeps its default entry (the same privileges as a NULL ACL)."""
    others = sorted({g for _, g, _, _ in _acl(bind, "c.relacl", rel) or [] if g != owner})
    return [f"REVOKE ALL ON {kind} {rel} FROM {', '.join(others)}"] if others else []


def replay(carry: Carry, bind, target: str, sequence: str | None) -> list[str]:
    """Statements that give ``target`` (final name, already created) what was captured.

    Ownership first (it rewrites the owner's ACL entry), then an exact ACL: when the old
    table had an explicit ACL, everything the new one received is revoked and the old
    entries are granted back in their order; when it had none, what default privileges
    gave the new one is revoked (same for the identity sequence).
    """
    out = [f"ALTER TABLE {target} OWNER TO {carry.owner}"]
    if carry.acl is not None:
        out += acl_reset(bind, target, "TABLE", carry.owner)
        out += _grants(carry.acl, target, "TABLE", carry.owner)
    else:
        out += default_acl_reset(bind, target, "TABLE", carry.owner)
    if sequence and carry.sequence_acl is not None:
        out += acl_reset(bind, sequence, "SEQUENCE", carry.owner)
        out += _grants(carry.sequence_acl, sequence, "SEQUENCE", carry.owner)
    elif sequence:
        out += default_acl_reset(bind, sequence, "SEQUENCE", carry.owner)
    for column, *entry in carry.column_acl:
        out += _grants([tuple(entry)], target, "TABLE", carry.owner, column)
    enabled, forced = carry.rls
    if enabled:
        out.append(f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY")
    if forced:
        out.append(f"ALTER TABLE {target} FORCE ROW LEVEL SECURITY")
    out += [p.replace(" ON %s ", f" ON {target} ", 1) for p in carry.policies]
    out += [t.replace("ALTER TABLE %s ", f"ALTER TABLE {target} ", 1) for t in carry.triggers]
    if carry.replica_identity != "d":
        out.append(f"ALTER TABLE {target} REPLICA IDENTITY {_IDENT[carry.replica_identity]}")
    out += [p.replace("ADD TABLE %s", f"ADD TABLE {target}", 1) for p in carry.publications]
    out += comment_sql(carry.comments, target)
    return out


def comment_sql(comments: list[tuple[str, str, str]], target: str) -> list[str]:
    schema = target.split(".")[0]
    out = []
    for kind, name, text in comments:
        obj = {
            "TABLE": f"TABLE {target}",
            "COLUMN": f"COLUMN {target}.{name}",
            "INDEX": f"INDEX {schema}.{name}",
            "CONSTRAINT": f"CONSTRAINT {name} ON {target}",
            "TRIGGER": f"TRIGGER {name} ON {target}",
            "POLICY": f"POLICY {name} ON {target}",
        }[kind]
        out.append(f"COMMENT ON {obj} IS {literal(text)}")
    return out


OFFLINE_NOTE = (
    "-- carry-over (read from the live catalog when run online): owner, table and column\n"
    "-- grants in ACL order, identity-sequence grants, RLS enabled/forced, every policy,\n"
    "-- user triggers and their enabled state, replica identity, publication membership,\n"
    "-- comments on the table, columns, indexes, constraints, triggers and policies"
)


# ------------------------------------------------------------------ publications


def publications_of(bind, rel: str) -> list[tuple[str, bool]]:
    """Publications that publish ``rel`` (explicitly, by schema or FOR ALL TABLES)."""
    return _q(
        bind,
        """SELECT quote_ident(p.pubname), p.pubviaroot FROM pg_publication p
           WHERE p.puballtables
              OR EXISTS (SELECT 1 FROM pg_publication_rel r
                         WHERE r.prpubid = p.oid AND r.prrelid = %(r)s::regclass)
              OR EXISTS (SELECT 1 FROM pg_publication_namespace n JOIN pg_class c
                         ON c.relnamespace = n.pnnspid
                         WHERE n.pnpubid = p.oid AND c.oid = %(r)s::regclass)
           ORDER BY 1""",
        r=rel,
    )


def via_root_sql(names: list[str], value: bool) -> list[str]:
    v = "true" if value else "false"
    return [f"ALTER PUBLICATION {n} SET (publish_via_partition_root = {v})" for n in names]


# ------------------------------------------------------------------ owner-only objects

_WHO = "CASE WHEN {r}.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid({r}.grantee)) END"


def owner_only_plpgsql(rel: str, r: str = "r") -> str:
    """PL/pgSQL statements leaving ``rel`` (an expression of type regclass) to its owner:
    every privilege of every other grantee (PUBLIC, and whoever default privileges named)
    revoked, and row level security enabled with no policy, so that a grant added later
    by mistake still shows no row to anyone but the owner and BYPASSRLS roles. ``r`` is a
    ``record`` variable the caller declares. Shared by opt1 (a DO block) and opt4's routine
    (which runs from pg_cron too)."""
    who = _WHO.format(r=r)
    return f"""FOR {r} IN SELECT DISTINCT a.grantee FROM pg_class c,
             aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
           WHERE c.oid = {rel} AND a.grantee <> c.relowner LOOP
    EXECUTE format('REVOKE ALL ON TABLE %s FROM %s', {rel}, {who});
  END LOOP;
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', {rel});"""


def partitions_owner_only_sql(parent: str) -> str:
    """One DO block: every partition of ``parent`` reachable by its owner only (online and
    in offline ``--sql`` alike: it reads the catalog when it runs)."""
    return f"""DO $acl$
DECLARE
  p regclass;
  r record;
BEGIN
  FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = '{parent}'::regclass
           ORDER BY inhrelid LOOP
    {textwrap.indent(owner_only_plpgsql("p"), "  ").lstrip()}
  END LOOP;
END
$acl$"""


def function_owner_only_plpgsql(identity: str, r: str = "r") -> str:
    """PL/pgSQL statements leaving the function ``identity`` to its owner: EXECUTE revoked
    from PUBLIC and from every role that default privileges named. ``r`` is a ``record``
    variable the caller declares."""
    return f"""REVOKE ALL ON FUNCTION {identity} FROM PUBLIC;
  FOR {r} IN SELECT DISTINCT a.grantee FROM pg_proc p, aclexplode(p.proacl) a
           WHERE p.oid = {literal(identity)}::regprocedure AND a.grantee NOT IN (0, p.proowner) LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION {identity} FROM %I', pg_get_userbyid({r}.grantee));
  END LOOP;"""


def function_owner_only_sql(identity: str) -> str:
    """``function_owner_only_plpgsql`` as one DO block (offline ``--sql`` renders it too)."""
    return f"""DO $acl$
DECLARE r record;
BEGIN
  {function_owner_only_plpgsql(identity)}
END
$acl$"""
