"""Core schema: append-only fact tables (daily partitions or hypertables), roles, candles.

With the `timescaledb` extension created in the database, or available and preloaded, fact tables
become hypertables with 1-day chunks, compression and a continuous aggregate of 1-minute candles.
No superuser needed: the database's owner suffices (managed PostgreSQL). Otherwise they are
range-partitioned by day on `received_at`, with a default partition so an insert never fails for
lack of a partition, and `price_candles_1m` is a plain view with the same columns.
Set WAREHOUSE_TIMESCALEDB=off to force native partitioning, =require to fail without TimescaleDB.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import logging
import os

import sqlalchemy.exc
from alembic import op
from sqlalchemy import text

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

COMMON = "received_at timestamptz NOT NULL, source text NOT NULL"
LINKED = f"{COMMON}, raw_id bigint"

# table -> (columns, B-tree lookup indexes, TimescaleDB segmentby, TimescaleDB orderby)
FACT_TABLES: dict[str, tuple[str, list[tuple[str, ...]], str, str]] = {
    "raw_messages": (
        f"{COMMON}, id bigint NOT NULL DEFAULT nextval('raw_messages_id_seq'), connection_id uuid NOT NULL,"
        " seq bigint NOT NULL, event_id text, kind text NOT NULL, payload jsonb",
        [("source", "received_at")], "source", "received_at",
    ),
    "price_ticks": (
        f"{LINKED}, source_ts timestamptz, bookmaker text, fixture_id text NOT NULL, market_id text NOT NULL,"
        " outcome_id text NOT NULL, player_id text, line numeric, side text, price double precision,"
        " active boolean, status text, max_stake numeric, attrs jsonb",
        [("fixture_id", "market_id", "outcome_id", "received_at")],
        "source, fixture_id", "market_id, outcome_id, received_at",
    ),
    "market_changes": (
        f"{LINKED}, source_ts timestamptz, bookmaker text, fixture_id text NOT NULL, market_id text NOT NULL,"
        " action text NOT NULL, status text, attrs jsonb",
        [("fixture_id", "market_id", "received_at")], "source, fixture_id", "market_id, received_at",
    ),
    "fixture_changes": (
        f"{LINKED}, source_ts timestamptz, fixture_id text NOT NULL, bookmaker text, action text NOT NULL,"
        " start_time timestamptz, status text, changes jsonb",
        [("fixture_id", "received_at")], "source, fixture_id", "received_at",
    ),
    "score_changes": (
        f"{LINKED}, source_ts timestamptz, fixture_id text NOT NULL, period text, home_score integer,"
        " away_score integer, minute integer, live boolean, status text, attrs jsonb",
        [("fixture_id", "received_at")], "source, fixture_id", "received_at",
    ),
    "order_changes": (
        f"{LINKED}, source_ts timestamptz, event text NOT NULL, order_id text, fixture_id text, outcome_id text,"
        " exchange text, exchange_order_id text, order_status text, matched_status text, price numeric,"
        " stake numeric, matched_stake numeric, payload jsonb, old jsonb",
        [("order_id", "received_at"), ("fixture_id", "received_at")], "source", "order_id, received_at",
    ),
    "bet_changes": (
        f"{LINKED}, source_ts timestamptz, event text NOT NULL, bet_id text, order_id text, bookmaker text,"
        " bet_status text, price numeric, stake numeric, payload jsonb, old jsonb",
        [("bet_id", "received_at"), ("order_id", "received_at")], "source", "bet_id, received_at",
    ),
    "account_changes": (
        f"{LINKED}, source_ts timestamptz, event text NOT NULL, account_id text, payload jsonb, old jsonb",
        [("account_id", "received_at")], "source", "account_id, received_at",
    ),
    "emergency_events": (
        f"{LINKED}, source_ts timestamptz, emergency boolean, reason text, payload jsonb",
        [], "source", "received_at",
    ),
    "collector_events": (
        f"{LINKED}, connection_id uuid, event text NOT NULL, detail jsonb",
        [("source", "received_at")], "source", "received_at",
    ),
    "quarantine": (
        f"{LINKED}, connection_id uuid, reason text NOT NULL, frame text",
        [("source", "received_at")], "source", "received_at",
    ),
}
# BRIN suits columns that grow with time; raw ids do, and a B-tree on them would cost gigabytes.
BRIN = {"raw_messages": ("received_at", "id")}
APPEND_ONLY = [*FACT_TABLES, "export_runs"]
CANDLE_KEYS = "source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side"
ROLES = ("warehouse_writer", "warehouse_reader")


def _sql(statement: str) -> None:
    op.execute(text(statement))


def _use_timescaledb() -> bool:
    """TimescaleDB when this database has it (created by an administrator, as managed services do) or
    the server has it loaded (its settings exist: any role may read them, while `SHOW
    shared_preload_libraries` needs a superuser or pg_read_all_settings, which an owner on managed
    PostgreSQL is not). Creating the extension of a loaded library is up to the database owner
    (TimescaleDB 2 is a trusted extension); creating it unloaded would end the connection."""
    choice = os.environ.get("WAREHOUSE_TIMESCALEDB", "auto").strip().lower()
    if choice in {"off", "0", "false", "no"}:
        return False
    bind = op.get_bind()
    if bind.scalar(text("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")):
        return True
    available = bind.scalar(text("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"))
    loaded = bind.scalar(text("SELECT count(*) FROM pg_settings WHERE name LIKE 'timescaledb.%'"))
    if not (available and loaded):
        if choice == "require":
            raise RuntimeError(
                "WAREHOUSE_TIMESCALEDB=require but the server does not offer a preloaded timescaledb "
                "extension; install it and add it to shared_preload_libraries, or unset the variable"
            )
        return False
    try:
        with bind.begin_nested():
            _sql("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except sqlalchemy.exc.DBAPIError as exc:  # e.g. a role without CREATE on the database
        reason = " ".join(str(exc.orig).split())[:200]
        if choice == "require":
            raise RuntimeError(f"WAREHOUSE_TIMESCALEDB=require but the timescaledb extension cannot be created"
                               f" ({reason}); ask an administrator to run CREATE EXTENSION timescaledb") from None
        logging.getLogger("warehouse.migrate").warning(
            "TimescaleDB is loaded but the extension cannot be created (%s): using plain PostgreSQL partitions;"
            " for TimescaleDB, have an administrator run CREATE EXTENSION timescaledb in this database before"
            " the first `warehouse db upgrade`", reason)
        return False
    return True


def upgrade() -> None:
    timescale = _use_timescaledb()
    storage = "timescaledb" if timescale else "native"

    _sql("CREATE TABLE warehouse_meta (key text PRIMARY KEY, value text NOT NULL)")
    _sql(f"INSERT INTO warehouse_meta VALUES ('storage', '{storage}')")
    _sql("CREATE SEQUENCE raw_messages_id_seq INCREMENT BY 1000")
    _sql(
        "CREATE TABLE ingest_batches (batch_id uuid PRIMARY KEY, committed_at timestamptz NOT NULL DEFAULT now(),"
        " frames integer NOT NULL, rows integer NOT NULL)"
    )
    _sql(
        "CREATE TABLE export_runs (id bigserial PRIMARY KEY, table_name text NOT NULL, day date NOT NULL,"
        " rows bigint NOT NULL, path text NOT NULL, sha256 text NOT NULL, started_at timestamptz NOT NULL,"
        " finished_at timestamptz NOT NULL)"
    )
    _sql("CREATE INDEX export_runs_table_name_day_idx ON export_runs (table_name, day)")

    for table, (columns, lookups, segmentby, orderby) in FACT_TABLES.items():
        if timescale:
            _sql(f"CREATE TABLE {table} ({columns})")
            _sql(
                f"SELECT create_hypertable('{table}', 'received_at', chunk_time_interval => INTERVAL '1 day',"
                " create_default_indexes => false)"
            )
            _sql(
                f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = '{segmentby}',"
                f" timescaledb.compress_orderby = '{orderby}')"
            )
            _sql(f"SELECT add_compression_policy('{table}', INTERVAL '7 days')")
        else:
            _sql(f"CREATE TABLE {table} ({columns}) PARTITION BY RANGE (received_at)")
            _sql(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        for col in BRIN.get(table, ("received_at",)):
            _sql(f"CREATE INDEX {table}_{col}_brin ON {table} USING brin ({col})")
        for cols in lookups:
            _sql(f"CREATE INDEX {table}_{'_'.join(cols)}_idx ON {table} ({', '.join(cols)})")

    _create_append_only_triggers()
    _create_partition_function()
    _create_candles(timescale)
    _create_roles_and_grants()
    # Partitions for the coming days, so the first inserts land in a daily partition.
    _sql("SELECT warehouse_ensure_partitions((now() AT TIME ZONE 'UTC')::date, 3)")


def _create_append_only_triggers() -> None:
    _sql(
        """
        CREATE FUNCTION warehouse_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'odds-warehouse: % is append-only; % is not allowed', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'restrict_violation',
                      HINT = 'History is never rewritten: insert a correcting row instead.';
        END $$
        """
    )
    for table in APPEND_ONLY:
        # Statement level: catches TRUNCATE and UPDATE/DELETE that match no row. Row level: cloned
        # onto every partition (or chunk), so statements aimed at a partition are rejected too.
        _sql(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION warehouse_reject_change()"
        )
        _sql(
            f"CREATE TRIGGER {table}_append_only_rows BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION warehouse_reject_change()"
        )
    # Partitions are tables too: statements aimed at one directly must be refused as well.
    for table in FACT_TABLES:
        _sql(
            f"DO $$ BEGIN IF to_regclass('{table}_default') IS NOT NULL THEN"
            f" CREATE TRIGGER {table}_default_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {table}_default"
            " FOR EACH STATEMENT EXECUTE FUNCTION warehouse_reject_change(); END IF; END $$"
        )


def _create_partition_function() -> None:
    tables = ", ".join(f"'{t}'" for t in FACT_TABLES)
    # SECURITY DEFINER: the writer role may create tomorrow's partitions without owning the tables.
    _sql(
        f"""
        CREATE FUNCTION warehouse_ensure_partitions(first_day date, days integer DEFAULT 3)
        RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        DECLARE
            parent text;
            day date;
            part text;
            created integer := 0;
        BEGIN
            IF (SELECT value FROM warehouse_meta WHERE key = 'storage') <> 'native' THEN
                RETURN 0;  -- TimescaleDB creates chunks on demand
            END IF;
            FOREACH parent IN ARRAY ARRAY[{tables}] LOOP
                FOR i IN 0 .. days - 1 LOOP
                    day := first_day + i;
                    part := format('%s_p%s', parent, to_char(day, 'YYYYMMDD'));
                    CONTINUE WHEN to_regclass(format('public.%I', part)) IS NOT NULL;
                    BEGIN
                        EXECUTE format(
                            'CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%L) TO (%L)',
                            part, parent, day::text || ' 00:00:00+00', (day + 1)::text || ' 00:00:00+00');
                        EXECUTE format(
                            'CREATE TRIGGER %I BEFORE UPDATE OR DELETE OR TRUNCATE ON public.%I FOR EACH STATEMENT'
                            ' EXECUTE FUNCTION warehouse_reject_change()', part || '_append_only', part);
                        created := created + 1;
                    EXCEPTION WHEN check_violation THEN
                        -- Rows for that day already sit in the default partition: they stay there.
                        RAISE WARNING 'odds-warehouse: % keeps % rows in its default partition', parent, day;
                    END;
                END LOOP;
            END LOOP;
            RETURN created;
        END $$
        """
    )


def _create_candles(timescale: bool) -> None:
    if timescale:
        _sql(
            f"""
            CREATE MATERIALIZED VIEW price_candles_1m WITH (timescaledb.continuous) AS
            SELECT time_bucket(INTERVAL '1 minute', received_at) AS bucket, {CANDLE_KEYS},
                   first(price, received_at) AS open, max(price) AS high, min(price) AS low,
                   last(price, received_at) AS close, count(*) AS ticks
            FROM price_ticks WHERE price IS NOT NULL
            GROUP BY bucket, {CANDLE_KEYS}
            WITH NO DATA
            """
        )
        _sql("ALTER MATERIALIZED VIEW price_candles_1m SET (timescaledb.materialized_only = false)")
        _sql(
            "SELECT add_continuous_aggregate_policy('price_candles_1m', start_offset => INTERVAL '3 days',"
            " end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute')"
        )
    else:
        _sql(
            f"""
            CREATE VIEW price_candles_1m AS
            SELECT date_bin(INTERVAL '1 minute', received_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
                   {CANDLE_KEYS},
                   (array_agg(price ORDER BY received_at, raw_id))[1] AS open, max(price) AS high,
                   min(price) AS low, (array_agg(price ORDER BY received_at DESC, raw_id DESC))[1] AS close,
                   count(*) AS ticks
            FROM price_ticks WHERE price IS NOT NULL
            GROUP BY 1, {CANDLE_KEYS}
            """
        )


def _create_roles_and_grants() -> None:
    for role in ROLES:
        # Roles are cluster-wide: create them once, tolerate a user without CREATEROLE.
        _sql(
            f"""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                    CREATE ROLE {role} NOLOGIN;
                END IF;
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'odds-warehouse: cannot create role {role}; ask an administrator to create it';
            END $$
            """
        )
    facts = ", ".join(APPEND_ONLY)
    statements = [
        f"GRANT SELECT, INSERT ON {facts} TO warehouse_writer",
        "GRANT SELECT, INSERT, DELETE ON ingest_batches TO warehouse_writer",
        "GRANT SELECT ON warehouse_meta, price_candles_1m TO warehouse_writer",
        "GRANT USAGE ON SEQUENCE raw_messages_id_seq, export_runs_id_seq TO warehouse_writer",
        "GRANT EXECUTE ON FUNCTION warehouse_ensure_partitions(date, integer) TO warehouse_writer",
        f"GRANT SELECT ON {facts}, warehouse_meta, ingest_batches, price_candles_1m TO warehouse_reader",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO warehouse_reader",
    ]
    for statement in statements:
        _sql(
            "DO $$ BEGIN IF (SELECT count(*) FROM pg_roles WHERE rolname IN ('warehouse_writer',"
            f" 'warehouse_reader')) = 2 THEN {statement}; END IF; END $$"
        )


def downgrade() -> None:
    storage = op.get_bind().scalar(text("SELECT value FROM warehouse_meta WHERE key = 'storage'"))
    if storage == "timescaledb":
        _sql("DROP MATERIALIZED VIEW IF EXISTS price_candles_1m")
    else:
        _sql("DROP VIEW IF EXISTS price_candles_1m")
    _sql(
        "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'warehouse_reader') THEN"
        " ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM warehouse_reader;"
        " END IF; END $$"
    )
    for table in [*FACT_TABLES, "export_runs", "ingest_batches", "warehouse_meta"]:
        _sql(f"DROP TABLE IF EXISTS {table} CASCADE")
    _sql("DROP FUNCTION IF EXISTS warehouse_ensure_partitions(date, integer)")
    _sql("DROP FUNCTION IF EXISTS warehouse_reject_change()")
    _sql("DROP SEQUENCE IF EXISTS raw_messages_id_seq")
    for role in ROLES:
        # Other databases of the cluster may still use the role: then it stays.
        _sql(
            f"""
            DO $$ BEGIN
                DROP ROLE IF EXISTS {role};
            EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
                RAISE NOTICE 'odds-warehouse: role {role} is still in use elsewhere; kept';
            END $$
            """
        )
