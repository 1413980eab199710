"""`replay --check`: derive a source's stored frames again and compare with the rows stored for them.

A UTC day at a time: the rows derived again and the rows stored for that day's frames go into
DuckDB (rows.py's canonical shape), and `EXCEPT ALL` both ways finds, per table, rows stored but
not derived again ("missing"), derived but not stored ("extra"), and of those, pairs from one
frame ("differ": the same row with some value changed). Every table a frame derives is compared,
every column; so is each frame's kind (`raw_messages.kind`), its quarantine rows and its
collector events (resets, snapshots, subscriptions, vendor errors).

Frames whose text is not stored (not JSON, or over the size limit) cannot be derived again: they
are counted as carried and left out of the comparison.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from warehouse.config import FeedConfig
from warehouse.replay import rows
from warehouse.replay.derivation import FRAME_EVENTS, Deriver, Plan, days, load_plan, quiet_gc, today_versions
from warehouse.replay.rows import COLUMNS, RAW_KINDS, TABLES
from warehouse.replay.shards import KEYS, Job, Shard, Shared, derive_window, processes_for
from warehouse.replay.stored import Stored, resolve_range

EXAMPLES = 5  # per table
DEEP_LIMIT = 100_000  # unmatched rows beyond this are not re-examined for numbers spelled differently
# A frame's control event, before it was linked to the frame, was written after it: this much later
# at most (the writer's queue may have been full), so perhaps in the next window.
LEGACY_SLACK = timedelta(seconds=60)

Progress = Callable[[datetime, int], None]  # (day, frames replayed so far)


@dataclass
class Tally:
    """One table's comparison. `missing` and `extra` do not count the rows that `differ` pairs."""

    table: str
    derived: int = 0  # rows derived again
    stored: int = 0  # rows stored for the same frames
    matched: int = 0
    missing: int = 0  # stored, not derived again
    extra: int = 0  # derived again, not stored
    differ: int = 0  # a stored and a derived row of the same frame, with some value changed
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.differ)


@dataclass
class CheckReport:
    source: str
    where: str
    start: datetime
    end: datetime
    frames: int = 0  # derived again and compared
    carried: int = 0  # text not stored: not derived again, not compared
    warmed: int = 0  # before the range, derived only to bring an adapter up to date
    stored_versions: dict[tuple[str, str | None], int] = field(default_factory=dict)  # connections
    today: dict[str, str] = field(default_factory=dict)  # feed kind → today's adapter version
    tables: dict[str, Tally] = field(default_factory=lambda: {name: Tally(name) for name in TABLES})

    @property
    def clean(self) -> bool:
        return all(t.clean for t in self.tables.values())

    def lines(self) -> list[str]:
        """The report as `warehouse replay --check` prints it."""
        lines = [f"replay --check of {self.source}, frames received {when_text(self.start)} → {when_text(self.end)},"
                 f" from {self.where}",
                 versions_line(self.stored_versions, self.today),
                 f"frames: {self.frames:,} derived again and compared"
                 + (f"; {self.carried:,} not re-derivable (not JSON or too large when received: their text is not"
                    " stored), left out" if self.carried else "")
                 + (f"; {self.warmed:,} before the range derived first, to bring adapters up to date"
                    if self.warmed else ""),
                 ""]
        header = ("table", "stored", "derived", "match", "missing", "extra", "differ")
        table = [header] + [
            (RAW_KINDS + " (kind)" if t.table == RAW_KINDS else t.table, *(f"{n:,}" for n in
                                                                            (t.stored, t.derived, t.matched, t.missing,
                                                                             t.extra, t.differ)))
            for t in self.tables.values() if t.stored or t.derived]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines += ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                            for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in table]
        lines.append("(missing: stored but not derived again; extra: derived again but not stored; differ: a stored and"
                     " a derived row of the same frame with some value changed)")
        examples = [(t.table, line) for t in self.tables.values() for line in t.examples]
        if examples:
            lines += ["", "first differences (stored → derived again):"]
            lines += [f"  {table}: {line}" for table, line in examples]
        bad = sum(t.missing + t.extra + t.differ for t in self.tables.values())
        lines += ["", "result: every row matches" if self.clean else
                  f"result: {bad:,} rows do not match: today's adapters do not derive what is stored"]
        return lines


