"""What the lake's checks read of one file: its size and its Parquet footer's row count (cheap: the end
of the file), and its sha256 (every byte). The one place a check touches a lake file's bytes, so a
lake in a bucket (later) implements these and nothing else moves.
"""

from __future__ import annotations

import functools
import hashlib
import os
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
        row = _duckdb().execute("SELECT num_rows FROM parquet_file_metadata(?)", [str(path)]).fetchone()
    except duckdb.Error:  # too small, no magic bytes, a footer that does not parse
        return Facts(size, None)
    return Facts(size, int(row[0]) if row else None)


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


@functools.cache
def _duckdb() -> duckdb.DuckDBPyConnection:
    import duckdb

    return duckdb.connect()
