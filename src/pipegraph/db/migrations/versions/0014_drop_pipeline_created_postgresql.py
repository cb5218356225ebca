"""Drop ix_leads_pipeline_created on PostgreSQL, where it repeats a prefix of another index.

ix_leads_pipeline_created_dimensions starts with the same (pipeline_id, created_at) columns; a
PostgreSQL B-tree orders no further than its columns either way, so the wider index serves the same
scans and every lead insert saves one index update. SQLite keeps it: there each index ends with the
rowid, so only the two-column one gives the lead listing its (created_at, id) order.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSTGRESQL = "postgresql"


def upgrade() -> None:
    if op.get_bind().dialect.name == _POSTGRESQL:
        op.drop_index("ix_leads_pipeline_created", table_name="leads")


def downgrade() -> None:
    if op.get_bind().dialect.name == _POSTGRESQL:
        op.create_index("ix_leads_pipeline_created", "leads", ["pipeline_id", "created_at"])
