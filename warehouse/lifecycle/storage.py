"""Where the lake's files live: a local directory or an S3 bucket, behind one small interface.

The export, retention's verification, verify-lake, the query surface and replay use a `Lake` and do not
care which: `location` (what export_runs records), `commit` (a finished local file becomes the
table-day's file in one step: a rename, or a PUT / completed multipart upload), `facts` (size and
footer row count: a stat or a HEAD, and the file's tail), `unchanged` (the sha256 recorded: the bytes
hashed locally, the checksum stored with the object in a bucket — no download), `locations` (a
table's day files), `prepare` (a DuckDB connection able to read them). Nothing deletes a lake file.
Files are written first to `work`, a local folder (the lake's own `.export` for a directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from warehouse.lake import EXPORT_TABLES
from warehouse.lifecycle import lakefile, lakes, layout
from warehouse.lifecycle.bucket import Bucket, BucketError, Settings, attach, is_url
from warehouse.store.database import data_dir
from warehouse.store.homes import MARKER, Identity, WrongWarehouse, identity

if TYPE_CHECKING:
    import duckdb

WORK_DIR = ".export"  # the lock and the files being written: hidden, and no reader's glob takes them


class Lake(Protocol):
    root: Path | str

    def location(self, table: str, day: date) -> str: ...
    def is_own(self, table: str, day: date, recorded: str) -> bool: ...
    def commit(self, finished: Path, location: str, sha256: str) -> None: ...
    def facts(self, location: str) -> lakefile.Facts | None: ...
    def current(self, location: str) -> lakefile.Facts | None: ...
    def unchanged(self, location: str, sha256: str) -> bool: ...
    def locations(self, table: str) -> list[str]: ...
    def prepare(self, con: duckdb.DuckDBPyConnection) -> None: ...
    def tie(self, conn: psycopg.Connection[Any]) -> None: ...
    @property
    def work(self) -> Path: ...


def open_lake(root: Lake | Path | str, settings: Settings | None = None) -> Lake:
    """The lake at `root`: `s3://BUCKET/PREFIX` (with `settings`, default the AWS variables) or a directory."""
    if isinstance(root, Directory | BucketLake):
        return root
    if isinstance(root, str) and is_url(root):
        return BucketLake(root, settings)
    if isinstance(root, str | Path):
        return Directory(Path(root).expanduser())
    return root


def root_of(text: str | Path) -> Path | str:
    """A lake root as a user wrote it: a bucket's URL stays a string, anything else is a path."""
    return str(text).rstrip("/") if is_url(str(text)) else Path(text).expanduser()


class Directory:
    """The lake in a local directory: files renamed into place, hashed to be checked."""

    def __init__(self, root: Path) -> None:
        self.root: Path | str = root
        self.path = root

    def __str__(self) -> str:
        return str(self.path)

    @property
    def work(self) -> Path:
        return self.path / WORK_DIR

    def location(self, table: str, day: date) -> str:
        return os.path.abspath(layout.file(self.path, table, day))

    def is_own(self, table: str, day: date, recorded: str) -> bool:
        return lakes.is_lake_file(self.path, table, day, recorded)

    def commit(self, finished: Path, location: str, sha256: str) -> None:
        final = Path(location)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(finished, final)  # the commit
        descriptor = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def facts(self, location: str) -> lakefile.Facts | None:
        return lakefile.facts(location)

    def current(self, location: str) -> lakefile.Facts | None:
        return lakefile.current(location)

    def unchanged(self, location: str, sha256: str) -> bool:
        return os.path.exists(location) and lakefile.sha256(location) == sha256

    def locations(self, table: str) -> list[str]:
        return [str(path) for path in layout.files(self.path, table)]

    def prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        pass

    def tie(self, conn: psycopg.Connection[Any]) -> None:
        lakes.tie(conn, self.path)


class BucketLake:
    """The lake in a bucket: files uploaded in one step, checked by HEAD, stored checksum and footer."""

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.bucket = Bucket(url, settings)
        self.root: Path | str = self.bucket.root
        self._seen: dict[str, tuple[tuple[str, int], int | None]] = {}

    def __str__(self) -> str:
        return self.bucket.root

    @property
    def work(self) -> Path:
        """Files being written, on this machine (a killed merge's file is found here by the next run)."""
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.bucket.root.removeprefix("s3://"))
        digest = hashlib.sha256(self.bucket.root.encode()).hexdigest()[:8]
        return data_dir() / "bucket-work" / f"{name[:80]}-{digest}"

    def location(self, table: str, day: date) -> str:
        return self.bucket.location(table, day)

    def is_own(self, table: str, day: date, recorded: str) -> bool:
        return recorded == self.location(table, day)

    def commit(self, finished: Path, location: str, sha256: str) -> None:
        self.bucket.put(finished, location, sha256)

    def facts(self, location: str) -> lakefile.Facts | None:
        head = self.bucket.head(location)
        if head is None:
            return None
        return lakefile.Facts(head.bytes, self.bucket.footer_rows(location))

    def current(self, location: str) -> lakefile.Facts | None:
        """`facts` at the cost of a HEAD: the footer read again only when the object changed (its ETag)."""
        head = self.bucket.head(location)
        if head is None:
            return None
        version = (head.etag, head.bytes)
        known = self._seen.get(location)
        if known is None or known[0] != version:
            known = self._seen[location] = (version, self.bucket.footer_rows(location))
        return lakefile.Facts(head.bytes, known[1])

    def unchanged(self, location: str, sha256: str) -> bool:
        head = self.bucket.head(location)
        return head is not None and head.sha256 == sha256

    def locations(self, table: str) -> list[str]:
        return self.bucket.locations(table)

    def prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        attach(con, self.bucket.settings, self.bucket.name)

    def tie(self, conn: psycopg.Connection[Any]) -> None:
        """Tie the bucket's prefix to this database (its `.warehouse` object), as lakes.tie does a folder."""
        owner = identity(conn)
        marker = f"{self.bucket.root}/{MARKER}"
        found = self.bucket.read_bytes(marker)
        if found is not None:
            try:
                data = json.loads(found)
                named = Identity(str(data["database"]), str(data["system_identifier"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise WrongWarehouse(f"{marker} is not a warehouse marker ({exc}); remove it if this prefix is"
                                     " yours, and run the command again") from None
            if not named.same(owner):
                raise WrongWarehouse(f"the lake {self.bucket.root} belongs to {named}, not to {owner} this command"
                                     " uses; give each warehouse a prefix of its own ([export] dir)")
            return
        recorded = {path for (path,) in conn.execute("SELECT DISTINCT path FROM export_runs")}
        strangers = [found for table in EXPORT_TABLES for found in self.locations(table) if found not in recorded]
        if strangers:
            raise WrongWarehouse(f"the lake {self.bucket.root} holds objects {owner} never exported ({strangers[0]},"
                                 f" and {len(strangers) - 1} more): another warehouse's? Give each warehouse a"
                                 " prefix of its own ([export] dir)")
        self.bucket.put_bytes(marker, json.dumps({"database": owner.database,
                                                  "system_identifier": owner.system_identifier}).encode())


def check_reachable(lake: Lake) -> None:
    """For a bucket: that it is there and may be listed, before any work (BucketError names the cause)."""
    if isinstance(lake, BucketLake):
        lake.bucket.check()


__all__ = ["BucketError", "BucketLake", "Directory", "Lake", "check_reachable", "open_lake", "root_of"]
