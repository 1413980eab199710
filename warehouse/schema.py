"""The schema, in one place: SQLAlchemy Core definitions of every table SQL users query.

Column names, types, nullability and indexes live here, and so do the per-table choices other
layers derive from them: the sort order of the Parquet export (`SORT_KEYS`) and TimescaleDB's
compression segments (`SEGMENT_BY`, `ORDER_BY`). The record types (`warehouse.records`) are
the same columns as Python tuples. Migrations are frozen history and keep their own DDL;
`tests/test_schema.py` proves the migrated database, the records and the migrations' constants
equal what is declared here. Declarations only: nothing here talks to a database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Sequence,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, TIMESTAMP, UUID

metadata = MetaData()

TZ = TIMESTAMP(timezone=True)

# Raw ids come from a sequence that hands out blocks of this many ids per nextval(), so the
# writer reserves ids for a whole batch in a handful of calls (see warehouse/store/connection.py).
RAW_ID_BLOCK = 1000
raw_id_seq = Sequence("raw_messages_id_seq", increment=RAW_ID_BLOCK, metadata=metadata)


# received_at is the collector's clock when a frame came in, and it decides the UTC day a row is
# exported and retained with: the database refuses a fact row outside [FIRST, END) (migration 0011).
# No feed's frame predates 2000, so a clock that lost its time (a board booting at 1970, a zero value
# 0001-01-01) is refused instead of making the export plan millions of empty table-days; 2100 is far
# past any plausible clock and well inside every lake reader's range (pandas' nanosecond timestamps
# end in 2262), and ±infinity, which no reader holds, is outside.
RECEIVED_AT_FIRST = datetime(2000, 1, 1, tzinfo=UTC)
RECEIVED_AT_END = datetime(2100, 1, 1, tzinfo=UTC)
RECEIVED_AT_WINDOW = "received_at >= '2000-01-01 00:00:00+00' AND received_at < '2100-01-01 00:00:00+00'"

ORIGIN_COMMENT = ("null: from a pushed frame; snapshot: the vendor's state fetched over REST after a gap;"
                  " backfill: the vendor's history of the gap")


def _fact(
    name: str, *columns: Column[Any], linked: bool = True, lookups: tuple[tuple[str, ...], ...] = (),
    brin: tuple[str, ...] = ("received_at",), sort: str = "source, received_at", segment_by: str = "source",
    order_by: str = "received_at", origin: bool = False,
) -> Table:
    """A fact table: received_at + source first, raw_id when derived from a frame, then columns.
    BRIN for columns that grow with time (cheap to maintain), B-tree for the lookup keys.
    `sort`: the order of the rows in each exported Parquet file (what keeps an entity's history
    contiguous: small files, one row group per lookup); `segment_by`/`order_by`: TimescaleDB's
    compression of old chunks, segmented by the entity analysts filter on. `origin`: the table takes
    rows derived from REST answers, told apart by a last column `origin` (null: pushed)."""
    common: list[Column[Any]] = [Column("received_at", TZ, nullable=False), Column("source", Text, nullable=False)]
    if linked:
        common.append(Column("raw_id", BigInteger))
    if origin:
        columns = (*columns, Column("origin", Text, comment=ORIGIN_COMMENT))
    indexes = [Index(f"{name}_{col}_brin", col, postgresql_using="brin") for col in brin]
    indexes += [Index(f"{name}_{'_'.join(cols)}_idx", *cols) for cols in lookups]
    window = CheckConstraint(RECEIVED_AT_WINDOW, name=f"{name}_received_at_window")
    table = Table(name, metadata, *common, *columns, *indexes, window, postgresql_partition_by="RANGE (received_at)")
    table.info.update(sort=sort, segment_by=segment_by, order_by=order_by)
    return table


raw_messages = _fact(
    "raw_messages",
    Column("id", BigInteger, raw_id_seq, server_default=raw_id_seq.next_value(), nullable=False),
    Column("connection_id", UUID(as_uuid=True), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("event_id", Text),
    Column("kind", Text, nullable=False),
    # json, not jsonb: the frame's text as received (secrets redacted), byte for byte, validated but
    # not parsed into a tree (migration 0004). payload->'key' works on it as on jsonb.
    Column("payload", JSON),
    linked=False,
    lookups=(("source", "received_at"),),
    brin=("received_at", "id"),
    sort="source, connection_id, seq",  # ids grow with time: BRIN finds a frame by id at a fraction of a B-tree's size
)

price_ticks = _fact(
    "price_ticks",
    Column("source_ts", TZ),
    Column("bookmaker", Text),
    Column("fixture_id", Text, nullable=False),
    Column("market_id", Text, nullable=False),
    Column("outcome_id", Text, nullable=False),
    Column("player_id", Text),
    Column("line", Numeric),
    Column("side", Text),
    Column("price", Float),
    Column("active", Boolean),
    Column("status", Text),
    Column("max_stake", Numeric),
    Column("attrs", JSONB),
    lookups=(("fixture_id", "market_id", "outcome_id", "received_at"),),
    sort="fixture_id, market_id, received_at",  # a market's whole line movement, in time order
    segment_by="source, fixture_id", order_by="market_id, outcome_id, received_at",
    origin=True,
)

# Rows from REST answers are a small minority: the analysis relations find them by this partial
# index and check only them against the stream (warehouse.analysis.relations, observed_ticks).
Index("price_ticks_rest_idx", price_ticks.c.fixture_id, price_ticks.c.market_id, price_ticks.c.outcome_id,
      price_ticks.c.received_at, postgresql_where=price_ticks.c.origin.isnot(None))

market_changes = _fact(
    "market_changes",
    Column("source_ts", TZ),
    Column("bookmaker", Text),
    Column("fixture_id", Text, nullable=False),
    Column("market_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("status", Text),
    Column("attrs", JSONB),
    lookups=(("fixture_id", "market_id", "received_at"),),
    sort="fixture_id, market_id, received_at", segment_by="source, fixture_id", order_by="market_id, received_at",
    origin=True,
)

fixture_changes = _fact(
    "fixture_changes",
    Column("source_ts", TZ),
    Column("fixture_id", Text, nullable=False),
    Column("bookmaker", Text),
    Column("action", Text, nullable=False),
    Column("start_time", TZ),
    Column("status", Text),
    Column("changes", JSONB),
    lookups=(("fixture_id", "received_at"),),
    sort="fixture_id, received_at", segment_by="source, fixture_id",
    origin=True,
)

score_changes = _fact(
    "score_changes",
    Column("source_ts", TZ),
    Column("fixture_id", Text, nullable=False),
    Column("period", Text),
    Column("home_score", Integer),
    Column("away_score", Integer),
    Column("minute", Integer),
    Column("live", Boolean),
    Column("status", Text),
    Column("attrs", JSONB),
    lookups=(("fixture_id", "received_at"),),
    sort="fixture_id, received_at", segment_by="source, fixture_id",
    origin=True,
)

order_changes = _fact(
    "order_changes",
    Column("source_ts", TZ),
    Column("event", Text, nullable=False),
    Column("order_id", Text),
    Column("fixture_id", Text),
    Column("outcome_id", Text),
    Column("exchange", Text),
    Column("exchange_order_id", Text),
    Column("order_status", Text),
    Column("matched_status", Text),
    Column("price", Numeric),
    Column("stake", Numeric),
    Column("matched_stake", Numeric),
    Column("payload", JSONB),
    Column("old", JSONB),
    lookups=(("order_id", "received_at"), ("fixture_id", "received_at")),
    sort="order_id, received_at", order_by="order_id, received_at",
    origin=True,
)

bet_changes = _fact(
    "bet_changes",
    Column("source_ts", TZ),
    Column("event", Text, nullable=False),
    Column("bet_id", Text),
    Column("order_id", Text),
    Column("bookmaker", Text),
    Column("bet_status", Text),
    Column("price", Numeric),
    Column("stake", Numeric),
    Column("payload", JSONB),
    Column("old", JSONB),
    lookups=(("bet_id", "received_at"), ("order_id", "received_at")),
    sort="bet_id, received_at", order_by="bet_id, received_at",
    origin=True,
)

account_changes = _fact(
    "account_changes",
    Column("source_ts", TZ),
    Column("event", Text, nullable=False),
    Column("account_id", Text),
    Column("payload", JSONB),
    Column("old", JSONB),
    lookups=(("account_id", "received_at"),),
    sort="account_id, received_at", order_by="account_id, received_at",
    origin=True,
)

emergency_events = _fact(
    "emergency_events",
    Column("source_ts", TZ),
    Column("emergency", Boolean),
    Column("reason", Text),
    Column("payload", JSONB),
    origin=True,
)

collector_events = _fact(
    "collector_events",
    Column("connection_id", UUID(as_uuid=True)),
    Column("event", Text, nullable=False),
    Column("detail", JSONB),
    lookups=(("source", "received_at"),),
)

quarantine = _fact(
    "quarantine",
    Column("connection_id", UUID(as_uuid=True)),
    Column("reason", Text, nullable=False),
    Column("frame", Text),
    lookups=(("source", "received_at"),),
)

export_runs = Table(
    "export_runs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("table_name", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("started_at", TZ, nullable=False),
    Column("finished_at", TZ, nullable=False),
    Column("bytes", BigInteger),  # the file's size (migration 0009; null before)
    Index("export_runs_table_name_day_idx", "table_name", "day"),
)

retention_runs = Table(
    "retention_runs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("table_name", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("path", Text),
    Column("sha256", Text),
    Column("dropped_at", TZ, nullable=False, server_default=text("now()")),
    Column("bytes", BigInteger),  # the file's size (migration 0009; null before)
    Index("retention_runs_table_name_day_idx", "table_name", "day"),
)

# One row per finished run of a maintenance job (migration 0017): the last success and result of each,
# for /metrics and `warehouse check` (export_runs and retention_runs record what a run did, not that it ran).
JOBS: tuple[str, ...] = ("export", "retain", "verify-lake")
job_runs = Table(
    "job_runs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job", Text, CheckConstraint(f"job IN ({', '.join(repr(j) for j in JOBS)})", name="job_runs_job_check"),
           nullable=False),
    Column("started_at", TZ, nullable=False),
    Column("finished_at", TZ, nullable=False, server_default=text("now()")),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text),  # one line: what the run did, or its first problem
    Column("host", Text),  # where it ran
    Index("job_runs_job_finished_at_idx", "job", "finished_at"),
)

# Bookkeeping, not facts: one row per committed writer transaction, so that a batch whose
# COMMIT was cut off by an outage can be replayed from the spool without being stored twice.
ingest_batches = Table(
    "ingest_batches",
    metadata,
    Column("batch_id", UUID(as_uuid=True), primary_key=True),
    Column("committed_at", TZ, nullable=False, server_default=text("now()")),
    Column("frames", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
)

# Claims (migration 0013): which collector process holds each feed. Mutable bookkeeping, not facts:
# the history of handovers is in collector_events. docs/claims.md is the argument they make.
collector_claims = Table(
    "collector_claims",
    metadata,
    Column("feed", Text, primary_key=True),  # the feed's name: `source` in every row
    Column("epoch", BigInteger, nullable=False, server_default=text("0")),  # the fencing token, bumped by takeovers
    Column("holder", Text),  # [collector] name of the holder (or of the last one)
    Column("holder_process", UUID(as_uuid=True)),  # null: released, or never held
    Column("since", TZ),
    Column("renewed_at", TZ),
    Column("expires_at", TZ),  # the database's clock
    Column("solo", Boolean, nullable=False, server_default=text("false")),  # no standby at the last renewal
    Column("watch", JSONB, nullable=False, server_default=text("'[]'::jsonb")),  # epochs whose late frames may come
)

collector_processes = Table(
    "collector_processes",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", Text),
    Column("feeds", ARRAY(Text), nullable=False),
    Column("spool", UUID(as_uuid=True)),  # the id of the spool directory it owns
    Column("started_at", TZ, nullable=False, server_default=text("now()")),
    Column("seen_at", TZ, nullable=False, server_default=text("now()")),
    Column("expires_at", TZ, nullable=False),
)

collector_handover_keys = Table(
    "collector_handover_keys",
    metadata,
    Column("source", Text, nullable=False),
    Column("key", Text, nullable=False),  # a frame's vendor identity (Feed.identity)
    Column("epoch", BigInteger, nullable=False),  # the epoch it was first stored under
    Column("registered_at", TZ, nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("source", "key"),
)

warehouse_meta = Table(
    "warehouse_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# Append-only tables: every one gets the triggers that reject UPDATE, DELETE and TRUNCATE.
FACT_TABLES: tuple[str, ...] = tuple(
    str(t.name) for t in metadata.sorted_tables if "received_at" in t.c
)
APPEND_ONLY_TABLES: tuple[str, ...] = (*FACT_TABLES, "export_runs", "retention_runs", "job_runs")
ORIGIN_TABLES: tuple[str, ...] = tuple(name for name in FACT_TABLES if "origin" in metadata.tables[name].c)
SORT_KEYS = {name: metadata.tables[name].info["sort"] for name in FACT_TABLES}
SEGMENT_BY = {name: metadata.tables[name].info["segment_by"] for name in FACT_TABLES}
ORDER_BY = {name: metadata.tables[name].info["order_by"] for name in FACT_TABLES}
