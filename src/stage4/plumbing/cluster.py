"""The embedded PostgreSQL cluster: initdb + pg_ctl under ``.stage4/``.

stage4 works on any database you point it at; when you point it at nothing it
creates, starts and uses this local cluster (PostGIS available, pg_cron
preloaded when installed), so the demo and the tests need no service of their own.
PostgreSQL refuses to run as root, so as root the server runs as ``postgres``.

Every connection authenticates (``scram-sha-256``, local socket and loopback alike): the
superuser's password is generated at ``initdb`` and kept in ``.stage4/pgpass`` (mode 0600,
libpq's password-file format), which stage4 hands to libpq as ``passfile``, so nobody types
it and it never appears in a URL or on a command line. The socket folder is 0700. A cluster
made by an older stage4 (trust authentication) is converted the next time it starts.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from stage4.config import Settings, remember_secret
from stage4.errors import ClusterError

PG_MAJOR = "15"
PACKAGES = f"postgresql-{PG_MAJOR} postgresql-{PG_MAJOR}-postgis-3 postgresql-{PG_MAJOR}-cron"


def _shared_buffers() -> str:
    """A quarter of the machine's RAM (PostgreSQL's usual advice for a dedicated server),
    128 MB to 8 GB. A fixed 1 GB is too small at 1M features once opt5's views exist
    (table and views together take ~1.4 GB): queries then pay buffer misses."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 4 * 2**30
    return f"'{max(128, min(8192, ram // 4 // 2**20))}MB'"


# Sized for a 2-core, 24 GiB machine; honest defaults otherwise (fsync stays on).
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": _shared_buffers(),
    "work_mem": "'32MB'",
    "maintenance_work_mem": "'512MB'",
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'15min'",
    "effective_cache_size": "'8GB'",
    "random_page_cost": "1.1",
    "jit": "off",
    "max_connections": "100",
    "log_min_messages": "warning",
}


def bindir() -> Path:
    """The PostgreSQL server binaries (``STAGE4_PG_BIN`` overrides)."""
    candidates = [os.environ.get("STAGE4_PG_BIN", ""), f"/usr/lib/postgresql/{PG_MAJOR}/bin"]
    candidates += sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin"))[::-1]
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    raise ClusterError(
        f"PostgreSQL server binaries not found (initdb, pg_ctl): apt-get install {PACKAGES}"
    )


