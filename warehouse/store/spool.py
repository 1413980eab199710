"""An append-only FIFO of write batches on local disk, used while the database is unreachable.

Each entry is one batch with the id of the transaction that will (or may already) commit it, so
replaying an entry whose COMMIT was cut off by the outage never stores it twice (the writer looks
the id up in `ingest_batches` first). Entries are framed as `magic | length | crc32 | payload` so a
torn last entry left by a crash is detected and cut off instead of replayed as garbage. The
payload is written by `spoolcodec`: self-describing JSON (tables and columns by name) that later
versions can read; a spool written by the previous version (pickles, magic OWS1) still replays.

An intact entry this version cannot read (a newer format, a table or column it does not know) is
never dropped: it is skipped with an error in the log, and its segment file, once the rest of it
is replayed, is moved to `refused/` for a human instead of deleted.

One process owns a spool directory at a time (an exclusive `flock`). A file `id` names the directory
(made once): a collector's claims record the spool it owns (docs/claims.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import orjson

from warehouse.records import EVENT_CONNECT, EVENT_DISCONNECT, CollectorEvent
from warehouse.store.spoolcodec import MAGIC, Entry, Epochs, Unreadable, decode_stamped, encode
from warehouse.store.spoolcodec import Unit as Unit

Stamped = tuple[UUID, list[Unit], Epochs]  # an entry with the claim epochs its frames were received under

log = logging.getLogger("warehouse.spool")

HEADER = struct.Struct("<4sII")  # magic, payload length, crc32 of payload
ID_FILE = "id"
SEGMENT_BYTES = 64 * 1024 * 1024
BACKLOG_FILE = "backlog.json"
REFUSED_DIR = "refused"


class SpoolError(RuntimeError):
    pass


@dataclass
class SpooledConnection:
    """A connection an earlier run's spool holds frames or events of: the newest of their times, and
    whether its connect and its disconnect are there (a run that was not killed ends each feed connection
    with one; the frames of a resync's REST answers have a connection id of their own, and neither)."""

    source: str
    last_at: datetime
    opened: bool = False
    closed: bool = False


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
        self.id = _spool_id(self.directory / ID_FILE)
        self._write_handle: io.BufferedWriter | None = None
        self._write_segment: int | None = None
        self._read_segment: int | None = None
        self._read_offset = 0
        self._head: tuple[Stamped, int] | None = None
        self.head_epochs: Epochs = {}  # the epochs of the entry peek() returned
        self._refused: dict[int, set[int]] = {}  # segment → offsets of entries this version cannot read
        self.pending_batches = 0
        self.pending_frames: Counter[str] = Counter()
        self.pending_units: Counter[tuple[str, int]] = Counter()  # per (source, epoch): units of claimed frames
        # per source, the newest SSE id in the spool and the epoch it was received under (0: before claims)
        self.last_event_ids: dict[str, tuple[str, int]] = {}
        self.connections: dict[UUID, SpooledConnection] = {}  # those an earlier run left here
        self._recover()

    # -- state ---------------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.spool") if p.stem.isdigit())

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:010d}.spool"

    def _recover(self) -> None:
        """Count what earlier runs left behind, and cut off a torn tail."""
        for segment in self._segments():
            entries = self._scan(segment, truncate_torn=True)
            for entry in entries:
                self._count(entry, +1)
                self._note_connections(entry)
            if not entries and segment in self._refused:
                self._retire(segment)  # nothing in it to replay
        segments = self._segments()
        self._read_segment = segments[0] if segments else None
        self._write_backlog()

    @property
    def pending(self) -> bool:
        return self.pending_batches > 0

    def size_bytes(self) -> int:
        """What the spool's segment files take on disk (/metrics: a spool growing means an outage)."""
        total = 0
        for segment in self._segments():
            with contextlib.suppress(FileNotFoundError):  # replayed and removed meanwhile
                total += self._path(segment).stat().st_size
        return total

    # -- writing -------------------------------------------------------------------------------

    def append(self, batch_id: UUID, units: list[Unit], epochs: Epochs | None = None) -> None:
        """Append one entry durably. Raises OSError when the disk refuses (full, read-only)."""
        payload = encode(batch_id, units, epochs)
        handle = self._writer(len(payload))
        handle.write(HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload)
        handle.flush()
        if self.fsync:
            os.fsync(handle.fileno())
        self._count((batch_id, units, epochs or {}), +1)
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
                entry, end = found
                if isinstance(entry, Unreadable):
                    self._refuse(self._read_segment, self._read_offset, entry)
                    self._read_offset = end
                    continue
                self._head = entry, end
                self.head_epochs = entry[2]
                return entry[0], entry[1]
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
        self._retire(self._read_segment)
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
            self._retire(segment)
        self._write_segment = self._read_segment = None
        self._read_offset = 0

    def _read_at(self, segment: int, offset: int) -> tuple[Stamped | Unreadable, int] | None:
        """The entry at `offset` (or why this version cannot read it) and where the next one
        starts; None at the end of the segment or at a torn entry."""
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
        if not magic.startswith(MAGIC[:3]) or len(payload) < length or zlib.crc32(payload) != crc:
            return None
        end = offset + HEADER.size + length
        try:
            (batch_id, units), epochs = decode_stamped(magic, payload)
        except Unreadable as exc:
            return exc, end
        return (batch_id, units, epochs), end

    def _scan(self, segment: int, *, truncate_torn: bool) -> list[Stamped]:
        entries: list[Stamped] = []
        offset = 0
        size = self._path(segment).stat().st_size
        while offset < size:
            found = self._read_at(segment, offset)
            if found is None:
                break
            entry, end = found
            if isinstance(entry, Unreadable):
                self._refuse(segment, offset, entry)
            else:
                entries.append(entry)
            offset = end
        if offset < size and truncate_torn:
            log.warning(
                "spool segment %s ends with %d bytes of a torn entry (crash while spooling); cut off",
                self._path(segment), size - offset,
            )
            os.truncate(self._path(segment), offset)
        return entries

    def _refuse(self, segment: int, offset: int, reason: Unreadable) -> None:
        """Skip an entry this version cannot read, and say so once; its file is kept (_retire)."""
        offsets = self._refused.setdefault(segment, set())
        if offset not in offsets:
            offsets.add(offset)
            log.error("spool %s: the entry at byte %d cannot be read by this version (%s); skipped, and the"
                      " file is kept in %s for a human", self._path(segment), offset, reason,
                      self.directory / REFUSED_DIR)

    def _retire(self, segment: int) -> None:
        """A segment is replayed: delete it, or move it aside if it holds entries that were refused."""
        path = self._path(segment)
        refused = self._refused.pop(segment, None)
        with contextlib.suppress(FileNotFoundError):
            if not refused:
                path.unlink()
                return
            kept = self.directory / REFUSED_DIR / f"{path.stem}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.spool"
            kept.parent.mkdir(exist_ok=True)
            path.rename(kept)
            log.error("spool: %d entries this version cannot read are kept in %s; to replay them with a version"
                      " that reads them, move the file into %s as a segment numbered above every other there"
                      " (batches already stored are skipped)", len(refused), kept, self.directory)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _count(self, entry: Stamped, sign: int) -> None:
        self.pending_batches += sign
        _batch_id, units, epochs = entry
        for raw, rows in units:
            source = raw.source if raw is not None else rows[0].source if rows else None
            if source in epochs:
                self.pending_units[source, epochs[source]] += sign
            if raw is not None:
                self.pending_frames[raw.source] += sign
                if sign > 0 and raw.event_id is not None:
                    self.last_event_ids[raw.source] = raw.event_id, epochs.get(raw.source, 0)
        self.pending_frames = +self.pending_frames  # drop zero counts
        self.pending_units = +self.pending_units

    def _note_connections(self, entry: Stamped) -> None:
        """Per feed connection, when an earlier run last heard of it and whether it ended there."""
        for raw, rows in entry[1]:
            if raw is not None:
                self._note(raw.connection_id, raw.source, raw.received_at)
            for row in rows:
                if isinstance(row, CollectorEvent):
                    self._note(row.connection_id, row.source, row.received_at, row.event)

    def _note(self, connection_id: UUID | None, source: str, at: datetime, event: str | None = None) -> None:
        if connection_id is None:
            return
        known = self.connections.setdefault(connection_id, SpooledConnection(source, at))
        if event == EVENT_DISCONNECT:
            known.closed = True
        else:
            known.opened |= event == EVENT_CONNECT
            known.last_at = max(known.last_at, at)

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


def _spool_id(path: Path) -> UUID:
    """This directory's identity (made once, kept): a claim held by a process whose spool was this one
    is free as soon as this one is opened, since its lock proves that process is gone."""
    try:
        return UUID(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        made = uuid4()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{made}\n")
        tmp.replace(path)
        return made


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
    id = None

    def __init__(self, directory: Path, error: OSError) -> None:
        self.directory, self.error = Path(directory), error
        self.head_epochs: Epochs = {}
        self.last_event_ids: dict[str, tuple[str, int]] = {}
        self.pending_units: Counter[tuple[str, int]] = Counter()
        self.connections: dict[UUID, SpooledConnection] = {}

    def append(self, batch_id: UUID, units: list[Unit], epochs: Epochs | None = None) -> None:
        raise self.error

    def peek(self) -> Entry | None:
        return None

    def commit_head(self) -> None:
        raise AssertionError("an unusable spool holds no entry")

    def close(self) -> None:
        pass
