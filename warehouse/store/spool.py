"""An append-only FIFO of write batches on local disk, used while the database is unreachable.

Each entry is one batch with the id of the transaction that will (or may already) commit it, so
replaying an entry whose COMMIT was cut off by the outage never stores it twice (the writer looks
the id up in `ingest_batches` first). Entries are framed as `magic | length | crc32 | pickle` so a
torn last entry left by a crash is detected and cut off instead of replayed as garbage.

Pickle is read back through an allow-list of the record classes and the few standard types they
contain: a spool file can never make the collector import or run anything else.

One process owns a spool directory at a time (an exclusive `flock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import pickle
import struct
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson

from warehouse import records

log = logging.getLogger("warehouse.spool")

MAGIC = b"OWS1"
HEADER = struct.Struct("<4sII")  # magic, payload length, crc32 of payload
SEGMENT_BYTES = 64 * 1024 * 1024
BACKLOG_FILE = "backlog.json"

_ALLOWED = {
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timezone"), ("datetime", "timedelta"),
    ("decimal", "Decimal"), ("uuid", "UUID"), ("uuid", "SafeUUID"),
} | {("warehouse.records", cls.__name__) for cls in (records.RawMessage, *records.TABLE_OF)}


class SpoolError(RuntimeError):
    pass


class _RecordUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"spool entry refers to {module}.{name}, which is not a record type")
        return super().find_class(module, name)


class _RecordPickler(pickle.Pickler):
    """Writes driver subclasses of allowed types (asyncpg's UUID) as the plain type, so that what is
    written can always be read back by _RecordUnpickler."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, UUID) and type(obj) is not UUID:
            return UUID, (str(obj),)
        return NotImplemented


def _dumps(entry: Any) -> bytes:
    buffer = io.BytesIO()
    _RecordPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(entry)
    return buffer.getvalue()


Unit = tuple[Any, Sequence[Any]]  # (RawMessage | None, derived records)
Entry = tuple[UUID, list[Unit]]


class Spool:
    """FIFO of (batch_id, units) entries in numbered segment files under `directory`."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_handle = open(self.directory / ".lock", "w")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_handle.close()
            raise SpoolError(
                f"spool directory {self.directory} is in use by another writer; "
                "give each collector process its own spool directory"
            ) from None
        self._write_handle: io.BufferedWriter | None = None
        self._write_segment: int | None = None
        self._read_segment: int | None = None
        self._read_offset = 0
        self._head: tuple[Entry, int] | None = None
        self.pending_batches = 0
        self.pending_frames: Counter[str] = Counter()
        self.last_event_ids: dict[str, str] = {}  # per source, the newest SSE id in the spool
        self._recover()

    # -- state ---------------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.spool") if p.stem.isdigit())

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:010d}.spool"

    def _recover(self) -> None:
        """Count what earlier runs left behind, and cut off a torn tail."""
        for segment in self._segments():
            for entry in self._scan(segment, truncate_torn=True):
                self._count(entry, +1)
        segments = self._segments()
        self._read_segment = segments[0] if segments else None
        self._write_backlog()

    @property
    def pending(self) -> bool:
        return self.pending_batches > 0

    # -- writing -------------------------------------------------------------------------------

    def append(self, batch_id: UUID, units: list[Unit]) -> None:
        """Append one entry durably. Raises OSError when the disk refuses (full, read-only)."""
        payload = _dumps((batch_id, units))
        handle = self._writer(len(payload))
        handle.write(HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload)
        handle.flush()
        if self.fsync:
            os.fsync(handle.fileno())
        self._count((batch_id, units), +1)
        if self._read_segment is None:
            self._read_segment = self._write_segment
        self._write_backlog()

    def _writer(self, size: int) -> io.BufferedWriter:
        if self._write_handle is not None and self._write_handle.tell() + size > SEGMENT_BYTES:
            self._write_handle.close()
            self._write_handle = None
        if self._write_handle is None:
            segments = self._segments()
            self._write_segment = (segments[-1] + 1) if segments else 1
            self._write_handle = open(self._path(self._write_segment), "ab")  # noqa: SIM115
        return self._write_handle

    # -- reading -------------------------------------------------------------------------------

    def peek(self) -> Entry | None:
        """The oldest entry not yet committed, or None."""
        while self._read_segment is not None:
            found = self._read_at(self._read_segment, self._read_offset)
            if found is not None:
                self._head = found
                return found[0]
            if not self._advance_segment():
                return None
        return None

    def commit_head(self) -> None:
        """The entry returned by peek() is in the database: move past it."""
        assert self._head is not None, "commit_head() without peek()"
        entry, self._read_offset = self._head
        self._head = None
        self._count(entry, -1)
        if self.pending_batches == 0:
            self._reset()
        self._write_backlog()

    def _advance_segment(self) -> bool:
        """Current read segment is exhausted: delete it unless it is still being written."""
        if self._read_segment is None or self._read_segment == self._write_segment:
            return False
        with contextlib.suppress(FileNotFoundError):
            self._path(self._read_segment).unlink()
        later = [s for s in self._segments() if s > self._read_segment]
        self._read_segment = later[0] if later else None
        self._read_offset = 0
        return self._read_segment is not None

    def _reset(self) -> None:
        """Everything is replayed: delete the files so the spool takes no disk space."""
        if self._write_handle is not None:
            self._write_handle.close()
            self._write_handle = None
        for segment in self._segments():
            self._path(segment).unlink()
        self._write_segment = self._read_segment = None
        self._read_offset = 0

    def _read_at(self, segment: int, offset: int) -> tuple[Entry, int] | None:
        try:
            with open(self._path(segment), "rb") as handle:
                handle.seek(offset)
                header = handle.read(HEADER.size)
                if len(header) < HEADER.size:
                    return None
                magic, length, crc = HEADER.unpack(header)
                payload = handle.read(length)
        except FileNotFoundError:
            return None
        if magic != MAGIC or len(payload) < length or zlib.crc32(payload) != crc:
            return None
        return _RecordUnpickler(io.BytesIO(payload)).load(), offset + HEADER.size + length

    def _scan(self, segment: int, *, truncate_torn: bool) -> list[Entry]:
        entries: list[Entry] = []
        offset = 0
        size = self._path(segment).stat().st_size
        while offset < size:
            try:
                found = self._read_at(segment, offset)
            except (pickle.UnpicklingError, EOFError, ValueError) as exc:
                log.error("spool %s: unreadable entry at byte %d (%s); cutting it off", segment, offset, exc)
                found = None
            if found is None:
                break
            entries.append(found[0])
            offset = found[1]
        if offset < size and truncate_torn:
            log.warning(
                "spool segment %s ends with %d bytes of a torn entry (crash while spooling); cut off",
                self._path(segment), size - offset,
            )
            os.truncate(self._path(segment), offset)
        return entries

    # -- bookkeeping ---------------------------------------------------------------------------

    def _count(self, entry: Entry, sign: int) -> None:
        self.pending_batches += sign
        for raw, _rows in entry[1]:
            if raw is not None:
                self.pending_frames[raw.source] += sign
                if sign > 0 and raw.event_id is not None:
                    self.last_event_ids[raw.source] = raw.event_id
        self.pending_frames = +self.pending_frames  # drop zero counts

    def _write_backlog(self) -> None:
        """A small JSON file `warehouse status` reads to show the backlog of a running collector."""
        state = {"batches": self.pending_batches, "frames": dict(self.pending_frames)}
        tmp = self.directory / (BACKLOG_FILE + ".tmp")
        with contextlib.suppress(OSError):
            tmp.write_bytes(orjson.dumps(state))
            tmp.replace(self.directory / BACKLOG_FILE)

    def close(self) -> None:
        if self._write_handle is not None:
            self._write_handle.close()
            self._write_handle = None
        self._lock_handle.close()


def read_backlog(spool_root: Path) -> dict[str, int]:
    """Frames waiting in every spool under `spool_root`, per source (for `warehouse status`)."""
    totals: Counter[str] = Counter()
    for path in spool_root.glob(f"*/{BACKLOG_FILE}"):
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            totals.update(orjson.loads(path.read_bytes()).get("frames", {}))
    return dict(totals)


class UnusableSpool:
    """Stands in for a spool whose directory could not be created or opened at start: nothing is
    pending, and every append fails as the disk did, so the writer counts the frames as dropped."""

    pending = False
    pending_batches = 0

    def __init__(self, directory: Path, error: OSError) -> None:
        self.directory, self.error = Path(directory), error
        self.last_event_ids: dict[str, str] = {}

    def append(self, batch_id: UUID, units: list[Unit]) -> None:
        raise self.error

    def peek(self) -> Entry | None:
        return None

    def commit_head(self) -> None:
        raise AssertionError("an unusable spool holds no entry")

    def close(self) -> None:
        pass
