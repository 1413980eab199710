"""Export and retention you can trust when jobs overlap and roles are not trusted (issue 21 items 1, 2, 8).

- `warehouse_maintainer` (NOLOGIN, a member of warehouse_reader): the role `warehouse export` and
  `warehouse retain` run as. Only it (and the owner) may record an export or drop a day.
- `export_runs` is written only through `warehouse_record_export(...)` (SECURITY DEFINER, checks the
  record): INSERT is revoked from warehouse_reader (migration 0003 granted it), warehouse_writer
  (0001) and PUBLIC. `retention_runs` stays written only by `warehouse_drop_day`.
- The maintenance lock: both functions run only for a session holding the advisory lock
  `pg_advisory_lock(1870096384, 1)` (`warehouse_holds_maintenance_lock()`), which `warehouse export`
  and `warehouse retain` take for their whole run: they exclude each other across hosts, and what
  they planned cannot change under them.
- `warehouse_drop_day` (replacing 0006's; the old one is kept, unusable, for the downgrade): rows of
  the day in a default partition leave with it (its append-only trigger is off inside the function's
  transaction only); a day retention moved already can be given table by table (its late rows, once
  its file holds them); what it records in `retention_runs` is the latest `export_runs` row, which
  must hold every row the lake must hold (those moved before plus those dropped now).
- `bytes` on export_runs and retention_runs: the file's size, what a reader checks cheaply.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen with this migration (the schema's fact tables at revision 0009).
FACT_TABLES = ("raw_messages", "price_ticks", "market_changes", "fixture_changes", "score_changes", "order_changes",
               "bet_changes", "account_changes", "emergency_events", "collector_events", "quarantine")
LOCK = (1870096384, 1)  # 0x6f776800 ('ow h'), 1: the maintenance lock (warehouse.lifecycle.lock)
FIRST_DAY = "2000-01-01"  # no export holds an earlier day
MAINTAINER = "warehouse_maintainer"
RECORD_ARGS = "text, date, bigint, bigint, text, text, timestamptz, timestamptz"


def _sql(statement: str) -> None:
    op.execute(text(statement))


def _if_role(role: str, statement: str) -> None:
    _sql(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN {statement}; END IF; END $$")


def upgrade() -> None:
    tables = ", ".join(f"'{t}'" for t in FACT_TABLES)
    _sql("ALTER TABLE export_runs ADD COLUMN bytes bigint")
    _sql("ALTER TABLE retention_runs ADD COLUMN bytes bigint")
    _sql(
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{MAINTAINER}') THEN
                CREATE ROLE {MAINTAINER} NOLOGIN;
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'odds-warehouse: cannot create role {MAINTAINER}; ask an administrator to create it';
        END $$
        """
    )
    _sql(
        f"""
        CREATE FUNCTION warehouse_holds_maintenance_lock() RETURNS boolean
        LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
            SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                           AND mode = 'ExclusiveLock' AND classid = {LOCK[0]}::oid AND objid = {LOCK[1]}::oid
                           AND objsubid = 2 AND database = (SELECT oid FROM pg_database
                                                            WHERE datname = current_database()))
        $$
        """
    )
    _sql(
        f"""
        CREATE FUNCTION warehouse_record_export(table_name text, day date, rows bigint, bytes bigint, path text,
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
            IF path IS NULL OR left(path, 1) <> '/' OR path ~ '(^|/)\\.\\.?(/|$)' OR strpos(path, '//') > 0
                    OR right(path, length(suffix)) <> suffix THEN
                RAISE EXCEPTION 'odds-warehouse: % is not where the lake keeps % (an absolute path ending in %)',
                    path, table_name, suffix USING ERRCODE = 'invalid_parameter_value';
            END IF;
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
    )
    # The 0006 function stays, renamed and callable by nobody, so that a downgrade puts it back as it was.
    _sql("ALTER FUNCTION warehouse_drop_day(date, jsonb) RENAME TO warehouse_drop_day_0006")
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
            kept bigint;
            file_rows bigint;
            file_path text;
            file_sha text;
            total bigint := 0;
            named text[] := ARRAY[]::text[];
            low timestamptz := target::timestamp AT TIME ZONE 'UTC';
            high timestamptz := (target + 1)::timestamp AT TIME ZONE 'UTC';
            native boolean := (SELECT value FROM warehouse_meta WHERE key = 'storage') = 'native';
            moved boolean := EXISTS (SELECT FROM retention_runs WHERE day = target);
        BEGIN
            IF NOT warehouse_holds_maintenance_lock() THEN
                RAISE EXCEPTION 'odds-warehouse: a day is dropped only by a session holding the maintenance lock'
                    ' (warehouse retain takes it)' USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            -- Every count first, under a lock that keeps new rows out until the day is gone.
            FOREACH parent IN ARRAY ARRAY[{tables}] LOOP
                want := expected -> parent;
                IF want IS NULL THEN
                    CONTINUE WHEN moved;  -- a day retention moved already: its late rows leave table by table
                    RAISE EXCEPTION 'odds-warehouse: no verified export of % on % was given', parent, target;
                END IF;
                named := named || parent;
                EXECUTE format('LOCK TABLE public.%I IN %s MODE', parent,
                               CASE WHEN native THEN 'ACCESS EXCLUSIVE' ELSE 'SHARE' END);
                EXECUTE format('SELECT count(*) FROM public.%I WHERE received_at >= $1 AND received_at < $2', parent)
                    INTO have USING low, high;
                IF have <> (want ->> 'rows')::bigint THEN
                    RAISE EXCEPTION 'odds-warehouse: % has % rows on % but its verified export has %',
                        parent, have, target, want ->> 'rows' USING ERRCODE = 'data_exception';
                END IF;
                CONTINUE WHEN have = 0;
                SELECT e.rows, e.path, e.sha256 INTO file_rows, file_path, file_sha FROM export_runs e
                    WHERE e.table_name = parent AND e.day = target ORDER BY e.finished_at DESC, e.id DESC LIMIT 1;
                IF NOT FOUND OR file_path IS DISTINCT FROM want ->> 'path'
                        OR file_sha IS DISTINCT FROM want ->> 'sha256' THEN
                    RAISE EXCEPTION 'odds-warehouse: the export of % on % that was verified is not the one'
                        ' export_runs recorded last', parent, target USING ERRCODE = 'data_exception';
                END IF;
                kept := coalesce((SELECT r.rows FROM retention_runs r WHERE r.table_name = parent AND r.day = target
                                  ORDER BY r.dropped_at DESC, r.id DESC LIMIT 1), 0);
                IF file_rows <> kept + have THEN
                    RAISE EXCEPTION 'odds-warehouse: the export of % on % holds % rows, not the % the lake must'
                        ' hold (% moved before, % in PostgreSQL)', parent, target, file_rows, kept + have, kept,
                        have USING ERRCODE = 'data_exception';
                END IF;
            END LOOP;
            FOREACH parent IN ARRAY named LOOP
                IF native THEN
                    part := format('%s_p%s', parent, to_char(target, 'YYYYMMDD'));
                    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
                        EXECUTE format('ALTER TABLE public.%I DETACH PARTITION public.%I', parent, part);
                        EXECUTE format('DROP TABLE public.%I', part);
                    END IF;
                    -- Rows of the day written before its partition existed, or after retention dropped it.
                    IF to_regclass(format('public.%I', parent || '_default')) IS NOT NULL THEN
                        EXECUTE format('SELECT count(*) FROM public.%I WHERE received_at >= $1 AND received_at < $2',
                                       parent || '_default') INTO stray USING low, high;
                        IF stray > 0 THEN  -- the trigger is off for this transaction only (DDL is transactional)
                            EXECUTE format('ALTER TABLE public.%I DISABLE TRIGGER USER', parent || '_default');
                            EXECUTE format('DELETE FROM public.%I WHERE received_at >= $1 AND received_at < $2',
                                           parent || '_default') USING low, high;
                            EXECUTE format('ALTER TABLE public.%I ENABLE TRIGGER USER', parent || '_default');
                        END IF;
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
                have := (expected -> parent ->> 'rows')::bigint;
                IF have > 0 OR NOT EXISTS (SELECT FROM retention_runs r WHERE r.table_name = parent
                                                                        AND r.day = target) THEN
                    INSERT INTO retention_runs (table_name, day, rows, bytes, path, sha256)
                    SELECT parent, target, coalesce(e.rows, 0), e.bytes, e.path, e.sha256
                    FROM (SELECT) AS one LEFT JOIN LATERAL (
                        SELECT x.rows, x.bytes, x.path, x.sha256 FROM export_runs x
                        WHERE x.table_name = parent AND x.day = target ORDER BY x.finished_at DESC, x.id DESC LIMIT 1
                    ) AS e ON true;
                END IF;
                total := total + have;
            END LOOP;
            RETURN total;
        END $$
        """
    )
    _sql("REVOKE ALL ON FUNCTION warehouse_drop_day(date, jsonb) FROM PUBLIC")
    _sql(f"REVOKE ALL ON FUNCTION warehouse_record_export({RECORD_ARGS}) FROM PUBLIC")
    revoke = ("REVOKE INSERT ON export_runs, retention_runs FROM {0};"
              " REVOKE USAGE ON SEQUENCE export_runs_id_seq, retention_runs_id_seq FROM {0}")
    _sql(f"DO $$ BEGIN {revoke.format('PUBLIC')}; END $$")
    for role in ("warehouse_reader", "warehouse_writer"):
        _if_role(role, revoke.format(role))
    # Granting a role needs its ADMIN option, which a database owner on managed PostgreSQL (no CREATEROLE,
    # the roles made by an administrator) does not have: then an administrator grants it, once.
    _sql(
        f"""
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{MAINTAINER}')
               AND NOT pg_has_role('{MAINTAINER}', 'warehouse_reader', 'MEMBER') THEN
                GRANT warehouse_reader TO {MAINTAINER};
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'odds-warehouse: cannot grant warehouse_reader to {MAINTAINER}; ask an administrator to'
                ' run GRANT warehouse_reader TO {MAINTAINER}';
        END $$
        """
    )
    _if_role(MAINTAINER, f"GRANT EXECUTE ON FUNCTION warehouse_drop_day(date, jsonb),"
                         f" warehouse_record_export({RECORD_ARGS}) TO {MAINTAINER}")


