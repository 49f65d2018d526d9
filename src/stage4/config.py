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
_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# What PostgreSQL takes for lock_timeout / statement_timeout: a whole number and a unit.
DURATION = re.compile(r"^\d+\s*(us|ms|s|min|h|d)?$")


def check_duration(name: str, value: object, *, where: str = "[tool.stage4]") -> str:
    """A PostgreSQL duration (``5s``, ``500ms``, ``2min``, ``0``), else ConfigError.

    Settings reach SQL as literals (``set_config``); checking the shape too keeps a typo
    from surfacing later as a server error halfway through a migration."""
    text = str(value).strip()
    if isinstance(value, bool) or not DURATION.match(text):
        raise ConfigError(
            f"{where} {name} = {str(value)!r} is not a duration: use e.g. 5s, 500ms, 2min "
            "(0 = no limit)"
        )
    return text


@dataclass(frozen=True)
class Settings:
    """Every knob stage4 has; ``[tool.stage4]`` keys have the same names."""

    schema: str = "public"
    table: str = "geometrias"
    time_column: str = "data_referencia"
    geometry_column: str = "geom"
    srid: int = 4326
    bench_schema: str = "benchmarking"
    # stage4's own objects, closed to the API roles: the revision (Alembic's version table),
    # the partitions, materialized views and routines the revisions create
    own_schema: str = "stage4"
    home: str = ".stage4"
    database: str = "biblioteca"
    lock_timeout: str = "5s"
    statement_timeout: str = "0"
    first_year: int = 2020
    last_year: int = 2028
    years_ahead: int = 3
    # a folder of the app's own queries (*.sql, pgbench script format), judged with Q1–Q10
    workload: str = ""
    # Roles checked by the gate's visibility promise besides anon, authenticated and
    # service_role, and the schemas an API exposes (PostgREST: db-schemas).
    api_roles: tuple[str, ...] = ()
    exposed_schemas: tuple[str, ...] = ("public",)
    root: Path = field(default=Path("."), compare=False)

    def __post_init__(self) -> None:
        for name in (
            "schema",
            "table",
            "time_column",
            "geometry_column",
            "bench_schema",
            "own_schema",
        ):
            value = getattr(self, name)
            if not _IDENT.match(value):
                raise ConfigError(
                    f"[tool.stage4] {name} = {value!r} is not a plain lower-case SQL identifier"
                )
        if not _DATABASE.match(str(self.database)):
            raise ConfigError(
                f"[tool.stage4] database = {self.database!r} is not a plain SQL identifier"
            )
        for name in ("srid", "first_year", "last_year", "years_ahead"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"[tool.stage4] {name} = {value!r} is not a whole number")
        for name in ("lock_timeout", "statement_timeout"):
            check_duration(name, getattr(self, name))
        for name in ("api_roles", "exposed_schemas"):
            value = getattr(self, name)
            names = (value,) if isinstance(value, str) else tuple(value)
            bad = [v for v in names if not isinstance(v, str) or not _IDENT.match(v)]
            if bad:
                raise ConfigError(
                    f"[tool.stage4] {name}: {bad[0]!r} is not a plain lower-case SQL identifier"
                )
            object.__setattr__(self, name, names)
        if self.own_schema in (self.schema, *self.exposed_schemas):
            raise ConfigError(
                f"[tool.stage4] own_schema = {self.own_schema!r} is a schema the app or its API "
                'uses: stage4\'s own objects must live apart (e.g. own_schema = "stage4")'
            )
        if self.first_year > self.last_year:
            raise ConfigError("[tool.stage4] first_year must not be after last_year")

    @property
    def qualified_table(self) -> str:
        """``schema.table``, ready to splice into SQL (identifiers are validated)."""
        return f"{self.schema}.{self.table}"

    @property
    def workload_path(self) -> Path | None:
        """``workload`` as a path (relative to the pyproject.toml's folder), or None."""
        if not self.workload:
            return None
        path = Path(self.workload)
        return path if path.is_absolute() else (self.root / path).resolve()

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
_EXPECTED = "expected postgresql://user@host:port/dbname"
# Passwords that the URL pattern in redact() may miss (a malformed URL's, the embedded
# cluster's): redact() removes them from any text. Well-formed URLs are left to the pattern,
# so a short or common password ("postgres") does not blank out ordinary words.
_SECRETS: set[str] = set()


def _userinfo(url: str) -> tuple[str, str, str | None]:
    """(scheme, user, raw password) read the forgiving way: the user part runs to the
    *last* ``@``, so a malformed URL's password is still known, and hidden."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return scheme, "", None
    info = rest.rsplit("@", 1)[0]
    user, colon, password = info.partition(":")
    return scheme, user, password if colon else None


def remember_secret(secret: str | None) -> None:
    """From now on, ``redact`` replaces ``secret`` (and its decoded form) in any text."""
    from urllib.parse import unquote

    if secret and len(secret) >= 4:
        _SECRETS.update({secret, unquote(secret, errors="replace")} - {""})


def _safe(url: str) -> str:
    """The URL as a message may show it: the password replaced by ``***``."""
    scheme, user, password = _userinfo(url)
    if password is None:
        return redact(url)
    host = url.partition("://")[2].rsplit("@", 1)[1]
    return redact(f"{scheme}://{user}:***@{host}")


def check_url(url: str) -> str:
    """Validate a PostgreSQL URL; return it in the libpq form (``postgresql://``).

    Refused before any driver sees it: a driver's parse error quotes the faulty part,
    which for a badly encoded password is the password."""
    url = url.strip()

    def bad(why: str) -> ConfigError:
        remember_secret(_userinfo(url)[2])
        return ConfigError(f"malformed database URL {_safe(url)!r}: {why}")

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise bad(_EXPECTED)
    if any(c.isspace() for c in url):
        raise bad("it contains a space (write it as %20)")
    if re.search(r"%(?![0-9A-Fa-f]{2})", url):
        raise bad("a '%' not followed by two hex digits (write a literal % as %25)")
    before_query = rest.split("?", 1)[0]  # a query (?passfile=…) may hold '@' and '/'
    if before_query.count("@") > 1:
        raise bad("more than one '@' (write an '@' in the user or password as %40)")
    if "@" in before_query and "/" in before_query.split("@", 1)[0]:
        raise bad("a '/' in the user or password (write it as %2F)")
    cut = re.search(r"[?#]", rest)
    if (
        cut
        and "@" in rest[cut.start() :]
        and "/" not in rest[: cut.start()]
        and (":" in rest[: cut.start()])
    ):  # "user:pa?ss@host": the '?' ended the host part before the '@'
        raise bad("a '?' or '#' in the user or password (write them as %3F and %23)")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise bad("bad port") from None
    if not parts.path.strip("/") and not parts.query:
        raise bad("no database name")
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
    """Replace any password in URLs (``user:secret@`` or ``password=``) with ``***``, and
    every password stage4 has seen (a malformed URL's too) wherever it appears."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(password=)[^&\s]+", r"\1***", text, flags=re.IGNORECASE)


def explicit_url(url: str | None = None) -> str | None:
    """The URL the user gave (argument, then ``DATABASE_URL``), validated; None if none."""
    url = url or os.environ.get("DATABASE_URL") or None
    return check_url(url) if url else None
