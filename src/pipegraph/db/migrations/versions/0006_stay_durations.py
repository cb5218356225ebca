"""Stay durations: ``stage_stays.duration_seconds``, backfilled, in the exits index instead of the start.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EXIT_KEY = ("pipeline_id", "stage_id", "status", "next_stage_id", "next_status", "left_at")

# A frozen copy of ``pipegraph.db.stays.seconds_between`` for these column names: the seconds between
# start and end, the double nearest to the exact microsecond count.
_SECONDS = {
    "sqlite": """((CAST(strftime('%s', left_at) AS INTEGER) - CAST(strftime('%s', entered_at) AS INTEGER))
                  * 1000000 + CAST(substr(left_at, 21) AS INTEGER) - CAST(substr(entered_at, 21) AS INTEGER))
                 / 1000000.0""",
    "postgresql": "CAST(EXTRACT(EPOCH FROM left_at - entered_at) AS DOUBLE PRECISION)",
}


def upgrade() -> None:
    op.add_column("stage_stays", sa.Column("duration_seconds", sa.Double(), nullable=True))
    seconds = _SECONDS[op.get_bind().dialect.name]
    op.execute(f"UPDATE stage_stays SET duration_seconds = {seconds} WHERE left_at IS NOT NULL")
    op.drop_index("ix_stage_stays_pipeline_exit_left", table_name="stage_stays")
    op.create_index(
        "ix_stage_stays_pipeline_exit_duration",
        "stage_stays",
        [*_EXIT_KEY, "duration_seconds", "lead_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_stage_stays_pipeline_exit_duration", table_name="stage_stays")
    op.create_index("ix_stage_stays_pipeline_exit_left", "stage_stays", [*_EXIT_KEY, "entered_at", "lead_id"])
    op.drop_column("stage_stays", "duration_seconds")
