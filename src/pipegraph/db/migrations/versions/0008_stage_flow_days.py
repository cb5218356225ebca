"""Daily flow totals, ``stage_flow_days``, backfilled from the stays, and an index of the stays by
their length in whole days, for the medians.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ("pipeline_id", "day", "kind", "stage_id", "status", "next_stage_id", "next_status", "days_in_stage")

# A frozen copy of what ``pipegraph.db.flow_days`` computes for the backfill: each dialect's UTC day of
# a timestamp and a length in whole days (``pipegraph.db.models.whole_days_text``, also indexed).
_DAY = {"sqlite": "substr({}, 1, 10)", "postgresql": "CAST(timezone('UTC', {}) AS DATE)"}
_WHOLE_DAYS = {
    "sqlite": "CAST(duration_seconds / 86400.0 AS INTEGER)",
    "postgresql": "CAST(floor(duration_seconds / CAST(86400.0 AS DOUBLE PRECISION)) AS INTEGER)",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_index(
        "ix_stage_stays_pipeline_stage_days",
        "stage_stays",
        [
            *("pipeline_id", "stage_id", "status", sa.text(_WHOLE_DAYS[dialect])),
            *("left_at", "duration_seconds", "next_stage_id", "next_status"),
        ],
    )
    op.create_table(
        "stage_flow_days",
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("next_stage_id", sa.Integer(), nullable=False),
        sa.Column("next_status", sa.String(length=8), nullable=False),
        sa.Column("days_in_stage", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("seconds_sum", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*_KEY),
        sqlite_with_rowid=False,
    )
    entered, left = _DAY[dialect].format("entered_at"), _DAY[dialect].format("left_at")
    days = _WHOLE_DAYS[dialect]
    went = "COALESCE(next_stage_id, 0), COALESCE(next_status, '')"
    op.execute(
        f"""
        INSERT INTO stage_flow_days ({", ".join(_KEY)}, n, seconds_sum)
        SELECT pipeline_id, {entered}, 'E', stage_id, status, {went}, 0, count(*), 0.0
        FROM stage_stays
        GROUP BY pipeline_id, {entered}, stage_id, status, {went}
        UNION ALL
        SELECT pipeline_id, {left}, 'X', stage_id, status, next_stage_id, next_status, {days},
               count(*), sum(duration_seconds)
        FROM stage_stays WHERE left_at IS NOT NULL
        GROUP BY pipeline_id, {left}, stage_id, status, next_stage_id, next_status, {days}
        """
    )


def downgrade() -> None:
    op.drop_table("stage_flow_days")
    op.drop_index("ix_stage_stays_pipeline_stage_days", table_name="stage_stays")