def sharedir(bin_path: Path) -> Path:
    out = subprocess.run(
        [str(bin_path / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
    )
    if out.returncode == 0 and out.stdout.strip():
        return Path(out.stdout.strip())
    return Path("/usr/share/postgresql") / bin_path.parent.name


def has_extension(bin_path: Path, name: str) -> bool:
    return (sharedir(bin_path) / "extension" / f"{name}.control").is_file()


HBA = (
    "# written by stage4: every connection authenticates (password in ../pgpass)\n"
    "local all all scram-sha-256\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """One local cluster living in ``home`` (data/, run/, postgres.log)."""

    home: Path
    database: str = "biblioteca"
    cron_database: str | None = None
    extra_settings: dict[str, str] = field(default_factory=dict)
    # where a change the user must know about is said (a new port, a converted cluster)
    notice: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr))

    @classmethod
    def from_settings(cls, s: Settings) -> Cluster:
        return cls(home=s.home_path, database=s.database)

    # ------------------------------------------------------------------ paths
    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    @property
    def conf(self) -> Path:
        return self.data / "stage4.conf"

    @property
    def passfile(self) -> Path:
        """The superuser's password in libpq's password-file format, readable by us only."""
        return self.home / "pgpass"

    def password(self) -> str | None:
        if not self.passfile.is_file():
            return None
        line = self.passfile.read_text().splitlines()[0]
        password = line.split(":", 4)[4]
        remember_secret(password)
        return password

    def _write_passfile(self, password: str) -> None:
        # created 0600 from the start: never readable by others, not even for a moment
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:*:*:postgres:{password}\nlocalhost:*:*:postgres:{password}\n")
        self.passfile.chmod(0o600)

    # --------------------------------------------------------------- commands
    def _as_server_user(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, capture_output=True, text=True, check=False, **kw)

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam("postgres")
        for p in paths:
            os.chown(p, pw.pw_uid, pw.pw_gid)

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def port(self) -> int | None:
        if not self.conf.is_file():
            return None
        for line in self.conf.read_text().splitlines():
            if line.startswith("port ="):
                return int(line.split("=")[1])
        return None

    def init(self) -> None:
        """Create the cluster (idempotent)."""
        if self.initialized():
            return
        binp = bindir()
        if not has_extension(binp, "postgis"):
            raise ClusterError(
                f"PostGIS is not installed for PostgreSQL {binp.parent.name}: "
                f"apt-get install postgresql-{binp.parent.name}-postgis-3"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        self.run_dir.chmod(0o700)
        self._chown(self.home, self.run_dir)
        _check_traversable(self.home)
        password = secrets.token_urlsafe(24)  # letters, digits, - and _: no escaping anywhere
        self._write_passfile(password)
        # initdb reads the password from a file the server user can read, deleted at once
        pwfile = self.home / ".initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        self._chown(pwfile)
        try:
            out = self._as_server_user(
                [
                    str(binp / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if out.returncode != 0:
            raise ClusterError(f"initdb failed in {self.data}: {out.stderr.strip()[-500:]}")
        hba = self.data / "pg_hba.conf"
        hba.write_text(HBA)
        with (self.data / "postgresql.conf").open("a") as f:
            f.write("\ninclude = 'stage4.conf'\n")
        self._write_conf(free_port(), cron=has_extension(binp, "pg_cron"))
        self._chown(hba, self.data / "postgresql.conf", self.conf)

    def _write_conf(self, port: int, cron: bool) -> None:
        lines = [f"port = {port}", f"unix_socket_directories = '{self.run_dir}'"]
        lines += [f"{k} = {v}" for k, v in {**SERVER_SETTINGS, **self.extra_settings}.items()]
        # pg_stat_statements: what the app runs, for `stage4 workload capture`
        lines.append(f"shared_preload_libraries = '{'pg_cron,' if cron else ''}pg_stat_statements'")
        if cron:
            lines += [
                f"cron.database_name = '{self.cron_database or self.database}'",
                "cron.use_background_workers = on",
                "max_worker_processes = 16",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    def running(self) -> bool:
        if not self.initialized():
            return False
        out = self._as_server_user([str(bindir() / "pg_ctl"), "status", "-D", str(self.data)])
        return out.returncode == 0

    def start(self) -> None:
        """Start the server (idempotent). The port is kept across restarts; one taken by
        another program meanwhile is replaced by a free one, and ``notice`` says so."""
        self.init()
        if self.running():
            self._secure_legacy()
            return
        port = self.port() or free_port()
        if not _port_free(port):
            new = free_port()
            self.conf.write_text(self.conf.read_text().replace(f"port = {port}", f"port = {new}"))
            self.notice(
                f"port {port} is taken by another program: the embedded cluster now "
                f"listens on port {new} (stage4 db url prints the new URL)"
            )
        self.run_dir.chmod(0o700)  # an older stage4 made it 0755
        out = self._as_server_user(
            [
                str(bindir() / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
            ]
        )
        if out.returncode != 0:
            tail = self.log.read_text()[-800:] if self.log.exists() else out.stderr
            raise ClusterError(f"the embedded cluster did not start: {tail.strip()}")
        self._secure_legacy()

    def _secure_legacy(self) -> None:
        """A cluster made by an older stage4 trusts every local connection: give the
        superuser a password, keep it in ``pgpass`` and require it from now on."""
        import psycopg
        from psycopg import sql

        hba = self.data / "pg_hba.conf"
        if not hba.is_file() or "trust" not in hba.read_text():
            return
        password = self.password() or secrets.token_urlsafe(24)
        try:
            with psycopg.connect(
                f"host=127.0.0.1 port={self.port()} user=postgres "
                f"dbname=postgres password={password} connect_timeout=10",
                autocommit=True,
            ) as conn:
                conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(password))
                self._write_passfile(password)
                hba.write_text(HBA)
                self._chown(hba)
                conn.execute("SELECT pg_reload_conf()")
        except psycopg.Error as e:
            raise ClusterError(
                f"the embedded cluster in {self.home} trusts local connections and could "
                f"not be given a password ({type(e).__name__}); stop it and remove the folder "
                f"to create a new one: stage4 db stop && rm -rf {self.home}"
            ) from None
        self.notice(
            f"the embedded cluster in {self.home} now requires a password "
            f"(scram-sha-256), kept in {self.passfile}"
        )

    def stop(self) -> None:
        if self.running():
            out = self._as_server_user(
                [str(bindir() / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data)]
            )
            if out.returncode != 0:
                raise ClusterError(f"pg_ctl stop failed: {out.stderr.strip()}")

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def url(self, database: str | None = None, *, show_password: bool = False) -> str:
        """The superuser's URL; libpq reads the password from ``passfile`` (no secret in
        the URL), or it is written in when ``show_password``."""
        port = self.port()
        if port is None:
            raise ClusterError(f"no embedded cluster in {self.home}: run `stage4 db start`")
        db = database or self.database
        password = self.password()
        if show_password and password:
            return f"postgresql://postgres:{password}@127.0.0.1:{port}/{db}"
        query = f"?passfile={quote(str(self.passfile), safe='/')}" if password else ""
        return f"postgresql://postgres@127.0.0.1:{port}/{db}{query}"

    def ensure_started(self) -> None:
        """Init, start and create the database if any of these is missing."""
        self.start()
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                        self._create_cron_extension()
                return
            except psycopg.OperationalError as e:
                if "password" in str(e):  # answers, but not to us: waiting will not help
                    raise ClusterError(
                        f"the embedded cluster in {self.home} refuses its password file "
                        f"{self.passfile} (missing or replaced?); to start afresh: "
                        f"stage4 db stop && rm -rf {self.home}"
                    ) from None
                if time.monotonic() > deadline:
                    raise ClusterError(f"the embedded cluster does not answer: {e}") from e
                time.sleep(0.2)

    def _create_cron_extension(self) -> None:
        """pg_cron lives in the one database it is preloaded for: ours, on a new cluster."""
        import psycopg

        if (self.cron_database or self.database) != self.database:
            return
        with psycopg.connect(self.url(), autocommit=True) as conn:
            preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            if "pg_cron" in preload:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")

    def size(self) -> int:
        """Bytes under the cluster's folder (data, log; backups live elsewhere)."""
        total = 0
        for folder, _, files in os.walk(self.home):
            for name in files:
                with contextlib.suppress(OSError):  # a WAL segment recycled while we walk
                    total += os.lstat(os.path.join(folder, name)).st_size
        return total

    def status(self) -> dict[str, object]:
        return {
            "home": str(self.home),
            "initialized": self.initialized(),
            "running": self.running(),
            "port": self.port(),
            "size": _human(self.size()) if self.home.exists() else None,
            "url": self.url() if self.port() else None,
        }


def _port_free(port: int) -> bool:
    """Can the server listen on ``port``? Like PostgreSQL, with SO_REUSEADDR: the server's
    own connections in TIME_WAIT after a stop do not make its port look taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _check_traversable(path: Path) -> None:
    """As root, the server user must reach ``path``: fail early with the fix."""
    if os.geteuid() != 0:
        return
    for parent in [path, *path.parents]:
        if parent.exists() and not (parent.stat().st_mode & 0o001):
            raise ClusterError(
                f"user postgres cannot enter {parent}; set STAGE4_HOME to a folder it can "
                f"reach (e.g. /tmp/stage4) or run `chmod o+x {parent}`"
            )
