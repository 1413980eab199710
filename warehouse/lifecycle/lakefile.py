"""What the lake's checks read of one local file: its size and its Parquet footer's row count (cheap: the
end of the file), and its sha256 (every byte). The one place a check touches a local lake file's bytes;
a lake in a bucket answers the same through warehouse.lifecycle.storage (HEAD, the stored sha256, the
footer by ranged GET). `current` is what a check made at every query (the query surface's) reads.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class Facts:
    bytes: int
    rows: int | None  # the footer's num_rows; None when the file is no readable Parquet file


def facts(path: str | Path) -> Facts | None:
    """The file's size and footer row count, or None when there is no such file."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return None
    import duckdb

    try:
        with _lock:
            row = _duckdb().execute("SELECT num_rows FROM parquet_file_metadata(?)", [str(path)]).fetchone()
    except duckdb.Error:  # too small, no magic bytes, a footer that does not parse
        return Facts(size, None)
    return Facts(size, int(row[0]) if row else None)


def current(path: str | Path) -> Facts | None:
    """`facts`, its footer read again only when the file changed (size, times or inode: a file replaced
    or written to): what a check made at every query (the query surface's) costs a stat."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    version = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)
    known = _seen.get(str(path))
    if known is not None and known[0] == version:
        return known[1]
    found = facts(path)
    _seen[str(path)] = (version, found)
    return found


_seen: dict[str, tuple[tuple[int, ...], Facts | None]] = {}


def sha256(path: str | Path, *, sync: bool = False) -> str:
    """The sha256 `export_runs` records for a file. `sync`: flush the file to disk too (the export's
    rename must not land before the data does)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        if sync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


_lock = threading.Lock()  # one DuckDB connection for every caller (the surface's checks run in threads)


@functools.cache
def _duckdb() -> duckdb.DuckDBPyConnection:
    import duckdb

    return duckdb.connect()
