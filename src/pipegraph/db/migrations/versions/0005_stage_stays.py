"""Stage stays: one row per history row with the stay it opens, backfilled from the history.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = ("OPEN", "WON", "LOST")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# A frozen copy of the derivation in ``pipegraph.db.stays`` as it was at this revision, so later
# changes there (columns added by later revisions) cannot change what this one does.
_INSERT_STAYS_FROM_HISTORY = """
INSERT INTO stage_stays (history_id, lead_id, pipeline_id, stage_id, status, entered_at, left_at,
                         next_stage_id, next_status)
SELECT h.id, h.lead_id, h.pipeline_id, h.to_stage_id, h.to_status, h.changed_at,
       LEAD(h.changed_at) OVER w, LEAD(h.to_stage_id) OVER w, LEAD(h.to_status) OVER w
FROM stage_history h
WINDOW w AS (PARTITION BY h.lead_id ORDER BY h.changed_at, h.id)
"""


def _status(name: str, *, nullable: bool) -> sa.Column[str]:
    kind = sa.Enum(*_STATUSES, name=name, native_enum=False, create_constraint=True, length=16)
    return sa.Column(name.removeprefix("stay_"), kind, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "stage_stays",
        sa.Column("history_id", _ID, autoincrement=False, nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        _status("stay_status", nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_stage_id", sa.Integer(), nullable=True),
        _status("stay_next_status", nullable=True),
        sa.ForeignKeyConstraint(
            ["history_id"],
            ["stage_history.id"],
            name=op.f("fk_stage_stays_history_id_stage_history"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_stage_stays_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["next_stage_id"], ["stages.id"], name=op.f("fk_stage_stays_next_stage_id_stages")
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name=op.f("fk_stage_stays_pipeline_id_pipelines"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["stage_id"], ["stages.id"], name=op.f("fk_stage_stays_stage_id_stages")),
        sa.PrimaryKeyConstraint("history_id", name=op.f("pk_stage_stays")),
    )
    # Backfill before indexing: building an index once is cheaper than maintaining it row by row.
    op.execute(_INSERT_STAYS_FROM_HISTORY)
    op.create_index("ix_stage_stays_lead_entered", "stage_stays", ["lead_id", "entered_at"])
    op.create_index(
        "ix_stage_stays_pipeline_stage_entered",
        "stage_stays",
        ["pipeline_id", "stage_id", "status", "entered_at", "next_stage_id", "next_status", "left_at"],
    )
    op.create_index(
        "ix_stage_stays_pipeline_exit_left",
        "stage_stays",
        [
            *("pipeline_id", "stage_id", "status", "next_stage_id", "next_status"),
            *("left_at", "entered_at", "lead_id"),
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_stage_stays_pipeline_exit_left", table_name="stage_stays")
    op.drop_index("ix_stage_stays_pipeline_stage_entered", table_name="stage_stays")
    op.drop_index("ix_stage_stays_lead_entered", table_name="stage_stays")
    op.drop_table("stage_stays")
