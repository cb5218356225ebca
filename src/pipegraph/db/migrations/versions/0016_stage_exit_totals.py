"""Every stay that ever ended, totalled per pipeline, stage and where it went (``stage_exit_totals``),
kept by triggers on ``stage_flow_days``.

Calibration as of now sums the exit rows of every day (hundreds of thousands at a million leads); these
rows hold that sum already. Triggers rather than the writers keep them, so every writer of the daily
totals — moves, imports, rebuilds, cascades — keeps them too. A row of a pipeline being deleted is not
written again (its rows go with the pipeline).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ("pipeline_id", "stage_id", "status", "next_stage_id", "next_status")
_COLUMNS = ", ".join((*_KEY, "n", "seconds_sum"))
_ADD = (
    f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET n = stage_exit_totals.n + excluded.n, "
    "seconds_sum = stage_exit_totals.seconds_sum + excluded.seconds_sum"
)


def _row(side: str, sign: str, when: str = "true") -> str:
    """An upsert adding ``sign`` times the ``side`` (NEW or OLD) daily row to its all-time row, if
    ``when``. (A ``WHERE`` also settles SQLite's parsing of ``SELECT ... ON CONFLICT``.)"""
    values = ", ".join(f"{side}.{column}" for column in _KEY)
    return (
        f"INSERT INTO stage_exit_totals ({_COLUMNS}) "
        f"SELECT {values}, {sign}{side}.n, {sign}{side}.seconds_sum WHERE {when} {_ADD};"
    )


def _delta() -> str:
    """An upsert adding what an update changed in a daily row to its all-time row (the same key)."""
    values = ", ".join(f"NEW.{column}" for column in _KEY)
    return (
        f"INSERT INTO stage_exit_totals ({_COLUMNS}) "
        f"SELECT {values}, NEW.n - OLD.n, NEW.seconds_sum - OLD.seconds_sum WHERE true {_ADD};"
    )


# An update that keeps the row's key and kind (every upsert of the writers) adds its difference once.
_SAME_KEY = " AND ".join(f"NEW.{column} = OLD.{column}" for column in (*_KEY, "kind"))

_POSTGRES_FUNCTION = f"""
CREATE FUNCTION stage_exit_totals_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.kind = 'X' AND {_SAME_KEY} THEN
        {_delta()}
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' AND OLD.kind = 'X'
            AND EXISTS (SELECT FROM pipelines WHERE id = OLD.pipeline_id) THEN
        {_row("OLD", "-")}
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.kind = 'X' THEN
        {_row("NEW", "")}
    END IF;
    RETURN NULL;
END
$$
"""
# One trigger per event, each with a WHEN the server checks before calling the function: a change's entry
# rows (most of the rows it writes) never enter PL/pgSQL.
_POSTGRES_TRIGGERS = {
    "insert": "AFTER INSERT ON stage_flow_days FOR EACH ROW WHEN (NEW.kind = 'X')",
    "update": "AFTER UPDATE ON stage_flow_days FOR EACH ROW WHEN (OLD.kind = 'X' OR NEW.kind = 'X')",
    "delete": "AFTER DELETE ON stage_flow_days FOR EACH ROW WHEN (OLD.kind = 'X')",
}

_LIVE = "EXISTS (SELECT 1 FROM pipelines WHERE id = OLD.pipeline_id)"
_SQLITE_TRIGGERS = {
    "insert": f"""AFTER INSERT ON stage_flow_days
    WHEN NEW.kind = 'X' BEGIN {_row("NEW", "")} END""",
    "update": f"""AFTER UPDATE ON stage_flow_days
    WHEN NEW.kind = 'X' AND {_SAME_KEY} BEGIN {_delta()} END""",
    "rekey": f"""AFTER UPDATE ON stage_flow_days
    WHEN (OLD.kind = 'X' OR NEW.kind = 'X') AND NOT ({_SAME_KEY}) BEGIN
        {_row("OLD", "-", "OLD.kind = 'X'")}
        {_row("NEW", "", "NEW.kind = 'X'")}
    END""",
    "delete": f"""AFTER DELETE ON stage_flow_days
    WHEN OLD.kind = 'X' AND {_LIVE} BEGIN {_row("OLD", "-")} END""",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "stage_exit_totals",
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("next_stage_id", sa.Integer(), nullable=False),
        sa.Column("next_status", sa.String(length=8), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("seconds_sum", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*_KEY),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"INSERT INTO stage_exit_totals ({_COLUMNS}) "
        f"SELECT {', '.join(_KEY)}, sum(n), sum(seconds_sum) FROM stage_flow_days WHERE kind = 'X' "
        f"GROUP BY {', '.join(_KEY)}"
    )
    if dialect == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        for name, trigger in _POSTGRES_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER stage_exit_totals_{name} {trigger} EXECUTE FUNCTION stage_exit_totals_keep()"
            )
            # Also under session_replication_role = replica, which bulk loads and imports set to skip the
            # foreign-key triggers of their own rows: these totals must follow every row.
            op.execute(f"ALTER TABLE stage_flow_days ENABLE ALWAYS TRIGGER stage_exit_totals_{name}")
    else:
        for name, trigger in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER stage_exit_totals_{name} {trigger}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in _POSTGRES_TRIGGERS:
            op.execute(f"DROP TRIGGER stage_exit_totals_{name} ON stage_flow_days")
        op.execute("DROP FUNCTION stage_exit_totals_keep()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER stage_exit_totals_{name}")
    op.drop_table("stage_exit_totals")
