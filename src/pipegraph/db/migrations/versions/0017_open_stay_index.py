"""Each lead's open stay found by one index entry (``ix_stage_stays_open``, partial: stays still
running), not among all of the lead's stays.

Every change of stage or status reads the lead's open stay and ends it; through
``ix_stage_stays_lead_entered`` that visited every stay the lead ever had, so a lead's changes grew
slower with its history.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    running = sa.text("left_at IS NULL")
    op.create_index(
        "ix_stage_stays_open",
        "stage_stays",
        ["lead_id", "entered_at", "stage_id", "status"],
        sqlite_where=running,
        postgresql_where=running,
    )


def downgrade() -> None:
    op.drop_index("ix_stage_stays_open", table_name="stage_stays")
