"""Lead values for the metrics' losses read from an index alone, on PostgreSQL.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite reads a row by its integer primary key directly, so the index would only cost writes there.
_POSTGRESQL = "postgresql"


def upgrade() -> None:
    if op.get_bind().dialect.name == _POSTGRESQL:
        op.create_index("ix_leads_id_value", "leads", ["id"], postgresql_include=["value_cents"])


def downgrade() -> None:
    if op.get_bind().dialect.name == _POSTGRESQL:
        op.drop_index("ix_leads_id_value", table_name="leads")
