"""What each revision promises, checked on the live database after it is applied.

One list per revision of (promise, SQL returning a boolean). The gate treats a
broken promise like a regression: NO-GO, roll the step back.
"""

from __future__ import annotations

from datetime import date

from stage4.config import Settings
from stage4.db import connect
from stage4.ddl import future_partitions as fp

# A promise may carry a condition: checked only where the condition holds.
_CRON = "SELECT to_regclass('cron.job') IS NOT NULL"


def promises(s: Settings, rev: str) -> list[tuple[str, ...]]:
    t, q = s.table, s.qualified_table
    years = range(s.first_year, s.last_year + 1)
    partitions = ", ".join(f"'{s.schema}.{t}_p{y}'" for y in years)
    catalog: dict[str, list[tuple[str, str]]] = {
        "schema": [
            (f"{q} exists", f"SELECT to_regclass('{q}') IS NOT NULL"),
        ],
        "opt1": [
            (f"{q} is partitioned by range", f"SELECT relkind = 'p' FROM pg_class WHERE oid = '{q}'::regclass"),
            (f"yearly partitions {s.first_year}–{s.last_year} and a default exist",
             f"SELECT bool_and(to_regclass(p) IS NOT NULL) AND to_regclass('{s.schema}.{t}_default') IS NOT NULL "
             f"FROM unnest(ARRAY[{partitions}]) p"),
            ("GiST index on the geometry of the parent",
             f"SELECT count(*) > 0 FROM pg_indexes WHERE schemaname = '{s.schema}' AND tablename = '{t}' "
             f"AND indexdef ILIKE '%USING gist ({s.geometry_column})%'"),
        ],
        "opt2": [
            ("stored area and bbox columns exist (generated)",
             f"SELECT count(*) = 5 FROM pg_attribute WHERE attrelid = '{q}'::regclass "
             "AND attgenerated = 's' AND attname IN ('area_m2', 'bbox_xmin', 'bbox_ymin', "
             "'bbox_xmax', 'bbox_ymax')"),
            ("wide columns compressed with lz4",
             f"SELECT bool_and(attcompression = 'l') FROM pg_attribute WHERE attrelid = '{q}'::regclass "
             "AND attname IN ('descricao', 'propriedades')"),
        ],
        "opt3": [
            ("search materialized view populated, with a unique index",
             f"SELECT m.ispopulated AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = "
             f"'{s.schema}.{t}_busca'::regclass AND i.indisunique) FROM pg_matviews m "
             f"WHERE m.schemaname = '{s.schema}' AND m.matviewname = '{t}_busca'"),
            ("buscar_geometrias reads the materialized view",
             f"SELECT prosrc LIKE '%{t}_busca%' FROM pg_proc WHERE oid = "
             f"to_regprocedure('{s.schema}.buscar_geometrias(text, double precision, double precision, "
             "double precision, double precision, integer)')",
             # with RLS on the function keeps reading the table (matviews.grants_sql)
             f"SELECT NOT relrowsecurity FROM pg_class WHERE oid = '{q}'::regclass"),
        ],
        "opt4": [
            ("partition maintenance routine exists",
             f"SELECT to_regproc('{s.schema}.stage4_ensure_partitions') IS NOT NULL"),
            _future_partitions(s),
            ("scheduled with pg_cron (pg_cron is installed in this database)",
             "SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = 'stage4_ensure_partitions')",
             _CRON),
        ],
        "opt5": [
            ("aggregate/tile/points materialized views populated with unique indexes",
             "SELECT count(*) = 3 FROM pg_matviews m JOIN pg_class c ON c.relname = m.matviewname "
             f"AND c.relnamespace = '{s.schema}'::regnamespace WHERE m.schemaname = '{s.schema}' "
             f"AND m.matviewname IN ('{t}_mensal_mv', '{t}_tile_mv', '{t}_pontos_mv') "
             "AND m.ispopulated AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid "
             "AND i.indisunique)"),
            ("refresh jobs scheduled with pg_cron (pg_cron is installed in this database)",
             "SELECT count(*) >= 3 FROM cron.job WHERE jobname LIKE 'stage4_refresh_%'", _CRON),
        ],
    }  # fmt: skip
    return catalog.get(rev, [])


def _future_partitions(s: Settings) -> tuple[str, str]:
    """opt4's promise: a partition for every year from the first one opt1 did not create up
    to the routine's horizon, ``years_ahead`` past the later of this year and ``last_year``
    (the same expression the routine uses, so the two cannot disagree)."""
    first = fp.first_future_year(s)
    last = max(date.today().year, s.last_year) + s.years_ahead
    years = f"{first}–{last}" if last > first else f"{first}"
    text = (f"partitions {years} exist (years_ahead = {s.years_ahead})" if last >= first
            else f"no partition after {s.last_year} is due yet (years_ahead = {s.years_ahead})")  # fmt: skip
    # An empty range (nothing due yet) holds: bool_and of no rows is NULL.
    sql = (
        f"SELECT coalesce(bool_and(to_regclass('{s.schema}.{s.table}_p' || y) IS NOT NULL), true) "
        f"FROM generate_series({first}, {fp.horizon_sql(s, str(s.years_ahead))}) AS y"
    )
    return text, sql


def revision(url: str, s: Settings, rev: str) -> tuple[list[str], list[str]]:
    """(kept promises, broken promises) of ``rev`` on the database at ``url``."""
    kept, broken = [], []
    with connect(url) as conn:
        for text, sql, *condition in promises(s, rev):
            if condition and not conn.execute(condition[0]).fetchone()[0]:
                continue
            (kept if conn.execute(sql).fetchone()[0] else broken).append(text)
    return kept, broken
