"""Which API role can call which RPC of the app contract: taken before and after a step.

The RPCs are SECURITY INVOKER: a call needs EXECUTE on the function and, as the caller,
SELECT on every column its body reads. A step that re-points a body at another relation
(a materialized view) or rebuilds one can lose a caller one of those, and the app's
requests then fail with ``permission denied``. Privileges are not compared: each RPC is
called as each API role (``SET LOCAL ROLE`` in a transaction that is rolled back) with
sample arguments that select next to nothing, because permissions are checked on every
relation a query names, whatever rows it finds. A role that could call an RPC before a
step and cannot after it is a broken promise naming both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stage4.catalog.visibility import roles
from stage4.config import Settings
from stage4.ddl import functions

if TYPE_CHECKING:
    from stage4.plumbing.db import Session

# Arguments that find next to no rows: an empty box, year 1, a zoom-20 tile at the corner,
# one nearest feature, a radius of 1 m.
_BOX = "0, 0, 0, 0"
SAMPLE_ARGS = {
    "buscar_geometrias": f"'a', {_BOX}, 1",
    "contagem_mensal": "1",
    "tile_mvt": "20, 0, 0",
    "resumo_janela": _BOX,
    "geometrias_janela": _BOX,
    "area_por_categoria": _BOX,
    "geometrias_periodo": f"'0001-01-01', '0001-01-02', {_BOX}",
    "mais_proximas": "0, 0, 1",
    "dentro_do_raio": "0, 0, 1",
    "pontos_em_poligonos": f"'', '', {_BOX}",
}

Calls = dict[str, dict[str, str | None]]  # role -> RPC identity -> None (callable) or the error


def calls_sql(s: Settings) -> dict[str, str]:
    """RPC identity -> the statement that calls it with ``SAMPLE_ARGS``."""
    out = {}
    for fn in functions.baseline(s):
        call = f"{fn.schema}.{fn.name}({SAMPLE_ARGS[fn.name]})"
        out[fn.identity] = (
            f"SELECT count(*) FROM {call}" if fn.returns.startswith("TABLE") else f"SELECT {call}"
        )
    return out


def take(conn, s: Settings) -> Calls:
    """Call every RPC as every API role the connecting user may ``SET ROLE`` to (psycopg
    connection, not in a transaction; every call is rolled back)."""
    from psycopg import OperationalError, errors

    out: Calls = {}
    with conn.transaction(force_rollback=True):
        for role in roles(conn, s):
            member = "SELECT pg_has_role(current_user, %s, 'MEMBER')"
            if not conn.execute(member, (role,)).fetchone()[0]:
                continue
            out[role] = {}
            for identity, sql in calls_sql(s).items():
                try:
                    with conn.transaction(force_rollback=True):
                        conn.execute("SELECT set_config('role', %s, true)", (role,))
                        conn.execute(sql).fetchall()
                    out[role][identity] = None
                except (errors.QueryCanceled, OperationalError):
                    raise
                except errors.Error as e:
                    out[role][identity] = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return out


def at(db: str | Session, s: Settings) -> Calls:
    """``take`` on a connection of its own (``db``: a URL), or the session's."""
    from stage4.plumbing.db import lend

    with lend(db, autocommit=True) as conn:
        return take(conn, s)


def lost(before: Calls, after: Calls) -> list[str]:
    """One line per RPC a role could call in ``before`` and cannot in ``after``."""
    out = []
    for role, was in before.items():
        for identity, error in was.items():
            if error is None and (now := after.get(role, {}).get(identity, "not called")):
                out.append(f"{role} can no longer call {identity}: {now}")
    return out


def summary(calls: Calls) -> str:
    """One line for the step's record: who calls which RPC."""
    each = [
        f"{role} {', '.join(i.split('(')[0] for i, e in got.items() if e is None) or 'none'}"
        for role, got in calls.items()
    ]
    return f"RPCs callable as before: {'; '.join(each) or 'no API role to check'}"


def check(db: str | Session, s: Settings, before: Calls) -> tuple[list[str], list[str]]:
    """After a step: (the line saying what was checked; the RPCs a role lost)."""
    now = at(db, s)
    gone = lost(before, now)
    return ([] if gone else [summary(now)]), gone
