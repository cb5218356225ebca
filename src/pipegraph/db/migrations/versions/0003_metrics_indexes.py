"""Indexes for the metrics queries: a pipeline's history by time, occupants and closed leads.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEADS_CLOSED = ["pipeline_id", "status", "closed_at", "created_at", "value_cents"]
_LEADS_OCCUPANTS = ["pipeline_id", "status", "stage_id", "stage_entered_at", "value_cents"]
# Covering: the metrics read every column they need from the index.
_HISTORY_WINDOW = [
    *("pipeline_id", "changed_at", "lead_id", "id"),
    *("from_stage_id", "to_stage_id", "from_status", "to_status"),
]


def upgrade() -> None:
    op.create_index("ix_leads_pipeline_status_closed", "leads", _LEADS_CLOSED)
    op.create_index("ix_leads_pipeline_status_stage_entered", "leads", _LEADS_OCCUPANTS)
    op.create_index("ix_stage_history_pipeline_changed", "stage_history", _HISTORY_WINDOW)


def downgrade() -> None:
    op.drop_index("ix_stage_history_pipeline_changed", table_name="stage_history")
    op.drop_index("ix_leads_pipeline_status_stage_entered", table_name="leads")
    op.drop_index("ix_leads_pipeline_status_closed", table_name="leads")
