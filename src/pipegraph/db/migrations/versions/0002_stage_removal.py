"""Stages can be removed without losing history: removed_at, name unique among current stages.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CURRENT = sa.text("removed_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint("uq_stages_pipeline_id_name", type_="unique")
    op.create_index(
        "uq_stages_pipeline_id_name_current",
        "stages",
        ["pipeline_id", "name"],
        unique=True,
        sqlite_where=_CURRENT,
        postgresql_where=_CURRENT,
    )


def downgrade() -> None:
    op.drop_index("uq_stages_pipeline_id_name_current", table_name="stages")
    # Fails if a removed stage shares its name with a current one: rename it first rather than lose history.
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_stages_pipeline_id_name", ["pipeline_id", "name"])
        batch_op.drop_column("removed_at")
