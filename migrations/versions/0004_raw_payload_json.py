"""raw_messages.payload becomes json: each frame's text as received (secrets redacted), byte for byte.

jsonb parses a frame into a tree and prints it back re-encoded (keys sorted and deduplicated,
whitespace and number spellings changed); json keeps the text, only validated, and still answers
`payload->'bookmakerOdds'`. Not building the tree saves ~11 us of PostgreSQL CPU per frame
(bench/collect.py --schema-cost). Existing rows become jsonb's text of them (`payload::json`): the
frames as received are gone for those. The downgrade goes back to jsonb (`payload::jsonb`).

The column's type changes in every partition, so the table is rewritten under an exclusive lock:
collectors wait (and spool) meanwhile. On TimescaleDB a hypertable with compressed chunks cannot be
altered ("operation not supported on hypertables with compressed chunks"): the upgrade (and the
downgrade) decompresses the compressed chunks of raw_messages first, alters the column, then
compresses those chunks again. Decompressing needs the disk space of the uncompressed chunks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE = "raw_messages"


def _sql(statement: str) -> None:
    op.execute(text(statement))


def _retype(kind: str) -> None:
    storage = op.get_bind().scalar(text("SELECT value FROM warehouse_meta WHERE key = 'storage'"))
    chunks = []
    if storage == "timescaledb":  # "operation not supported on hypertables with compressed chunks"
        chunks = [chunk for (chunk,) in op.get_bind().execute(text(
            "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = :t AND is_compressed ORDER BY range_start"), {"t": TABLE})]
        for chunk in chunks:
            _sql(f"SELECT decompress_chunk('{chunk}')")
    _sql(f"ALTER TABLE {TABLE} ALTER COLUMN payload TYPE {kind} USING payload::{kind}")
    for chunk in chunks:  # as they were
        _sql(f"SELECT compress_chunk('{chunk}')")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")