def downgrade() -> None:
    _sql("DROP FUNCTION IF EXISTS warehouse_drop_day(date, jsonb)")
    _sql("ALTER FUNCTION warehouse_drop_day_0006(date, jsonb) RENAME TO warehouse_drop_day")
    _sql(f"DROP FUNCTION IF EXISTS warehouse_record_export({RECORD_ARGS})")
    _sql("DROP FUNCTION IF EXISTS warehouse_holds_maintenance_lock()")
    _if_role("warehouse_writer", "GRANT INSERT ON export_runs TO warehouse_writer;"
                                 " GRANT USAGE ON SEQUENCE export_runs_id_seq TO warehouse_writer")
    _if_role("warehouse_reader", "GRANT INSERT ON export_runs TO warehouse_reader;"
                                 " GRANT USAGE ON SEQUENCE export_runs_id_seq TO warehouse_reader")
    _sql("ALTER TABLE retention_runs DROP COLUMN bytes")
    _sql("ALTER TABLE export_runs DROP COLUMN bytes")
    # Other databases of the cluster may still use the role: then it stays.
    _sql(
        f"""
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{MAINTAINER}') THEN
                REVOKE warehouse_reader FROM {MAINTAINER};
                DROP ROLE {MAINTAINER};
            END IF;
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
            RAISE NOTICE 'odds-warehouse: role {MAINTAINER} is still in use elsewhere; kept';
        END $$
        """
    )
