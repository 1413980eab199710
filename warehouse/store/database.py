"""Which database to use, and how each driver wants its URL.

Selection order (README, Configuration): `--database-url`, else WAREHOUSE_DATABASE_URL, else the
config file's `[database] url`, else the embedded PostgreSQL in the data directory (started on demand).
Also the one generic read helper, `scalar`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

import platformdirs

from warehouse.redact import Redactor
from warehouse.store.embedded import EmbeddedPostgres

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import Engine

ENV_URL = "WAREHOUSE_DATABASE_URL"
ENV_DATA_DIR = "WAREHOUSE_DATA_DIR"
DEMO_DATABASE = "demo"  # `warehouse demo` writes here, on the embedded server: never into a warehouse

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SCHEME = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)


def data_dir() -> Path:
    """Where the embedded server, the spool and default exports live (per user)."""
    configured = os.environ.get(ENV_DATA_DIR)
    if configured:
        return Path(configured).expanduser().resolve()
    return platformdirs.user_data_path("odds-warehouse")


def embedded_server() -> EmbeddedPostgres:
    return EmbeddedPostgres(data_dir() / "postgres")


def demo_database(fresh: bool = False) -> str:
    """The URL of the demo's own database on the embedded server (started if needed). `fresh`: made
    again, empty (each demo starts over: a previous demo's fixtures would be resynced into 404s by
    the new run's simulators); else it must exist."""
    import psycopg

    server = embedded_server()
    if not fresh and not server.is_initialised():  # nothing to find: no server started for nothing
        raise ValueError(f"no demo database yet (no embedded PostgreSQL in {server.data_dir}): run `warehouse demo`"
                         " first")
    server.ensure_running()
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,)).fetchone()
        if not fresh and not exists:
            raise ValueError(f"no demo database yet in the embedded PostgreSQL in {server.data_dir}:"
                             " run `warehouse demo` first")
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')  # its sessions too
            conn.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    return server.url(DEMO_DATABASE)


def configured_database_url(cli_url: str | None = None, config_url: str | None = None) -> str | None:
    """The external database the user asked for, or None for the embedded one."""
    for url in (cli_url, os.environ.get(ENV_URL), config_url):
        if url and url.strip():
            return normalise_url(url.strip())
    return None


def resolve_database_url(cli_url: str | None = None, config_url: str | None = None) -> str:
    """The URL of the database in use, starting the embedded server if that is the one."""
    return configured_database_url(cli_url, config_url) or embedded_server().ensure_running()


def normalise_url(url: str) -> str:
    """Accept libpq URLs, libpq keyword strings (`host=a,b dbname=odds target_session_attrs=read-write`)
    and SQLAlchemy-style `postgresql+driver://` ones (`postgresql+asyncpg://…?ssl=require` as
    SQLAlchemy's asyncpg dialect spells sslmode); return a libpq URL, which every driver here takes
    (asyncpg, psycopg, DuckDB, SQLAlchemy through sqlalchemy_url and store/engine.py). The one rule:
    every URL a user gives goes through here before any driver sees it.

    Several hosts (a primary and its standbys; with `target_session_attrs=read-write` every connection
    goes to whichever is the primary now) may be given as libpq does — `postgresql://a:5432,b:5432/odds`
    or `?host=a,b&port=5432,5432` — or as SQLAlchemy does, `?host=a:5432&host=b:5432`."""
    if not _SCHEME.match(url) and "=" in url and "://" not in url:
        return _from_keywords(url)
    match = _SCHEME.match(url)
    if not match:
        raise ValueError(
            f"database URL must start with postgresql:// (got {redact_url(url)!r}); "
            "example: postgresql://user@host:5432/odds, or several hosts: "
            "postgresql://user@a:5432,b:5432/odds?target_session_attrs=read-write"
        )
    return _hosts_once(_sslmode(urlsplit("postgresql://" + url[match.end():]), url))


