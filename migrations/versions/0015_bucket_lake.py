"""A lake in an S3 bucket (issue 25): `warehouse_record_export` takes an object's URL as well as a path.

`export_runs.path` (and so `retention_runs.path`) of a table-day exported to a bucket lake is the
object's URL, `s3://BUCKET/PREFIX/<table>/day=YYYY-MM-DD/part-0.parquet`: the function (0009's, same
checks otherwise) now accepts it — a bucket name as S3 spells them, no `.`/`..` segment, no empty one,
the layout's ending. Replaced in place (CREATE OR REPLACE keeps its owner, SECURITY DEFINER and grants).

`warehouse_record_move(table_name, day)`: a lake moved (`warehouse export --copy-to s3://…`) says where
a day retention moved now lives. Once the copy is verified and recorded in `export_runs` (same rows,
same sha256), a new `retention_runs` row repeats the latest one with the copy's path — append-only, as
ever: the latest row is where the day lives, and every reader already takes the latest. Only the
maintainer, holding the maintenance lock, may call it.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None

# Frozen with this migration (as 0009 froze them).
FACT_TABLES = ("raw_messages", "price_ticks", "market_changes", "fixture_changes", "score_changes", "order_changes",
               "bet_changes", "account_changes", "emergency_events", "collector_events", "quarantine")
FIRST_DAY = "2000-01-01"


def _record_export(tables: str, path_check: str) -> str:
    """0009's warehouse_record_export, with the path check given."""
    return f"""
        CREATE OR REPLACE FUNCTION warehouse_record_export(table_name text, day date, rows bigint, bytes bigint,
                                                           path text,
                                                sha256 text, started_at timestamptz, finished_at timestamptz)
        RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        DECLARE
            suffix text := format('/%s/day=%s/part-0.parquet', table_name, to_char(day, 'YYYY-MM-DD'));
            kept bigint;
            recorded bigint;
        BEGIN
            IF NOT warehouse_holds_maintenance_lock() THEN
                RAISE EXCEPTION 'odds-warehouse: an export is recorded only by a session holding the maintenance'
                    ' lock (warehouse export takes it)' USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            IF table_name IS NULL OR NOT table_name = ANY(ARRAY[{tables}]) THEN
                RAISE EXCEPTION 'odds-warehouse: % is not a fact table', table_name
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF day IS NULL OR day < DATE '{FIRST_DAY}' OR day > (now() AT TIME ZONE 'UTC')::date THEN
                RAISE EXCEPTION 'odds-warehouse: % is not a day an export can hold ({FIRST_DAY} to today, UTC)', day
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF rows IS NULL OR rows < 0 OR bytes IS NULL OR bytes <= 0 THEN
                RAISE EXCEPTION 'odds-warehouse: % rows in % bytes is not a Parquet file', rows, bytes
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF sha256 IS NULL OR sha256 !~ '^[0-9a-f]{{64}}$' THEN
                RAISE EXCEPTION 'odds-warehouse: % is not a sha256 (64 lowercase hex digits)', sha256
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
{path_check}
            IF started_at IS NULL OR finished_at IS NULL OR started_at > finished_at
                    OR finished_at > now() + INTERVAL '1 minute' THEN
                RAISE EXCEPTION 'odds-warehouse: an export cannot start at % and finish at %', started_at,
                    finished_at USING ERRCODE = 'invalid_parameter_value';
            END IF;
            -- A day retention moved lives in the lake only: its file never loses a row.
            SELECT r.rows INTO kept FROM retention_runs r WHERE r.table_name = $1 AND r.day = $2
                ORDER BY r.dropped_at DESC, r.id DESC LIMIT 1;
            IF kept IS NOT NULL AND rows < kept THEN
                RAISE EXCEPTION 'odds-warehouse: % on % is in the lake with % rows (retention moved it out of'
                    ' PostgreSQL); an export of % rows would lose rows', table_name, day, kept, rows
                    USING ERRCODE = 'data_exception';
            END IF;
            INSERT INTO export_runs AS e (table_name, day, rows, bytes, path, sha256, started_at, finished_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING e.id INTO recorded;
            RETURN recorded;
        END $$
        """