def check(stored: Stored, source: str, since: datetime | None = None, until: datetime | None = None,
          entry: FeedConfig | None = None, progress: Progress | None = None, processes: int | None = None
          ) -> CheckReport:
    """`processes`: how many derive and compare (their connections shared out); default one per core."""
    start, end = resolve_range(stored, source, since, until)
    plan = load_plan(stored, source, end, entry)
    report = CheckReport(source, stored.where, start, end)
    windows = list(days(start, end))
    window_start = [start]  # of the window being compared, for progress

    def step(frames: int) -> None:
        if progress:
            progress(window_start[0], report.frames + frames)  # report.frames: of the windows compared

    spill = Path(tempfile.mkdtemp(prefix="warehouse-replay-"))
    try:
        # Workers fork before this process starts a thread of its own.
        with quiet_gc(), Shared(stored, _job(plan, windows, spill), processes_for(processes), step) as shared:
            for low, _ in windows:
                window_start[0] = low
                parts: list[Part] = shared.next()
                for part in parts:
                    report.frames += part.frames
                    report.carried += part.carried
                _merge(report.tables, parts)
                if progress:
                    progress(low, report.frames)
            for versions, warmed in shared.next():
                report.stored_versions = dict(Counter(report.stored_versions) + versions)
                report.warmed += warmed
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    report.today = today_versions(kind for kind, _ in report.stored_versions)
    return report


@dataclass
class Part:
    """One window compared by one process: the rows of its frames (its share of the connections)."""

    frames: int = 0
    carried: int = 0
    tallies: dict[str, Tally] = field(default_factory=lambda: {name: Tally(name) for name in TABLES})
    # per table, the first differences as (raw_id, line), lowest raw_id first (None before any)
    examples: dict[str, list[tuple[int | None, str]]] = field(default_factory=dict)


def _merge(tallies: dict[str, Tally], parts: list[Part]) -> None:
    """The processes' parts of a window into the report's tallies. Parts do not overlap (each has
    its frames' rows), so counts add up; the examples are those of the lowest raw_ids, as one
    process comparing the whole window would give."""
    for table, tally in tallies.items():
        for part in parts:
            counted = part.tallies[table]
            tally.derived += counted.derived
            tally.stored += counted.stored
            tally.matched += counted.matched
            tally.missing += counted.missing
            tally.extra += counted.extra
            tally.differ += counted.differ
        found = sorted((example for part in parts for example in part.examples.get(table, ())),
                       key=lambda example: (example[0] is not None, example[0] or 0))
        tally.examples += [line for _, line in found][:max(0, EXAMPLES - len(tally.examples))]


def _job(plan: Plan, windows: list[tuple[datetime, datetime]], spill: Path) -> Job:
    """What each process does (shards.Shared): derive its share of each window's frames, compare
    their rows with the stored rows of those frames; yields progress, a Part per window, and at
    the end (connections per adapter version, frames warmed)."""

    def job(stored: Stored, shard: Shard) -> Iterator[Any]:
        deriver = Deriver(stored, plan)
        with _Comparison(spill / f"process-{shard[0] if shard else 0}") as comparison, \
                ThreadPoolExecutor(1, "replay-stored") as background:
            for low, high in windows:
                yield from _window(comparison, deriver, stored, low, high, shard, background)
        yield deriver.plan.versions, deriver.warmed

    return job


def _window(comparison: _Comparison, deriver: Deriver, stored: Stored, low: datetime, high: datetime, shard: Shard,
            background: ThreadPoolExecutor) -> Iterator[int | Part]:
    source = deriver.source
    part = Part()
    loading = None
    if shard is None:
        # All the window's stored rows: they load while the frames are derived (reading them,
        # DuckDB or a COPY's CSV, releases the GIL, so on a second core it costs the derivation little).
        loading = background.submit(comparison.load_stored, stored, source, low, high)
    keys: list[pa.RecordBatch] = []
    carried: list[int] = []
    for chunk in derive_window(deriver, stored, source, low, high, shard):
        comparison.add_derived(chunk.tables, chunk.stored_kinds, chunk.same_kinds)
        keys += chunk.keys
        carried += chunk.carried
        part.frames += chunk.frames
        yield part.frames
    if shard is None:
        assert loading is not None
        loading.result()
    else:  # the stored rows of this process's frames (and the first process: rows of no frame of the window)
        comparison.load_stored(stored, source, low, high, _owned(stored, source, low, high, keys, shard[0] == 0))
    comparison.settle_stored(stored, source, low, high, keys, carried)
    comparison.compare(part)
    part.carried = len(carried)
    yield part


# Which stored rows a process compares: those whose raw_id is one of its frames (the first array), and
# the first process also those whose raw_id is no frame of the window (the second: every frame's id).
Owned = tuple[pa.Array, pa.Array | None]