def _sslmode(parts: SplitResult, given: str) -> SplitResult:
    """`ssl=MODE` (asyncpg's keyword, in SQLAlchemy's asyncpg URLs) as libpq's `sslmode=MODE`."""
    query = parse_qsl(parts.query, keep_blank_values=True)
    modes = [value for key, value in query if key == "ssl"]
    if not modes:
        return parts
    if len(modes) > 1 or modes[0] not in SSLMODES or any(key == "sslmode" for key, _ in query):
        raise ValueError(f"database URL {redact_url(given)!r}: ssl= takes one of {', '.join(SSLMODES)}, and not"
                         " beside sslmode=; example: postgresql://user@host/odds?sslmode=verify-full")
    query = [("sslmode", value) if key == "ssl" else (key, value) for key, value in query]
    return parts._replace(query=urlencode(query, safe=":,/"))


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy URL using the psycopg (v3) driver, for migrations and reporting queries. Several hosts in
    the URL's netloc go to its query (`?host=a:5432&host=b:5432`), the form SQLAlchemy reads."""
    parts = urlsplit(normalise_url(url))
    user, at, hosts = parts.netloc.rpartition("@")
    if "," in hosts:
        query = [("host", host) for host in hosts.split(",")] + parse_qsl(parts.query, keep_blank_values=True)
        parts = parts._replace(netloc=user + at, query=urlencode(query, safe=":,/"))
    return "postgresql+psycopg://" + urlunsplit(parts).removeprefix("postgresql://")


def redact_url(url: str) -> str:
    """The URL (or libpq keyword string) with any password replaced (user:password@, ?password=,
    password=…), for messages and logs."""
    if "://" in url:
        return Redactor([]).text(re.sub(r"(://[^:/@?]+):[^@/?]*@", r"\1:***@", url))
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)  # libpq keyword=value


def _hosts_once(parts: SplitResult) -> str:
    """SQLAlchemy's `host=a:5432&host=b:5432` as libpq's `host=a,b&port=5432,5432` (libpq keeps only the last)."""
    query = parse_qsl(parts.query, keep_blank_values=True)
    hosts = [value for key, value in query if key == "host"]
    if len(hosts) < 2:
        return urlunsplit(parts)
    names, ports = zip(*(_host_port(host) for host in hosts), strict=True)
    rest = [(key, value) for key, value in query if key not in ("host", "port")]
    merged = [("host", ",".join(names))] + ([("port", ",".join(p or "5432" for p in ports))] if any(ports) else [])
    return urlunsplit(parts._replace(query=urlencode(merged + rest, safe=":,/")))


def _host_port(host: str) -> tuple[str, str]:
    name, colon, port = host.rpartition(":")
    return (name, port) if colon and port.isdigit() and not host.startswith("/") else (host, "")


def _from_keywords(conninfo: str) -> str:
    """A libpq keyword/value string as a libpq URL."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    except ProgrammingError as exc:
        raise ValueError(f"database connection string {redact_url(conninfo)!r} is not one libpq reads ({exc});"
                         " example: host=a,b dbname=odds target_session_attrs=read-write") from None
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    credentials = user + (":" + quote(password, safe="") if password is not None else "")
    database = quote(params.pop("dbname", ""), safe="")
    query = urlencode(sorted(params.items()), safe=":,/")
    return f"postgresql://{credentials + '@' if credentials else ''}/{database}" + (f"?{query}" if query else "")


def sqlalchemy_engine(url: str | None = None, config: str | Path | None = None) -> Engine:
    """A SQLAlchemy engine on the database every `warehouse` command uses: `url`, else
    $WAREHOUSE_DATABASE_URL, else `[database] url` of `config`, else the embedded server (started
    if needed). The tables are warehouse.schema's SQLAlchemy Core metadata."""
    from sqlalchemy import create_engine

    from warehouse.config import load_config

    return create_engine(sqlalchemy_url(resolve_database_url(url, load_config(config).database_url)))


def scalar(conn: psycopg.Connection[Any], sql: str, params: Sequence[object] | None = None) -> Any:
    """The first column of the one row `sql` returns."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]
