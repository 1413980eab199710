"""Retention: a verified day leaves PostgreSQL through one function, and every dropped table-day is a row.

`retention_runs` (append-only) records each table-day removed: rows, the Parquet file it lives in and
its sha256. `warehouse_drop_day(day, expected)` is the only removal there is (UPDATE, DELETE and
TRUNCATE stay refused): given, for every fact table, the row count of its verified export, it locks
the table, counts the day again and, only if every count still matches, drops the day's partitions
(plain PostgreSQL) or its 1-day chunks (TimescaleDB) and records them. Rows of the day sitting in a
default partition cannot be dropped with it: the day is then refused, with the reason. The function
runs with its owner's rights and nobody else may call it unless granted.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen with this migration (the schema's fact tables at revision 0006).
FACT_TABLES = ("raw_messages", "price_ticks", "market_changes", "fixture_changes", "score_changes", "order_changes",
               "bet_changes", "account_changes", "emergency_events", "collector_events", "quarantine")


def _sql(statement: str) -> None:
    op.execute(text(statement))


def upgrade() -> None:
    _sql("CREATE TABLE retention_runs (id bigserial PRIMARY KEY, table_name text NOT NULL, day date NOT NULL,"
         " rows bigint NOT NULL, path text, sha256 text, dropped_at timestamptz NOT NULL DEFAULT now())")
    _sql("CREATE INDEX retention_runs_table_name_day_idx ON retention_runs (table_name, day)")
    _sql("CREATE TRIGGER retention_runs_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON retention_runs"
         " FOR EACH STATEMENT EXECUTE FUNCTION warehouse_reject_change()")
    _sql("CREATE TRIGGER retention_runs_append_only_rows BEFORE UPDATE OR DELETE ON retention_runs"
         " FOR EACH ROW EXECUTE FUNCTION warehouse_reject_change()")
    tables = ", ".join(f"'{t}'" for t in FACT_TABLES)
    _sql(
        f"""
        CREATE FUNCTION warehouse_drop_day(target date, expected jsonb) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        DECLARE
            parent text;
            want jsonb;
            have bigint;
            stray bigint;
            part text;
            total bigint := 0;
            low timestamptz := target::timestamp AT TIME ZONE 'UTC';
            high timestamptz := (target + 1)::timestamp AT TIME ZONE 'UTC';
            native boolean := (SELECT value FROM warehouse_meta WHERE key = 'storage') = 'native';
        BEGIN
            -- Every count first, under a lock that keeps new rows out until the day is gone.
            FOREACH parent IN ARRAY ARRAY[{tables}] LOOP
                want := expected -> parent;
                IF want IS NULL THEN
                    RAISE EXCEPTION 'odds-warehouse: no verified export of % on % was given', parent, target;
                END IF;
                EXECUTE format('LOCK TABLE public.%I IN %s MODE', parent,
                               CASE WHEN native THEN 'ACCESS EXCLUSIVE' ELSE 'SHARE' END);
                EXECUTE format('SELECT count(*) FROM public.%I WHERE received_at >= $1 AND received_at < $2', parent)
                    INTO have USING low, high;
                IF have <> (want ->> 'rows')::bigint THEN
                    RAISE EXCEPTION 'odds-warehouse: % has % rows on % but its verified export has %',
                        parent, have, target, want ->> 'rows' USING ERRCODE = 'data_exception';
                END IF;
                IF native AND to_regclass(format('public.%I', parent || '_default')) IS NOT NULL THEN
                    EXECUTE format('SELECT count(*) FROM public.%I WHERE received_at >= $1 AND received_at < $2',
                                   parent || '_default') INTO stray USING low, high;
                    IF stray > 0 THEN
                        RAISE EXCEPTION 'odds-warehouse: % rows of % on % are in its default partition (written'
                            ' before the day''s partition existed) and cannot be dropped with it', stray, parent,
                            target USING ERRCODE = 'object_not_in_prerequisite_state';
                    END IF;
                END IF;
            END LOOP;
            FOREACH parent IN ARRAY ARRAY[{tables}] LOOP
                want := expected -> parent;
                IF native THEN
                    part := format('%s_p%s', parent, to_char(target, 'YYYYMMDD'));
                    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
                        EXECUTE format('ALTER TABLE public.%I DETACH PARTITION public.%I', parent, part);
                        EXECUTE format('DROP TABLE public.%I', part);
                    END IF;
                ELSE
                    PERFORM drop_chunks(format('public.%I', parent)::regclass, older_than => high, newer_than => low);
                    EXECUTE format('SELECT count(*) FROM public.%I WHERE received_at >= $1 AND received_at < $2',
                                   parent) INTO stray USING low, high;
                    IF stray > 0 THEN  -- a chunk not aligned on the day: nothing is dropped
                        RAISE EXCEPTION 'odds-warehouse: % rows of % on % are in a chunk reaching beyond the day',
                            stray, parent, target USING ERRCODE = 'object_not_in_prerequisite_state';
                    END IF;
                END IF;
                INSERT INTO retention_runs (table_name, day, rows, path, sha256)
                VALUES (parent, target, (want ->> 'rows')::bigint, want ->> 'path', want ->> 'sha256');
                total := total + (want ->> 'rows')::bigint;
            END LOOP;
            RETURN total;
        END $$
        """
    )
    _sql("REVOKE ALL ON FUNCTION warehouse_drop_day(date, jsonb) FROM PUBLIC")
    for role in ("warehouse_reader", "warehouse_writer"):
        # alembic_version too: every command checks the schema's revision before it starts.
        _sql(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
             f" GRANT SELECT ON retention_runs, alembic_version TO {role}; END IF; END $$")
        # The export and retention find the days of rows in default partitions (made before the
        # default privileges that cover later partitions).
        for table in FACT_TABLES:
            _sql(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')"
                 f" AND to_regclass('{table}_default') IS NOT NULL THEN"
                 f" GRANT SELECT ON {table}_default TO {role}; END IF; END $$")


def downgrade() -> None:
    _sql("DROP FUNCTION IF EXISTS warehouse_drop_day(date, jsonb)")
    _sql("DROP TABLE IF EXISTS retention_runs")
