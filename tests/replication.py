"""A primary and a streaming standby (Debian's PostgreSQL 15) on 127.0.0.1, for the database failover test.

The standby is made with `pg_basebackup -R` and replicates synchronously (`synchronous_standby_names`
is set on the primary only, after the copy): every commit a collector was told of is on the standby
when the primary is crash-stopped and the standby promoted. As root, the servers run as the embedded
server's user, as warehouse/store/embedded.py runs its own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from warehouse.store import migrate
from warehouse.store.embedded import SERVER_USER

BINARIES = Path("/usr/lib/postgresql/15/bin")
DATABASE = "warehouse"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """One PostgreSQL 15 server on 127.0.0.1:`port`, with trust for local TCP (a throwaway)."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C", "TZ": "UTC"}
        result = subprocess.run([str(BINARIES / argv[0]), *argv[1:]], capture_output=True, text=True, env=env,
                                timeout=120, cwd="/", **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def start(self) -> None:
        self.run("pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"), "-w", "-t", "60")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60")

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def append_conf(self, text: str, name: str = "postgresql.conf") -> None:
        with open(self.data_dir / name, "a") as conf:
            conf.write(text)


class Replicated:
    """`with Replicated() as pg:` a migrated primary and its synchronous standby, both running."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="owh-replication-"))
        self.root.chmod(0o755)  # the server's user walks through it
        self.primary = Cluster(self.root / "primary", free_port())
        self.standby = Cluster(self.root / "standby", free_port())

    def url(self) -> str:
        """Both hosts; every connection goes to whichever is the primary."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/{DATABASE}"
                "?target_session_attrs=read-write")

    def __enter__(self) -> Replicated:
        primary, standby = self.primary, self.standby
        for directory in (primary.data_dir, standby.data_dir):
            directory.mkdir(mode=0o700)
            if os.geteuid() == 0:
                user = pwd.getpwnam(SERVER_USER)
                os.chown(directory, user.pw_uid, user.pw_gid)
        primary.run("initdb", "-D", str(primary.data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                    "--locale=C", "--no-instructions")
        primary.append_conf(f"listen_addresses = '127.0.0.1'\nport = {primary.port}\nunix_socket_directories = ''\n"
                            "wal_level = replica\nmax_wal_senders = 4\nfsync = off\ntimezone = 'UTC'\n")
        primary.append_conf("host replication all 127.0.0.1/32 trust\n", "pg_hba.conf")
        primary.start()
        with psycopg.connect(primary.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        migrate.upgrade(primary.url())
        primary.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D",
                    str(standby.data_dir), "-R", "-X", "stream", "-c", "fast")
        standby.append_conf(f"port = {standby.port}\n", "postgresql.auto.conf")
        standby.start()
        _wait(lambda: _one(primary.url(), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1,
              "the standby to stream")
        with psycopg.connect(primary.url(), autocommit=True) as conn:  # only the primary waits for a standby
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        _wait(lambda: _one(primary.url(), "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") == 1,
              "the standby to be synchronous")
        return self

    def fail_over(self) -> None:
        """The primary crashes (immediate stop); the standby is promoted and takes writes."""
        self.primary.stop("immediate")
        self.standby.run("pg_ctl", "promote", "-D", str(self.standby.data_dir), "-w", "-t", "60")

    def __exit__(self, *exc: object) -> None:
        for cluster in (self.primary, self.standby):
            if cluster.running():
                with contextlib.suppress(RuntimeError):
                    cluster.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _one(url: str, sql: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


def _wait(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
