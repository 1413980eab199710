"""Which warehouse a folder belongs to (issue 26 item 3): a lake or a spool holds one database's files.

A marker file, `.warehouse`, holds the database's identity — its cluster's system identifier and its
name — written the first time the folder is used for a database, checked every time after: two
warehouses never mix their files in one folder (refused with one line saying what to do). The
default folders are per database too: `<data dir>/spool/<database>/` for spools and
`<data dir>/exports/<database>/` for the lake (warehouse.lifecycle.lakes), so two databases on one
machine never meet there in the first place.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
from psycopg.conninfo import conninfo_to_dict

from warehouse.store.database import data_dir
from warehouse.store.embedded import DATABASE as EMBEDDED_DATABASE

log = logging.getLogger("warehouse.store")

MARKER = ".warehouse"
# The cluster's identifier may be hidden (managed PostgreSQL may revoke pg_control_system): then "".
_IDENTITY = ("SELECT current_database(), coalesce((SELECT system_identifier::text FROM pg_control_system()"
             " WHERE has_function_privilege('pg_control_system()', 'EXECUTE')), '')")


class WrongWarehouse(ValueError):
    """A folder belongs to another warehouse than the one a command uses; the message says what to do."""


@dataclass(frozen=True)
class Identity:
    database: str
    system_identifier: str  # of the PostgreSQL cluster; "" when the server does not tell

    def same(self, other: Identity) -> bool:
        known = self.system_identifier and other.system_identifier
        return self.database == other.database and (not known or self.system_identifier == other.system_identifier)

    def __str__(self) -> str:
        cluster = f" of the PostgreSQL cluster {self.system_identifier}" if self.system_identifier else ""
        return f"database {self.database!r}{cluster}"


def identity(conn: psycopg.Connection[Any]) -> Identity:
    row = conn.execute(_IDENTITY).fetchone()
    assert row is not None
    return Identity(row[0], row[1])


async def identity_of(conn: asyncpg.Connection) -> Identity:
    row = await conn.fetchrow(_IDENTITY)
    return Identity(row[0], row[1])


def read_marker(directory: Path) -> Identity | None:
    """The identity `directory`'s marker holds, or None when it has none."""
    try:
        found = json.loads((directory / MARKER).read_text())
        return Identity(str(found["database"]), str(found["system_identifier"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise WrongWarehouse(f"{directory / MARKER} is not a warehouse marker ({exc}); remove it if this folder"
                             " is yours, and run the command again") from None


def claim(directory: Path, owner: Identity, what: str) -> bool:
    """Tie `directory` (which must exist) to `owner`: write its marker when it has none (True), or check
    it names `owner` (WrongWarehouse when it names another database)."""
    found = read_marker(directory)
    if found is None:
        temporary = directory / f"{MARKER}.{os.getpid()}"
        temporary.write_text(json.dumps({"database": owner.database, "system_identifier": owner.system_identifier}))
        os.replace(temporary, directory / MARKER)
        return True
    if not found.same(owner):
        raise WrongWarehouse(f"{what} {directory} belongs to {found}, not to {owner} this command uses; give each"
                             f" warehouse a folder of its own ({_SETTING[what]})")
    return False


_SETTING = {"the lake": "[export] dir in the config, or --dir", "the spool": "[writer] spool_dir in the config"}


def database_name(url: str | None) -> str:
    """The database a URL names (libpq's default: the user's name), or the embedded server's for None."""
    if url is None:
        return EMBEDDED_DATABASE
    parts = conninfo_to_dict(url)
    return str(parts.get("dbname") or os.environ.get("PGDATABASE") or parts.get("user") or os.environ.get("PGUSER")
               or getpass.getuser())


def folder_name(database: str) -> str:
    """A database name as one folder name."""
    return re.sub(r"[^\w.-]", "_", database) or "_"


def spool_root(url: str | None) -> Path:
    """Where spools live by default for the database at `url` (None: the embedded one)."""
    return data_dir() / "spool" / folder_name(database_name(url))


# Remove on or after 2027-06-01 (or at version 0.2.0, if sooner), with its test in test_homes.py.
def adopt_legacy_spool(spool_dir: Path) -> None:
    """Before spools were per database (2026-12), every spool was `<data dir>/spool/<writer name>`: a
    default spool left there is moved to its per-database place, so the next start replays it."""
    legacy = spool_dir.parent.parent / spool_dir.name
    if spool_dir.exists() or not legacy.is_dir() or spool_dir.is_relative_to(legacy):
        return
    if (legacy / MARKER).exists() or not any(legacy.glob("*.spool")):
        return
    spool_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(legacy, spool_dir)
    log.warning("moved the spool %s to %s (spools are per database now)", legacy, spool_dir)
