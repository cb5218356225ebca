"""Revenue goals per pipeline and period: set (create or replace the amount) and list.

A goal covers whole days, ``period_start`` to ``period_end`` inclusive. Metrics use the narrowest
stored goal whose period covers their window, so coverage and attainment need no client arithmetic.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Goal, Pipeline, Role, User
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services.permissions import require_role
from pipegraph.services.validation import to_cents


async def set_goal(
    session: AsyncSession,
    *,
    pipeline_id: int,
    period_start: date,
    period_end: date,
    amount: Decimal | int | str,
    actor: User | None,
) -> Goal:
    """Store the goal for ``pipeline_id`` over the period, replacing the amount of an existing one.

    ``amount`` is in major units (e.g. ``"125000.00"``). Only managers and admins set goals.
    """
    require_role(actor, Role.MANAGER, "setting goals")
    amount_cents = to_cents(amount, field="amount")
    if period_end < period_start:
        raise ValidationError(
            f"period_end ({period_end.isoformat()}) is before period_start ({period_start.isoformat()})",
            field="period_end",
        )
    if await session.get(Pipeline, pipeline_id) is None:
        raise NotFoundError(f"no pipeline with id {pipeline_id}", field="pipeline_id")
    statement = select(Goal).where(
        Goal.pipeline_id == pipeline_id, Goal.period_start == period_start, Goal.period_end == period_end
    )
    goal = (await session.execute(statement)).scalar_one_or_none()
    if goal is None:
        goal = Goal(
            pipeline_id=pipeline_id,
            period_start=period_start,
            period_end=period_end,
            amount_cents=amount_cents,
        )
        session.add(goal)
    goal.amount_cents = amount_cents
    await session.flush()
    return goal


async def get_goal(session: AsyncSession, goal_id: int) -> Goal | None:
    return await session.get(Goal, goal_id)


async def list_goals(session: AsyncSession, *, pipeline_id: int) -> list[Goal]:
    statement = (
        select(Goal).where(Goal.pipeline_id == pipeline_id).order_by(Goal.period_start, Goal.period_end)
    )
    return list((await session.execute(statement)).scalars())
