"""warehouse_ensure_partitions: only warehouse_writer may call it, and only for the days a writer writes.

0001 left the function executable by PUBLIC (PostgreSQL's default for a new function), and it runs
with its owner's rights: any role, warehouse_reader included, could create partitions for any day —
a collector's login made January's, and the export, which starts at the first day holding a
partition, then planned every day since. Now EXECUTE is revoked from PUBLIC (warehouse_writer keeps
its grant from 0001), and a caller that is not the tables' owner (a member of the owning role, or a
superuser) gets partitions from yesterday to 31 days ahead only (UTC days by the server's clock):
the writer asks for today and the next `partition_days_ahead`. A day outside is skipped with a NOTICE,
not refused: a writer whose clock is off still connects, and its rows land in the default partition.
The owner (replay --into, maintenance by hand) may still make any day's partitions.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import text

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Frozen with this migration (the schema's fact tables at revision 0010).
FACT_TABLES = ("raw_messages", "price_ticks", "market_changes", "fixture_changes", "score_changes", "order_changes",
               "bet_changes", "account_changes", "emergency_events", "collector_events", "quarantine")
BEHIND, AHEAD = 1, 31  # the days a caller other than the owner may get partitions for, around today
SIGNATURE = "warehouse_ensure_partitions(date, integer)"


def _sql(statement: str) -> None:
    op.execute(text(statement))


def upgrade() -> None:
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
    _sql(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")


def downgrade() -> None:
    _sql(f"DROP FUNCTION {SIGNATURE}")
    context.script.get_revision("0001").module._create_partition_function()  # as 0001 made it, PUBLIC included
    _sql("DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'warehouse_writer') THEN"
         f" GRANT EXECUTE ON FUNCTION {SIGNATURE} TO warehouse_writer; END IF; END $$")