def _owned(stored: Stored, source: str, low: datetime, high: datetime, keys: list[pa.RecordBatch],
           first: bool) -> Owned:
    """Those of its frames; the first process also those of no frame of the window (missing, as they
    are in one process)."""
    mine = pa.concat_arrays([pa.array([], pa.int64()), *(batch.column(0) for batch in keys)])
    return mine, stored.frame_ids(source, low, high) if first else None


def _keep(batch: pa.RecordBatch, owned: Owned) -> pa.RecordBatch:
    mine, every = owned
    ids = batch.column("raw_id")
    mask = pc.is_in(ids, value_set=mine)
    if every is not None:
        mask = pc.or_(mask, pc.invert(pc.is_in(ids, value_set=every)))
    return batch.filter(mask)


class _Comparison:
    """A private DuckDB holding a day's rows: derived_<table> and stored_<table>."""

    def __init__(self, spill: Path) -> None:
        import duckdb

        # `spill` is made and removed by the caller: a worker process may be ended abruptly.
        self.con = duckdb.connect(config={"temp_directory": str(spill)})
        self.con.execute("SET TimeZone = 'UTC'")
        # Rows are compared as multisets: their order need not be kept. One thread: the cores are
        # busy deriving, and DuckDB's own threads only compete with that for them.
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET threads = 1")
        self.same_kinds = 0  # frames of the window whose kind is the one stored (add_derived)
        rows.register(self.con)
        for table in TABLES:
            columns = ", ".join(f"{c.name} {c.duckdb}" for c in COLUMNS[table])
            for side in ("derived", "stored"):
                self.con.execute(f"CREATE TABLE {side}_{table} ({columns})")

    def __enter__(self) -> _Comparison:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def _insert(self, table: str, data: pa.Table | pa.RecordBatch, con: Any = None) -> None:
        con = con or self.con
        con.register("_rows", data)
        try:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
        finally:
            con.unregister("_rows")

    def add_derived(self, tables: dict[str, list[pa.Table]], stored_kinds: pa.Table, same_kinds: int = 0) -> None:
        """Rows derived again, and the stored kinds of the frames whose kind changed (rows.RowsByTable):
        `same_kinds` frames kept theirs, a row alike on both sides, only counted."""
        for table, parts in tables.items():
            for part in parts:
                if part.num_rows:
                    self._insert(f"derived_{table}", part)
        if stored_kinds.num_rows:
            self._insert(f"stored_{RAW_KINDS}", stored_kinds)
        self.same_kinds += same_kinds

    def load_stored(self, stored: Stored, source: str, low: datetime, high: datetime,
                    owned: Owned | None = None) -> None:
        """The window's stored rows, those `owned` says (perhaps in a thread of their own: on a
        connection of their own). Where the stored rows are SQL to DuckDB (Parquet), they go from the
        files into the table inside DuckDB, their JSON as stored (rows.py), only a quarantined frame's
        text through Python (rows.register)."""
        con = self.con.cursor()
        try:
            where = ""
            if owned is not None:
                con.register("_mine", pa.table([owned[0]], names=["raw_id"]))
                where = " WHERE raw_id IN (SELECT raw_id FROM _mine)"
                if owned[1] is not None:
                    con.register("_every", pa.table([owned[1]], names=["raw_id"]))
                    where += " OR raw_id NOT IN (SELECT raw_id FROM _every)"
            for table in TABLES:
                if table == RAW_KINDS:
                    continue
                found = stored.derived_query(con, table, source, low, high)
                if found is None:
                    for batch in stored.derived(table, source, low, high):
                        if owned is not None:
                            batch = _keep(batch, owned)
                        self._insert(f"stored_{table}", rows.stored_batch(table, batch), con)
                elif found[0]:
                    query, params = found
                    con.execute(f"INSERT INTO stored_{table} BY NAME SELECT {rows.stored_select(table)}"
                                f" FROM ({query}){where}", params)
        finally:
            con.close()

    def settle_stored(self, stored: Stored, source: str, low: datetime, high: datetime, keys: list[pa.RecordBatch],
                      carried: list[int]) -> None:
        """What needs the frames derived: old control events matched to them, carried frames left out."""
        legacy = list(stored.derived("collector_events", source, low, high + LEGACY_SLACK, FRAME_EVENTS))
        if any(batch.num_rows for batch in legacy):
            ahead = [batch.select(KEYS) for batch in stored.frames(source, high, high + LEGACY_SLACK)]
            self._attribute([rows.stored_batch("collector_events", batch) for batch in legacy], keys + ahead,
                            low, high)
        if carried:  # their quarantine rows are as stored: nothing to compare them with
            self._insert_ids("_carried", carried)
            for table in TABLES:
                self.con.execute(f"DELETE FROM stored_{table} WHERE raw_id IN (SELECT raw_id FROM _carried)")

    def _insert_ids(self, name: str, ids: list[int]) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} (raw_id BIGINT)")
        self._insert(name, pa.table([pa.array(ids, pa.int64())], names=["raw_id"]))

    def _attribute(self, legacy: list[pa.RecordBatch], keys: list[pa.RecordBatch], low: datetime,
                   high: datetime) -> None:
        """Collector events written before they were linked to their frame: each belongs to the last
        frame of its connection received at or before it, and is dated like that frame. Those of
        this window's frames are kept (an event may come a little after the window's end)."""
        if not keys:
            return
        frames = pa.Table.from_batches(keys).rename_columns(["raw_id", "received_at", "connection_id"])
        self.con.register("_legacy", pa.Table.from_batches(legacy))
        self.con.register("_frames", frames)
        try:
            select = ", ".join("f." + c.name if c.name in ("raw_id", "received_at") else "e." + c.name
                               for c in COLUMNS["collector_events"])
            self.con.execute(f"INSERT INTO stored_collector_events SELECT {select} FROM _legacy e ASOF JOIN _frames f"
                             " ON e.connection_id = f.connection_id AND e.received_at >= f.received_at"
                             " WHERE f.received_at >= ? AND f.received_at < ?", [low, high])
        finally:
            self.con.unregister("_legacy")
            self.con.unregister("_frames")

    def compare(self, part: Part) -> None:
        sides = [f"{side}_{table}" for table in TABLES for side in ("derived", "stored")]
        counts = self.con.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in sides)).fetchone()
        assert counts is not None
        for i, table in enumerate(TABLES):
            derived, stored = counts[2 * i], counts[2 * i + 1]
            if derived or stored:
                self._compare(table, part, derived, stored)
                self.con.execute(f"DELETE FROM derived_{table}")
                self.con.execute(f"DELETE FROM stored_{table}")
        kinds = part.tallies[RAW_KINDS]  # the frames that kept their kind: one row alike on each side
        kinds.derived += self.same_kinds
        kinds.stored += self.same_kinds
        kinds.matched += self.same_kinds
        self.same_kinds = 0

    def _count(self, sql: str) -> int:
        (value,), = self.con.execute(sql).fetchall()
        return int(value or 0)

    def _compare(self, table: str, part: Part, derived: int, stored: int) -> None:
        """Both sides as multisets of (raw_id, hash of the row): a hash join of two narrow tables.
        Only rows whose (raw_id, hash) counts differ are then compared in full, their JSON made
        canonical (rows.py: the first step compares JSON as PostgreSQL spells it), with EXCEPT ALL."""
        columns = COLUMNS[table]
        select = ", ".join(c.compared() for c in columns)
        row_hash = f"hash({', '.join(c.name for c in columns)})"
        con = self.con
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _diff AS
            WITH d AS (SELECT raw_id, {row_hash} AS h, count(*) AS n FROM (SELECT {select} FROM derived_{table})
                       GROUP BY ALL),
                 s AS (SELECT raw_id, {row_hash} AS h, count(*) AS n FROM (SELECT {select} FROM stored_{table})
                       GROUP BY ALL)
            SELECT raw_id, h FROM d FULL JOIN s USING (raw_id, h) WHERE d.n IS DISTINCT FROM s.n""")
        extra = missing = differ = 0
        if self._count("SELECT count(*) FROM _diff"):

            def unmatched(side: str) -> str:
                """The side's rows not matched by the first step, their JSON canonical (rows.py)."""
                return (f"SELECT {rows.canonical_select(table, side)} FROM (SELECT * EXCLUDE (_h) FROM"
                        f" (SELECT *, {row_hash} AS _h FROM (SELECT {select} FROM {side}_{table})) x"
                        " SEMI JOIN _diff ON x.raw_id = _diff.raw_id AND x._h = _diff.h)")

            con.execute(f"CREATE OR REPLACE TEMP TABLE _extra AS {unmatched('derived')} EXCEPT ALL"
                        f" {unmatched('stored')}")
            con.execute(f"CREATE OR REPLACE TEMP TABLE _missing AS {unmatched('stored')} EXCEPT ALL"
                        f" {unmatched('derived')}")
            extra, missing = self._count("SELECT count(*) FROM _extra"), self._count("SELECT count(*) FROM _missing")
            if extra and missing and extra + missing <= DEEP_LIMIT and any(c.kind == "json" for c in columns):
                extra, missing = self._respell(table)
            differ = self._count(
                "SELECT sum(least(m.n, e.n)) FROM (SELECT raw_id, count(*) AS n FROM _missing GROUP BY raw_id) m"
                " JOIN (SELECT raw_id, count(*) AS n FROM _extra GROUP BY raw_id) e USING (raw_id)")
        tally = part.tallies[table]
        tally.derived += derived
        tally.stored += stored
        tally.matched += derived - extra
        tally.differ += differ
        tally.missing += missing - differ
        tally.extra += extra - differ
        if extra or missing:
            part.examples[table] = self._examples(table, EXAMPLES)

    def _respell(self, table: str) -> tuple[int, int]:
        """Match again the unmatched rows with JSON numbers in one spelling (see rows.deep_json)."""
        sides = {}
        for name in ("_extra", "_missing"):
            data = self.con.execute(f"SELECT * FROM {name}").to_arrow_table()
            data = pa.Table.from_batches([rows.stored_batch(table, batch, rows.deep_json)
                                          for batch in data.to_batches()], schema=data.schema)
            sides[name] = data
        con = self.con
        con.register("_e", sides["_extra"])
        con.register("_m", sides["_missing"])
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE _extra AS SELECT * FROM _e EXCEPT ALL SELECT * FROM _m")
            con.execute("CREATE OR REPLACE TEMP TABLE _missing AS SELECT * FROM _m EXCEPT ALL SELECT * FROM _e")
        finally:
            con.unregister("_e")
            con.unregister("_m")
        return self._count("SELECT count(*) FROM _extra"), self._count("SELECT count(*) FROM _missing")

    def _examples(self, table: str, wanted: int) -> list[tuple[int | None, str]]:
        ids = [raw_id for (raw_id,) in self.con.execute(
            "SELECT raw_id FROM (SELECT raw_id FROM _missing UNION SELECT raw_id FROM _extra)"
            f" ORDER BY raw_id NULLS FIRST LIMIT {wanted:d}").fetchall()]
        found = []
        for raw_id in ids:
            where = "raw_id IS NULL" if raw_id is None else f"raw_id = {int(raw_id):d}"
            stored = self.con.execute(f"SELECT * FROM _missing WHERE {where}").to_arrow_table().to_pylist()
            derived = self.con.execute(f"SELECT * FROM _extra WHERE {where}").to_arrow_table().to_pylist()
            found += [(raw_id, line) for line in _describe(raw_id, stored, derived)]
        return found[:wanted]


