"""The reference ``geometrias`` table, declared once with SQLAlchemy Core + GeoAlchemy2.

Revision ``schema`` creates it from this declaration (so offline ``--sql`` renders
real DDL), pre-flight checks a live table against ``CONTRACT``, and the seed
writes the columns named here.
"""

from __future__ import annotations

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from stage4.config import Settings


def geometrias_table(s: Settings, metadata: MetaData | None = None) -> Table:
    """The table as the app sees it: names come from the settings."""
    md = metadata if metadata is not None else MetaData(schema=s.schema)
    return Table(
        s.table,
        md,
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("nome", Text, nullable=False),
        Column("categoria", Text, nullable=False),
        Column(s.time_column, Date, nullable=False),
        Column(
            s.geometry_column,
            Geometry("GEOMETRY", srid=s.srid, spatial_index=False),
            nullable=False,
        ),
        Column("propriedades", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("descricao", Text),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        schema=s.schema,
    )


def baseline_indexes(s: Settings, table: Table) -> list[Index]:
    """What a competent team already has at ``schema``: GiST on geom, btree on date, category."""
    return [
        Index(
            f"{s.table}_{s.geometry_column}_gist",
            table.c[s.geometry_column],
            postgresql_using="gist",
        ),
        Index(f"{s.table}_{s.time_column}_idx", table.c[s.time_column]),
        Index(f"{s.table}_categoria_idx", table.c.categoria),
    ]


def contract(s: Settings) -> dict[str, set[str]]:
    """Required column -> acceptable ``format_type`` spellings, for adoption and pre-flight:
    every column of the declared table, since the RPCs, the workload and the content hash
    that proves nothing was lost read them all."""
    text = {"text", "character varying"}
    stamp = {"timestamp"}  # with or without time zone, any precision
    return {
        "id": {"bigint", "integer"},
        "nome": text,
        "categoria": text,
        s.time_column: {"date"},
        s.geometry_column: {"geometry", f"geometry(Geometry,{s.srid})"},
        "propriedades": {"jsonb", "json"},
        "descricao": text,
        "created_at": stamp,
        "updated_at": stamp,
    }


# ---------------------------------------------------------------- live checks


def exists(bind, s: Settings) -> bool:
    """Does the table exist (any kind: plain or partitioned)?"""
    return bind.exec_driver_sql(f"SELECT to_regclass('{s.qualified_table}') IS NOT NULL").scalar()


def row_count(bind, s: Settings) -> int:
    return bind.exec_driver_sql(f"SELECT count(*) FROM {s.qualified_table}").scalar()


def contract_violations(bind, s: Settings) -> list[str]:
    """What is wrong with a live table against ``contract``: one line each, empty if fine.

    ``bind`` is a SQLAlchemy connection (revisions) or a psycopg one (pre-flight).
    """
    sql = (
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_attribute a WHERE a.attrelid = %(t)s::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped"
    )
    run = getattr(bind, "exec_driver_sql", None) or bind.execute
    have = dict(run(sql, {"t": s.qualified_table}).fetchall())
    problems = []
    for column, accepted in contract(s).items():
        if column not in have:
            problems.append(f"column {column} is missing")
        elif not any(have[column].startswith(a) for a in accepted):
            wanted = " or ".join(sorted(accepted))
            problems.append(f"column {column} is {have[column]}, expected {wanted}")
    return problems


def indexed_columns(bind, s: Settings) -> set[str]:
    """Columns that lead some index of the table (to avoid duplicating an index on adoption)."""
    rows = bind.exec_driver_sql(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = %(t)s::regclass",
        {"t": s.qualified_table},
    ).all()
    return {r[0] for r in rows}
