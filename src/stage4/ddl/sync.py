"""A derived table kept by triggers on the app's table, in each writing transaction.

opt1's nearest-features copy (``ddl.nearest``) and opt5's monthly counts (``ddl.counts``)
are both kept this way: an AFTER row trigger for inserts, deletes and updates of the
columns they derive from, and a statement trigger for TRUNCATE, both running one trigger
function that only its owner may execute. This module is their shared shape.
"""

from __future__ import annotations

from stage4.ddl.privileges import function_owner_only_sql


def triggers_sql(source: str, trigger: str, function: str, columns: str) -> list[str]:
    """``function`` (its identity) left to its owner, then the row trigger ``trigger`` (on
    inserts, deletes, and updates of ``columns``) and ``{trigger}_truncate`` on ``source``."""
    return [
        function_owner_only_sql(function),
        f"CREATE TRIGGER {trigger} AFTER INSERT OR DELETE OR UPDATE OF {columns} "
        f"ON {source} FOR EACH ROW EXECUTE FUNCTION {function}",
        f"CREATE TRIGGER {trigger}_truncate AFTER TRUNCATE ON {source} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}",
    ]


def drop_sql(source: str, trigger: str, table: str, function: str) -> list[str]:
    """The triggers on ``source``, then the derived ``table`` and the trigger function."""
    return [
        f"DROP TRIGGER IF EXISTS {trigger} ON {source}",
        f"DROP TRIGGER IF EXISTS {trigger}_truncate ON {source}",
        f"DROP TABLE IF EXISTS {table}",
        f"DROP FUNCTION IF EXISTS {function}",
    ]