_SAME_FOR_A_FRAME = ("received_at", "source", "raw_id")


def _describe(raw_id: int | None, stored: list[dict[str, Any]], derived: list[dict[str, Any]]) -> list[str]:
    """One line per difference: a pair of rows (the columns that changed, stored → derived), or a
    row only on one side."""
    lines = []
    derived = list(derived)
    for row in stored:
        if derived:
            best = max(derived, key=lambda other: sum(other[k] == v for k, v in row.items()))
            derived.remove(best)
            changed = ", ".join(f"{k}: {_show(v)} → {_show(best[k])}" for k, v in row.items() if best[k] != v)
            lines.append(f"raw_id {raw_id}: {changed}")
        else:
            lines.append(f"raw_id {raw_id}: stored, not derived again: {_summary(row)}")
    lines += [f"raw_id {raw_id}: derived again, not stored: {_summary(row)}" for row in derived]
    return lines


def _summary(row: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={_show(v)}" for k, v in row.items() if v is not None and k not in _SAME_FOR_A_FRAME)
    return text if len(text) <= 240 else text[:239] + "…"


def _show(value: Any) -> str:
    text = value.isoformat() if isinstance(value, datetime) else repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 100 else text[:99] + "…"


def versions_line(stored: dict[tuple[str, str | None], int], today: dict[str, str]) -> str:
    """Which adapter versions derived the stored rows (per their connect events) and which derive now."""
    parts = []
    for kind, now in today.items():
        then = {version: n for (k, version), n in stored.items() if k == kind}
        described = ", ".join(f"version {v} ({n:,} connection{'s' if n != 1 else ''})" if v is not None else
                              f"an unrecorded version ({n:,} connection{'s' if n != 1 else ''}, collected before"
                              " versions were recorded)" for v, n in sorted(then.items(), key=lambda x: str(x[0])))
        parts.append(f"{kind}: stored rows derived by {described or 'no connection'}; today's adapter is version {now}")
    return "adapter versions: " + ("; ".join(parts) if parts else "none (no frame in the range)")


def when_text(at: datetime) -> str:
    """A time as the reports print it: `2026-11-30 12:00:00 UTC`."""
    return at.isoformat(sep=" ").replace("+00:00", " UTC")
