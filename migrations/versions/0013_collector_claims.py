"""Claims: which collector process holds each feed, and what a handover must not store twice.

Not fact tables: mutable bookkeeping, like `ingest_batches` (history of handovers is in
collector_events). docs/claims.md gives the argument these pieces make together.

- `collector_claims`: one row per feed (its name, `source` in every row). `epoch` is the fencing
  token: every takeover bumps it, and the writer's commits check it (`warehouse_claims_fence`).
  `expires_at` is on the database's clock; `holder_process` is null once released (`holder` still
  names who held it last). `solo`: at its last renewal the holder saw no standby
  for the feed. `watch`: earlier epochs whose holders may still store late frames (each
  `{"epoch", "spool", "since", "settled"}`).
- `collector_processes`: every running collector (standbys included), renewed with its claims.
- `collector_handover_keys`: vendor identities of frames stored while a feed is watched, so that
  the same event is stored once across a handover.

The takeover and the fence take an advisory lock on the feed (exclusive and shared): a commit
that passed the fence is committed before any takeover of its feed, and none passes it after.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None

LOCK_CLASS = 7305059  # the first key of the feeds' advisory locks ('owc')


def _sql(statement: str) -> None:
    op.execute(text(statement))


def upgrade() -> None:
    _sql("""
        CREATE TABLE collector_claims (
            feed text PRIMARY KEY,
            epoch bigint NOT NULL DEFAULT 0,
            holder text,
            holder_process uuid,
            since timestamptz,
            renewed_at timestamptz,
            expires_at timestamptz,
            solo boolean NOT NULL DEFAULT false,
            watch jsonb NOT NULL DEFAULT '[]'::jsonb
        )""")
    _sql("""
        CREATE TABLE collector_processes (
            id uuid PRIMARY KEY,
            name text NOT NULL,
            host text NOT NULL,
            pid integer NOT NULL,
            version text,
            feeds text[] NOT NULL,
            spool uuid,
            started_at timestamptz NOT NULL DEFAULT now(),
            seen_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL
        )""")
    _sql("""
        CREATE TABLE collector_handover_keys (
            source text NOT NULL,
            key text NOT NULL,
            epoch bigint NOT NULL,
            registered_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (source, key)
        )""")
    # A commit of frames received under `epochs` passes only while each feed's epoch is still that.
    # The shared lock is taken first, so the epochs read below are those after any takeover in flight.
    _sql(f"""
        CREATE FUNCTION warehouse_claims_fence(feeds text[], epochs bigint[]) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE
            moved text;
        BEGIN
            PERFORM pg_advisory_xact_lock_shared({LOCK_CLASS}, hashtext(f)) FROM unnest(feeds) AS f;
            SELECT string_agg(format('%s (received under epoch %s, now %s)', f.feed, f.epoch,
                                     coalesce(c.epoch::text, 'no claim')), ', ')
              INTO moved
              FROM unnest(feeds, epochs) AS f(feed, epoch) LEFT JOIN collector_claims AS c USING (feed)
             WHERE c.epoch IS DISTINCT FROM f.epoch;
            IF moved IS NOT NULL THEN
                RAISE EXCEPTION 'claim moved on: %', moved USING ERRCODE = 'OW001';
            END IF;
        END $$""")
    # A takeover, in one statement (no lock outlives it): released, first, the holder's spool is
    # ours now (it is gone), expired with a standby it knew of, or expired without one and unrenewed
    # since `solo_renewed` (the caller watched it that long). Returns nothing while it is held.
    _sql(f"""
        CREATE FUNCTION warehouse_claims_take(p_feed text, p_holder text, p_process uuid, p_spool uuid,
                                              p_ttl double precision, p_solo_renewed timestamptz)
        RETURNS TABLE (taken_epoch bigint, previous_epoch bigint, previous_holder text, why text,
                       watch_now jsonb, solo_now boolean)
        LANGUAGE plpgsql AS $$
        DECLARE
            c collector_claims%ROWTYPE;
            previous_spool uuid;
            reason text;
            entries jsonb;
            alone boolean;
        BEGIN
            PERFORM pg_advisory_xact_lock({LOCK_CLASS}, hashtext(p_feed));
            INSERT INTO collector_claims (feed) VALUES (p_feed) ON CONFLICT DO NOTHING;
            SELECT * INTO c FROM collector_claims WHERE feed = p_feed FOR UPDATE;
            entries := c.watch;
            IF c.holder_process IS NULL THEN
                reason := CASE WHEN c.epoch = 0 THEN 'first' ELSE 'released' END;
            ELSE
                SELECT spool INTO previous_spool FROM collector_processes WHERE id = c.holder_process;
                IF c.holder_process = p_process THEN
                    RETURN;
                ELSIF p_spool IS NOT NULL AND previous_spool = p_spool THEN
                    reason := 'holder restarted';
                ELSIF c.expires_at < now() AND NOT c.solo THEN
                    reason := 'expired';
                ELSIF c.expires_at < now() AND c.solo AND c.renewed_at = p_solo_renewed THEN
                    reason := 'expired without a standby';
                ELSE
                    RETURN;
                END IF;
                entries := entries || jsonb_build_array(jsonb_build_object(
                    'epoch', c.epoch, 'spool', previous_spool, 'since', now(), 'settled', false));
            END IF;
            alone := NOT EXISTS (SELECT 1 FROM collector_processes AS p WHERE p.id <> p_process
                                 AND p.expires_at > now() AND p_feed = ANY (p.feeds));
            UPDATE collector_claims
               SET epoch = c.epoch + 1, holder = p_holder, holder_process = p_process, since = now(),
                   renewed_at = now(), expires_at = now() + make_interval(secs => p_ttl), watch = entries,
                   solo = alone
             WHERE feed = p_feed;
            RETURN QUERY SELECT c.epoch + 1, c.epoch, c.holder, reason, entries, alone;
        END $$""")
    for role in ("warehouse_writer", "warehouse_reader"):
        grant = ("SELECT, INSERT, UPDATE, DELETE ON collector_claims, collector_processes, collector_handover_keys"
                 if role == "warehouse_writer" else
                 "SELECT ON collector_claims, collector_processes, collector_handover_keys")
        _sql(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
             f" GRANT {grant} TO {role}; END IF; END $$")
    _sql("DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'warehouse_writer') THEN"
         " GRANT EXECUTE ON FUNCTION warehouse_claims_fence(text[], bigint[]),"
         " warehouse_claims_take(text, text, uuid, uuid, double precision, timestamptz) TO warehouse_writer;"
         " END IF; END $$")


def downgrade() -> None:
    _sql("DROP FUNCTION IF EXISTS warehouse_claims_take(text, text, uuid, uuid, double precision, timestamptz)")
    _sql("DROP FUNCTION IF EXISTS warehouse_claims_fence(text[], bigint[])")
    for table in ("collector_handover_keys", "collector_processes", "collector_claims"):
        _sql(f"DROP TABLE IF EXISTS {table}")
