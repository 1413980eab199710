"""Times the lake cannot hold, refused by the database and loud on the query surface; and who may make
partitions (issue 21 items 7 and 9).

1. A CHECK on `received_at` of every fact table: 2000-01-01 <= received_at < 2100-01-01 (why this
   window: warehouse.schema). `received_at` decides the UTC day a row is exported and retained with:
   a row at `infinity` (any role that may insert can write one) made the export and retention fail
   on a date Python cannot hold; one at 0001-01-01 made the export plan eight million table-days.
   Partitions and chunks made later inherit the constraint.

   No table is scanned and nothing waits for this: each constraint is added NOT VALID (instant; every
   new row is checked) after counting the rows already outside the window, which PostgreSQL finds by
   partition pruning and TimescaleDB by chunk exclusion, without reading the days in between.
   VALIDATE is left out: it reads every row of every day (and TimescaleDB cannot validate a hypertable
   with compression: "operation not supported on hypertables that have columnstore enabled"); the
   count already says what it would. Rows found outside stay (history is never rewritten): one warning
   line per table names the count, and the export and retention leave those rows out, saying so.
   (TimescaleDB checks the rows of a compressed chunk even against a NOT VALID constraint, so the
   chunks holding rows outside the window are decompressed first: only those, as 0004 did.)

2. The lake views of 0008 (what the query surface reads the days in PostgreSQL through) handed a
   value the lake cannot hold to DuckDB as NULL (a numeric beyond numeric(38, 18)) or as a time DuckDB
   turns into a naive 9999-12-31T23:59:59.999999 (±infinity in source_ts or start_time). Each such
   value now fails the query that reads it, with one line naming the table, column and value
   (`warehouse_lake.unfit`); a query not reading that column is not affected. `received_at` stays a
   plain column, so a filter on it still reaches the index and prunes partitions: the CHECK keeps it
   fit.

3. warehouse_ensure_partitions: only warehouse_writer may call it, and only for the days a writer writes.
   0001 left the function executable by PUBLIC (PostgreSQL's default for a new function), and it runs
   with its owner's rights: any role, warehouse_reader included, could create partitions for any day — a
   collector's login made January's, and the export, which starts at the first day holding a partition,
   then planned every day since. Now EXECUTE is revoked from PUBLIC (warehouse_writer keeps its grant
   from 0001), and a caller that is not the tables' owner (a member of the owning role, or a superuser)
   gets partitions from yesterday to 31 days ahead only (UTC days by the server's clock): the writer asks
   for today and the next `partition_days_ahead`. A day outside is skipped with a NOTICE, not refused: a
   writer whose clock is off still connects, and its rows land in the default partition. The owner
   (replay --into, maintenance by hand) may still make any day's partitions.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType

from alembic import context, op
from sqlalchemy import text

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Frozen with this migration (the schema's fact tables at revision 0011).
FACT_TABLES = ("raw_messages", "price_ticks", "market_changes", "fixture_changes", "score_changes", "order_changes",
               "bet_changes", "account_changes", "emergency_events", "collector_events", "quarantine")
FIRST, END = "2000-01-01 00:00:00+00", "2100-01-01 00:00:00+00"
WINDOW = f"received_at >= '{FIRST}' AND received_at < '{END}'"
# The timestamptz columns besides received_at at revision 0011, and the times the lake holds.
TIMES = ("source_ts", "start_time")
TIME_LIMIT = ("'0001-01-01 00:00:00+00'", "'10000-01-01 00:00:00+00'", "a UTC time from year 1 to 9999")
DECIMAL_LIMIT = "at most 20 integer and 18 fractional digits, no NaN or infinity"
SCHEMA = "warehouse_lake"
BEHIND, AHEAD = 1, 31  # the days a caller other than the owner may get partitions for, around today
PARTITIONS = "warehouse_ensure_partitions(date, integer)"


def _name(table: str) -> str:
    return f"{table}_received_at_window"


def _sql(statement: str) -> None:
    op.execute(text(statement))


def _lake_views() -> ModuleType:
    """Migration 0008: the lake views' columns at this revision, and how 0008 read them (the downgrade)."""
    return context.script.get_revision("0008").module


def _expression(table: str, spec: str) -> str:
    """A column of the lake view: as 0008 made it, except that a value the lake cannot hold raises."""
    name, _, kind = spec.partition(" ")
    if kind == "decimal":
        fits, limit = f"abs({name}) < 1e20 AND round({name}, 18) = {name}", DECIMAL_LIMIT
    elif name in TIMES:
        fits, limit = f"{name} >= {TIME_LIMIT[0]} AND {name} < {TIME_LIMIT[1]}", TIME_LIMIT[2]
    else:
        return _lake_views()._expression(spec)
    cast = "::numeric(38, 18)" if kind == "decimal" else ""
    return (f"(CASE WHEN {name} IS NULL OR ({fits}) THEN {name}"
            f" ELSE {SCHEMA}.unfit('{table}', '{name}', {name}, '{limit}') END){cast} AS {name}")


def _views(column: Callable[[str, str], str]) -> None:
    for table, specs in _lake_views().COLUMNS.items():
        _sql(f"CREATE OR REPLACE VIEW {SCHEMA}.{table} AS"
             f" SELECT {', '.join(column(table, spec) for spec in specs)} FROM public.{table}")


