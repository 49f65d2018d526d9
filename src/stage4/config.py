"""Names, thresholds and the database URL: the one place they are decided.

Settings come from ``[tool.stage4]`` in the nearest ``pyproject.toml`` (searched
from the working directory upwards, then the stage4 checkout), over the defaults
below. Revisions, the workload and the CLI all read them from here, so a name is
written once.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from stage4.errors import ConfigError

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Settings:
    """Every knob stage4 has; ``[tool.stage4]`` keys have the same names."""

    schema: str = "public"
    table: str = "geometrias"
    time_column: str = "data_referencia"
    geometry_column: str = "geom"
    srid: int = 4326
    bench_schema: str = "benchmarking"
    home: str = ".stage4"
    database: str = "biblioteca"
    lock_timeout: str = "5s"
    statement_timeout: str = "0"
    first_year: int = 2020
    last_year: int = 2028
    years_ahead: int = 3
    root: Path = field(default=Path("."), compare=False)

    def __post_init__(self) -> None:
        for name in ("schema", "table", "time_column", "geometry_column", "bench_schema"):
            value = getattr(self, name)
            if not _IDENT.match(value):
                raise ConfigError(
                    f"[tool.stage4] {name} = {value!r} is not a plain lower-case SQL identifier"
                )
        if self.first_year > self.last_year:
            raise ConfigError("[tool.stage4] first_year must not be after last_year")

    @property
    def qualified_table(self) -> str:
        """``schema.table``, ready to splice into SQL (identifiers are validated)."""
        return f"{self.schema}.{self.table}"

    @property
    def home_path(self) -> Path:
        """Where the embedded cluster lives (``STAGE4_HOME`` overrides)."""
        env = os.environ.get("STAGE4_HOME")
        path = Path(env) if env else Path(self.home)
        return path if path.is_absolute() else (self.root / path).resolve()


def _find_pyproject(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text())
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{candidate}: not valid TOML ({e})") from e
            if "stage4" in data.get("tool", {}):
                return candidate
    return None


@cache
def settings(start: Path | None = None) -> Settings:
    """The settings in force for a working directory (cached per directory)."""
    here = (start or Path.cwd()).resolve()
    path = _find_pyproject(here) or _find_pyproject(Path(__file__).resolve().parent)
    if path is None:
        return Settings(root=here)
    table = tomllib.loads(path.read_text())["tool"]["stage4"]
    known = {f.name for f in fields(Settings)} - {"root"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown [tool.stage4] keys: {', '.join(unknown)}")
    return replace(Settings(root=path.parent), **table)


# --------------------------------------------------------------------------- URLs

_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}


def check_url(url: str) -> str:
    """Validate a PostgreSQL URL; return it in the libpq form (``postgresql://``)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            f"malformed database URL {redact(url)!r}: expected postgresql://user@host:port/dbname"
        )
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError as e:
        raise ConfigError(f"malformed database URL {redact(url)!r}: bad port") from e
    if not parts.path.strip("/") and not parts.query:
        raise ConfigError(f"malformed database URL {redact(url)!r}: no database name")
    return urlunsplit(parts._replace(scheme="postgresql"))


def sqlalchemy_url(url: str) -> str:
    """The same URL for SQLAlchemy with the psycopg 3 driver."""
    return "postgresql+psycopg://" + check_url(url).split("://", 1)[1]


def split_password(url: str) -> tuple[str, str | None]:
    """(URL without its password, the decoded password): hand the password to a child
    process through PGPASSWORD, never on its command line."""
    from urllib.parse import unquote

    parts = urlsplit(check_url(url))
    if parts.password is None:
        return check_url(url), None
    host = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host)), unquote(parts.password)


def redact(text: str) -> str:
    """Replace any password in URLs (``user:secret@`` or ``password=``) with ``***``."""
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(password=)[^&\s]+", r"\1***", text, flags=re.IGNORECASE)


def explicit_url(url: str | None = None) -> str | None:
    """The URL the user gave (argument, then ``DATABASE_URL``), validated; None if none."""
    url = url or os.environ.get("DATABASE_URL") or None
    return check_url(url) if url else None


def resolve_url(url: str | None = None, *, start_embedded: bool = True) -> str:
    """The database to work on: the given URL, ``DATABASE_URL``, or the embedded cluster."""
    given = explicit_url(url)
    if given:
        return given
    from stage4 import cluster  # lazy: keeps `stage4 --help` fast

    embedded = cluster.Cluster.from_settings(settings())
    if start_embedded:
        embedded.ensure_started()
    return embedded.url()
