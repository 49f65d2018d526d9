"""stage4: benchmark-gated Alembic migrations for a PostgreSQL + PostGIS database."""

__version__ = "0.1.0"