# An absolute path, or (from 0015) an object's URL in a bucket.
PATH_CHECK = """
            -- An absolute path, or an object's URL in a bucket (issue 25): s3://BUCKET/KEY, the key ending the same.
            IF path IS NULL OR NOT (left(path, 1) = '/' OR path ~ '^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^/]')
                    OR path ~ '(^|/)\\.\\.?(/|$)' OR strpos(regexp_replace(path, '^s3://', ''), '//') > 0
                    OR right(path, length(suffix)) <> suffix THEN
                RAISE EXCEPTION 'odds-warehouse: % is not where the lake keeps % (an absolute path or s3:// URL'
                    ' ending in %)', path, table_name, suffix USING ERRCODE = 'invalid_parameter_value';
            END IF;"""
PATH_CHECK_0009 = """
            IF path IS NULL OR left(path, 1) <> '/' OR path ~ '(^|/)\\.\\.?(/|$)' OR strpos(path, '//') > 0
                    OR right(path, length(suffix)) <> suffix THEN
                RAISE EXCEPTION 'odds-warehouse: % is not where the lake keeps % (an absolute path ending in %)',
                    path, table_name, suffix USING ERRCODE = 'invalid_parameter_value';
            END IF;"""


MAINTAINER = "warehouse_maintainer"
RECORD_MOVE = """
    CREATE FUNCTION warehouse_record_move(table_name text, day date) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    DECLARE
        moved record;
        copied record;
        recorded bigint;
    BEGIN
        IF NOT warehouse_holds_maintenance_lock() THEN
            RAISE EXCEPTION 'odds-warehouse: a move is recorded only by a session holding the maintenance lock'
                ' (warehouse export takes it)' USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        SELECT r.rows, r.path, r.sha256 INTO moved FROM retention_runs r WHERE r.table_name = $1 AND r.day = $2
            ORDER BY r.dropped_at DESC, r.id DESC LIMIT 1;
        IF NOT FOUND OR moved.path IS NULL THEN
            RAISE EXCEPTION 'odds-warehouse: retention did not move % on % to a lake file', $1, $2
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        SELECT e.rows, e.bytes, e.path, e.sha256 INTO copied FROM export_runs e WHERE e.table_name = $1 AND e.day = $2
            ORDER BY e.finished_at DESC, e.id DESC LIMIT 1;
        IF copied.path = moved.path THEN
            RETURN NULL;  -- there already
        END IF;
        IF copied.rows IS DISTINCT FROM moved.rows OR copied.sha256 IS DISTINCT FROM moved.sha256 THEN
            RAISE EXCEPTION 'odds-warehouse: the latest export of % on % (%) is not a copy of the file retention'
                ' moved it to (%)', $1, $2, copied.path, moved.path USING ERRCODE = 'data_exception';
        END IF;
        INSERT INTO retention_runs (table_name, day, rows, bytes, path, sha256)
        VALUES ($1, $2, copied.rows, copied.bytes, copied.path, copied.sha256) RETURNING id INTO recorded;
        RETURN recorded;
    END $$
"""


def upgrade() -> None:
    op.execute(text(_record_export(", ".join(f"'{t}'" for t in FACT_TABLES), PATH_CHECK)))
    op.execute(text(RECORD_MOVE))
    op.execute(text("REVOKE ALL ON FUNCTION warehouse_record_move(text, date) FROM PUBLIC"))
    op.execute(text(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{MAINTAINER}') THEN"
                    f" GRANT EXECUTE ON FUNCTION warehouse_record_move(text, date) TO {MAINTAINER}; END IF; END $$"))


def downgrade() -> None:
    op.execute(text("DROP FUNCTION IF EXISTS warehouse_record_move(text, date)"))
    op.execute(text(_record_export(", ".join(f"'{t}'" for t in FACT_TABLES), PATH_CHECK_0009)))
