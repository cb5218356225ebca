"""Metrics read leads from indexes alone: those created in a window, and those closed in one (which
also hold the open ones), with each lead's owner, source and qualification score for the breakdowns,
and the stage a lost lead was lost in for the value lost per stage. The index of closed leads is
widened rather than doubled: one index to keep up on writes, and no choice between two for the planner.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DIMENSIONS = ["owner_id", "source", "qualification_score"]
_CREATED = ["pipeline_id", "created_at", *_DIMENSIONS]
_CLOSED = ["pipeline_id", "status", "closed_at", "created_at", "value_cents"]


def upgrade() -> None:
    op.create_index("ix_leads_pipeline_created_dimensions", "leads", _CREATED)
    op.drop_index("ix_leads_pipeline_status_closed", table_name="leads")
    op.create_index("ix_leads_pipeline_status_closed", "leads", [*_CLOSED, "stage_id", *_DIMENSIONS])


def downgrade() -> None:
    op.drop_index("ix_leads_pipeline_status_closed", table_name="leads")
    op.create_index("ix_leads_pipeline_status_closed", "leads", _CLOSED)
    op.drop_index("ix_leads_pipeline_created_dimensions", table_name="leads")
