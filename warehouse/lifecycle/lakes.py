"""Which lake belongs to which warehouse (issue 26 item 3), and which files in it retention may trust.

A lake is `[export] dir` (or `export --dir`), else `<data dir>/exports/<database>`. It is tied to its
database by a marker (warehouse.store.homes): written by the first export, retention or verify-lake
that uses it, checked by every one after. A lake made before markers existed (the earlier default
`<data dir>/exports` among them) gets one the first time, if this database's `export_runs` recorded
every file in it; else it is refused, with one line saying what to do.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from warehouse.lake import EXPORT_TABLES
from warehouse.lifecycle import layout
from warehouse.store.database import configured_database_url, data_dir
from warehouse.store.homes import WrongWarehouse, claim, database_name, folder_name, identity, read_marker


def default_root(url: str | None = None) -> Path:
    """The lake of the database at `url` when no `[export] dir` is configured (None: the database the
    commands use without a config: $WAREHOUSE_DATABASE_URL, else the embedded one)."""
    name = database_name(url or configured_database_url())
    earlier = data_dir() / "exports"  # every database's default before lakes were per database
    marker = read_marker(earlier) if earlier.is_dir() else None
    if (marker is not None and marker.database == name) or (marker is None and _holds_files(earlier)):
        return earlier
    return earlier / folder_name(name)


def tie(conn: psycopg.Connection[Any], root: Path) -> None:
    """Tie the lake at `root` (made if missing) to the database of `conn`, or WrongWarehouse."""
    root.mkdir(parents=True, exist_ok=True)
    owner = identity(conn)
    if read_marker(root) is None and _holds_files(root):
        recorded = {_resolved(path) for (path,) in conn.execute("SELECT DISTINCT path FROM export_runs")}
        strangers = [path for table in EXPORT_TABLES for path in layout.files(root, table)
                     if _resolved(path) not in recorded]
        if strangers:
            raise WrongWarehouse(f"the lake {root} holds files {owner} never exported ({strangers[0]}, and"
                                 f" {len(strangers) - 1} more): another warehouse's? Give each warehouse a lake of"
                                 " its own ([export] dir in the config, or --dir)")
    claim(root, owner, "the lake")


def is_lake_file(root: Path, table: str, day: date, path: str | Path) -> bool:
    """Whether `path` is the lake's own file of the table-day (what retention trusts): not a copy elsewhere."""
    return _resolved(path) == _resolved(layout.file(root, table, day))


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _holds_files(root: Path) -> bool:
    return any(layout.files(root, table) for table in EXPORT_TABLES)