def _decompress_outside(table: str) -> None:
    """TimescaleDB checks a compressed chunk's rows against a new constraint even NOT VALID: the chunks
    not inside the window (where such rows are: chunks are whole UTC days) are decompressed first."""
    for (chunk,) in op.get_bind().execute(text(
            "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'public' AND hypertable_name = :t AND is_compressed"
            f" AND NOT (range_start >= '{FIRST}' AND range_end <= '{END}')"), {"t": table}).fetchall():
        _sql(f"SELECT decompress_chunk('{chunk}')")


def _restrict_partitions() -> None:
    """Point 3: the writer may make partitions for the days it writes only; PUBLIC none."""
    tables = ", ".join(f"'{t}'" for t in FACT_TABLES)
    _sql(
        f"""
        CREATE OR REPLACE FUNCTION warehouse_ensure_partitions(first_day date, days integer DEFAULT 3)
        RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        DECLARE
            parent text;
            day date;
            part text;
            created integer := 0;
            today date := (now() AT TIME ZONE 'UTC')::date;
            low date := first_day;
            high date := first_day + days - 1;
        BEGIN
            IF (SELECT value FROM warehouse_meta WHERE key = 'storage') <> 'native' THEN
                RETURN 0;  -- TimescaleDB creates chunks on demand
            END IF;
            -- session_user: who logged in (current_user is the owner here, SECURITY DEFINER)
            IF NOT pg_has_role(session_user, (SELECT relowner FROM pg_class
                                              WHERE oid = 'public.raw_messages'::regclass), 'USAGE') THEN
                low := greatest(low, today - {BEHIND});
                high := least(high, today + {AHEAD});
                IF low <> first_day OR high <> first_day + days - 1 THEN
                    RAISE NOTICE 'odds-warehouse: partitions are made for % to % only (asked: % to %)',
                        today - {BEHIND}, today + {AHEAD}, first_day, first_day + days - 1;
                END IF;
            END IF;
            FOREACH parent IN ARRAY ARRAY[{tables}] LOOP
                day := low;
                WHILE day <= high LOOP
                    part := format('%s_p%s', parent, to_char(day, 'YYYYMMDD'));
                    IF to_regclass(format('public.%I', part)) IS NULL THEN
                        BEGIN
                            EXECUTE format(
                                'CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%L) TO (%L)',
                                part, parent, day::text || ' 00:00:00+00', (day + 1)::text || ' 00:00:00+00');
                            EXECUTE format(
                                'CREATE TRIGGER %I BEFORE UPDATE OR DELETE OR TRUNCATE ON public.%I FOR EACH'
                                ' STATEMENT EXECUTE FUNCTION warehouse_reject_change()', part || '_append_only', part);
                            created := created + 1;
                        EXCEPTION WHEN check_violation THEN
                            -- Rows for that day already sit in the default partition: they stay there.
                            RAISE WARNING 'odds-warehouse: % keeps % rows in its default partition', parent, day;
                        END;
                    END IF;
                    day := day + 1;
                END LOOP;
            END LOOP;
            RETURN created;
        END $$
        """
    )
    _sql(f"REVOKE ALL ON FUNCTION {PARTITIONS} FROM PUBLIC")


def _partitions_as_0001() -> None:
    """The downgrade of point 3."""
    _sql(f"DROP FUNCTION {PARTITIONS}")
    context.script.get_revision("0001").module._create_partition_function()  # as 0001 made it, PUBLIC included
    _sql("DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'warehouse_writer') THEN"
         f" GRANT EXECUTE ON FUNCTION {PARTITIONS} TO warehouse_writer; END IF; END $$")


def upgrade() -> None:
    bind = op.get_bind()
    timescale = bind.scalar(text("SELECT value FROM warehouse_meta WHERE key = 'storage'")) == "timescaledb"
    for table in FACT_TABLES:
        outside = bind.scalar(text(f"SELECT count(*) FROM public.{table} WHERE NOT ({WINDOW})"))
        if outside and timescale:
            _decompress_outside(table)
        if outside:
            logging.getLogger("warehouse.migrate").warning(
                "%s holds %d rows with received_at before %s or from %s on: they stay, never exported nor"
                " retained, and new ones are refused (docs/reliability.md, \"Times the lake holds\")",
                table, outside, FIRST[:10], END[:10])
        _sql(f"ALTER TABLE public.{table} ADD CONSTRAINT {_name(table)} CHECK ({WINDOW}) NOT VALID")
    _sql(
        f"""
        CREATE FUNCTION {SCHEMA}.unfit(table_name text, column_name text, value anyelement, holds text)
        RETURNS anyelement LANGUAGE plpgsql STABLE AS $$
        BEGIN
            RAISE EXCEPTION 'odds-warehouse: %.% = % cannot be read as the lake holds it (%); the row did not come'
                ' through a feed adapter: leave it out of the query, or correct it as the table''s owner',
                table_name, column_name, value, holds USING ERRCODE = 'data_exception';
        END $$
        """
    )
    _views(_expression)
    _restrict_partitions()


def downgrade() -> None:
    _partitions_as_0001()
    _views(lambda table, spec: _lake_views()._expression(spec))
    _sql(f"DROP FUNCTION IF EXISTS {SCHEMA}.unfit(text, text, anyelement, text)")
    for table in FACT_TABLES:
        _sql(f"ALTER TABLE public.{table} DROP CONSTRAINT IF EXISTS {_name(table)}")
