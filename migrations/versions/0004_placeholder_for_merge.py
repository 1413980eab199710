"""Placeholder: stands in for the 0004 being written on another branch, so that this branch's chain
(0003 → 0004 → 0007) is whole and its tests can migrate. It changes nothing.

Delete this file when the branches merge (the real 0004 takes its place; renumber 0007 as needed).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
