"""GraphQL view of the pipeline metrics and revenue goals.

``pipelineMetrics`` runs the fixed set of metrics statements once; ``breakdown`` and ``timeSeries`` are
fields of the result that query only when a client selects them. Any authenticated user may read
metrics; ``setGoal`` needs MANAGER or ADMIN (checked by the goals service).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.api import ids
from pipegraph.api.context import Info
from pipegraph.api.errors import UserError
from pipegraph.api.resolvers.common import run_command
from pipegraph.api.scalars import Money
from pipegraph.api.types import Node
from pipegraph.db import models
from pipegraph.errors import PipegraphError
from pipegraph.services import goals
from pipegraph.services import metrics as service
from pipegraph.services import metrics_patterns as patterns
from pipegraph.services.metrics_sql import Interval
from pipegraph.services.validation import from_cents, to_cents

strawberry.enum(
    service.ProbabilitySource,
    name="ProbabilitySource",
    description="Where a stage's win probability comes from: the stage settings, or observed "
    "outcomes of leads that entered the stage in the window; NONE when neither is known.",
)
# Registered in place: annotations below use the service enums themselves, which mypy can check.
strawberry.enum(patterns.Dimension, name="MetricsDimension")
strawberry.enum(Interval, name="MetricsInterval")
# The service names the window ``start``/``end``; the API calls them ``from``/``to``.
_ARGUMENT_NAMES = {"start": "from", "end": "to"}


def _money(cents: int | None) -> Money | None:
    return None if cents is None else Money(from_cents(cents))


def _money_per_day(cents: float | None) -> Money | None:
    return None if cents is None else Money(from_cents(round(cents)))


@strawberry.type
class StageMetrics:
    stage_id: strawberry.ID
    name: str
    position: int
    is_post_sale: bool
    target_days: int | None
    entered: int = strawberry.field(description="Stays in this stage that started in the window.")
    entered_advanced: int = strawberry.field(description="Of those, how many have moved forward by now.")
    entered_conversion_rate: float | None
    exits: int = strawberry.field(description="Stays that ended in the window (moved, won or lost).")
    advanced: int = strawberry.field(description="Exits to a later stage, or won.")
    moved_back: int
    won: int
    lost: int = strawberry.field(description="Drop-off: exits by being lost while in this stage.")
    lost_value: Money
    conversion_rate: float | None = strawberry.field(description="advanced ÷ exits.")
    drop_off_rate: float | None = strawberry.field(description="lost ÷ exits.")
    avg_days_in_stage: float | None
    median_days_in_stage: float | None
    current_count: int
    current_value: Money
    weighted_value: Money
    avg_age_days: float | None
    max_age_days: float | None
    stalled_count: int = strawberry.field(description="Current occupants older than the target days.")
    stalled_value: Money
    empirical_win_probability: float | None
    win_probability: float | None
    probability_source: service.ProbabilitySource

    @classmethod
    def from_result(cls, s: service.StageMetrics) -> StageMetrics:
        return cls(
            stage_id=strawberry.ID(ids.encode("Stage", s.stage_id)),
            name=s.name,
            position=s.position,
            is_post_sale=s.is_post_sale,
            target_days=s.target_days,
            entered=s.entered,
            entered_advanced=s.entered_advanced,
            entered_conversion_rate=s.entered_conversion_rate,
            exits=s.exits,
            advanced=s.advanced,
            moved_back=s.moved_back,
            won=s.won,
            lost=s.lost,
            lost_value=Money(from_cents(s.lost_value_cents)),
            conversion_rate=s.conversion_rate,
            drop_off_rate=s.drop_off_rate,
            avg_days_in_stage=s.avg_days_in_stage,
            median_days_in_stage=s.median_days_in_stage,
            current_count=s.current_count,
            current_value=Money(from_cents(s.current_value_cents)),
            weighted_value=Money(from_cents(s.weighted_value_cents)),
            avg_age_days=s.avg_age_days,
            max_age_days=s.max_age_days,
            stalled_count=s.stalled_count,
            stalled_value=Money(from_cents(s.stalled_value_cents)),
            empirical_win_probability=s.empirical_win_probability,
            win_probability=s.win_probability,
            probability_source=s.probability_source,
        )


@strawberry.type
class OverallMetrics:
    leads_created: int
    won_count: int
    won_value: Money
    lost_count: int
    lost_value: Money
    win_rate: float | None = strawberry.field(description="won ÷ (won + lost), closed in the window.")
    avg_won_deal: Money | None
    avg_sales_cycle_days: float | None
    median_sales_cycle_days: float | None
    open_count: int
    open_value: Money
    weighted_pipeline: Money
    velocity_per_day: Money | None = strawberry.field(
        description="open leads × win rate × average won deal ÷ average cycle days."
    )

    @classmethod
    def from_result(cls, o: service.OverallMetrics) -> OverallMetrics:
        return cls(
            leads_created=o.leads_created,
            won_count=o.won_count,
            won_value=Money(from_cents(o.won_value_cents)),
            lost_count=o.lost_count,
            lost_value=Money(from_cents(o.lost_value_cents)),
            win_rate=o.win_rate,
            avg_won_deal=_money(o.avg_won_deal_cents),
            avg_sales_cycle_days=o.avg_sales_cycle_days,
            median_sales_cycle_days=o.median_sales_cycle_days,
            open_count=o.open_count,
            open_value=Money(from_cents(o.open_value_cents)),
            weighted_pipeline=Money(from_cents(o.weighted_pipeline_cents)),
            velocity_per_day=_money_per_day(o.velocity_cents_per_day),
        )


@strawberry.type
class Coverage:
    goal: Money
    goal_is_stored: bool
    won_value: Money
    remaining: Money
    attainment: float | None
    coverage: float | None = strawberry.field(description="open pipeline ÷ remaining goal.")
    required_coverage: float | None = strawberry.field(description="1 ÷ win rate.")
    covered: bool | None


@strawberry.type
class Bottleneck:
    stage_id: strawberry.ID
    name: str
    revenue_at_risk: Money = strawberry.field(
        description="win probability × (value lost from the stage in the window + value stalled now)."
    )
    lost_value: Money
    conversion_rate: float | None
    others_conversion_rate: float | None
    stalled_count: int
    stalled_value: Money
    avg_days_in_stage: float | None
    target_days: int | None
    summary: str = strawberry.field(description="One sentence a client can show as is.")


@strawberry.type
class MetricsBreakdown:
    key: str | None = strawberry.field(
        description="What the row groups by: the owner's User ID (usable with node(id:); null for leads "
        "without an owner), the source as written, or the qualification score."
    )
    label: str
    created: int
    won_count: int
    won_value: Money
    lost_count: int
    lost_value: Money
    win_rate: float | None
    avg_won_deal: Money | None
    avg_sales_cycle_days: float | None
    open_count: int
    open_value: Money


def _breakdown_key(by: patterns.Dimension, key: str | None) -> str | None:
    if by is patterns.Dimension.OWNER and key is not None:
        return ids.encode("User", int(key))
    return key


@strawberry.type
class MetricsBucket:
    start: date
    created: int
    won_count: int
    won_value: Money
    lost_count: int
    cohort_won: int
    cohort_conversion: float | None = strawberry.field(
        description="Of the leads created in this bucket, the share won by now."
    )


@strawberry.type
class PipelineMetrics:
    pipeline_pk: strawberry.Private[int]
    pipeline_id: strawberry.ID
    from_: datetime = strawberry.field(name="from")
    to: datetime
    now: datetime
    stages: list[StageMetrics]
    overall: OverallMetrics
    coverage: Coverage | None
    bottleneck: Bottleneck | None

    @strawberry.field(description="Core figures per owner, source or qualification score (one query).")
    async def breakdown(self, info: Info, by: patterns.Dimension) -> list[MetricsBreakdown]:
        async with info.context.store.read() as session:
            rows = await patterns.breakdown(
                session, pipeline_id=self.pipeline_pk, start=self.from_, end=self.to, by=by
            )
        return [
            MetricsBreakdown(
                key=_breakdown_key(by, r.key),
                label=r.label,
                created=r.created,
                won_count=r.won_count,
                won_value=Money(from_cents(r.won_value_cents)),
                lost_count=r.lost_count,
                lost_value=Money(from_cents(r.lost_value_cents)),
                win_rate=r.win_rate,
                avg_won_deal=_money(r.avg_won_deal_cents),
                avg_sales_cycle_days=r.avg_sales_cycle_days,
                open_count=r.open_count,
                open_value=Money(from_cents(r.open_value_cents)),
            )
            for r in rows
        ]

    @strawberry.field(description="Created, won and lost per UTC week (from Monday) or month (one query).")
    async def time_series(self, info: Info, interval: Interval) -> list[MetricsBucket]:
        async with info.context.store.read() as session:
            rows = await patterns.time_series(
                session, pipeline_id=self.pipeline_pk, start=self.from_, end=self.to, interval=interval
            )
        return [
            MetricsBucket(
                start=date.fromisoformat(r.start),
                created=r.created,
                won_count=r.won_count,
                won_value=Money(from_cents(r.won_value_cents)),
                lost_count=r.lost_count,
                cohort_won=r.cohort_won,
                cohort_conversion=r.cohort_conversion,
            )
            for r in rows
        ]

    @classmethod
    def from_result(cls, m: service.PipelineMetrics) -> PipelineMetrics:
        coverage = None
        if m.coverage is not None:
            c = m.coverage
            coverage = Coverage(
                goal=Money(from_cents(c.goal_cents)),
                goal_is_stored=c.goal_is_stored,
                won_value=Money(from_cents(c.won_value_cents)),
                remaining=Money(from_cents(c.remaining_cents)),
                attainment=c.attainment,
                coverage=c.coverage,
                required_coverage=c.required_coverage,
                covered=c.covered,
            )
        bottleneck = None
        if m.bottleneck is not None:
            b = m.bottleneck
            bottleneck = Bottleneck(
                stage_id=strawberry.ID(ids.encode("Stage", b.stage_id)),
                name=b.name,
                revenue_at_risk=Money(from_cents(b.revenue_at_risk_cents)),
                lost_value=Money(from_cents(b.lost_value_cents)),
                conversion_rate=b.conversion_rate,
                others_conversion_rate=b.others_conversion_rate,
                stalled_count=b.stalled_count,
                stalled_value=Money(from_cents(b.stalled_value_cents)),
                avg_days_in_stage=b.avg_days_in_stage,
                target_days=b.target_days,
                summary=b.summary,
            )
        return cls(
            pipeline_pk=m.pipeline_id,
            pipeline_id=strawberry.ID(ids.encode("Pipeline", m.pipeline_id)),
            from_=m.start,
            to=m.end,
            now=m.now,
            stages=[StageMetrics.from_result(s) for s in m.stages],
            overall=OverallMetrics.from_result(m.overall),
            coverage=coverage,
            bottleneck=bottleneck,
        )


@strawberry.type(description="A revenue goal of a pipeline for a period.")
class Goal(Node):
    pipeline_id: strawberry.ID
    period_start: date
    period_end: date
    amount: Money

    @classmethod
    def from_model(cls, goal: models.Goal) -> Goal:
        return cls(
            id=strawberry.ID(ids.encode("Goal", goal.id)),
            pipeline_id=strawberry.ID(ids.encode("Pipeline", goal.pipeline_id)),
            period_start=goal.period_start,
            period_end=goal.period_end,
            amount=Money(from_cents(goal.amount_cents)),
        )


@strawberry.input
class SetGoalInput:
    pipeline_id: strawberry.ID
    period_start: date
    period_end: date = strawberry.field(description="Inclusive.")
    amount: Money


@strawberry.type
class SetGoalPayload:
    goal: Goal | None = None
    user_errors: list[UserError]


def _api_error(error: PipegraphError) -> PipegraphError:
    field = error.field
    if field in _ARGUMENT_NAMES:
        return type(error)(error.message, field=_ARGUMENT_NAMES[field])
    return error


@strawberry.type
class MetricsQuery:
    @strawberry.field(description="Stage-by-stage and overall pipeline metrics for the window [from, to).")
    async def pipeline_metrics(
        self,
        info: Info,
        pipeline_id: strawberry.ID,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        goal: Annotated[
            Money | None,
            strawberry.argument(description="Overrides the narrowest stored goal covering the window."),
        ] = None,
        now: Annotated[
            datetime | None,
            strawberry.argument(description="The clock for ages and stalls; defaults to the current time."),
        ] = None,
    ) -> PipelineMetrics:
        info.context.require_viewer()
        try:
            pk = ids.decode_as(pipeline_id, "Pipeline", field="pipeline_id")
            goal_cents = None if goal is None else to_cents(Decimal(goal), field="goal")
            async with info.context.store.read() as session:
                result = await service.pipeline_metrics(
                    session, pipeline_id=pk, start=from_, end=to, goal_cents=goal_cents, now=now
                )
        except PipegraphError as error:
            raise _api_error(error) from None
        return PipelineMetrics.from_result(result)

    @strawberry.field(description="Stored revenue goals of a pipeline, by period.")
    async def goals(self, info: Info, pipeline_id: strawberry.ID) -> list[Goal]:
        info.context.require_viewer()
        pk = ids.decode_as(pipeline_id, "Pipeline", field="pipeline_id")
        async with info.context.store.read() as session:
            return [Goal.from_model(g) for g in await goals.list_goals(session, pipeline_id=pk)]


@strawberry.type
class MetricsMutations:
    @strawberry.mutation(description="Set a pipeline's revenue goal for a period (MANAGER or ADMIN).")
    async def set_goal(self, info: Info, input: SetGoalInput) -> SetGoalPayload:
        async def action(session: AsyncSession, viewer: models.User) -> Goal:
            goal = await goals.set_goal(
                session,
                pipeline_id=ids.decode_as(input.pipeline_id, "Pipeline", field="pipeline_id"),
                period_start=input.period_start,
                period_end=input.period_end,
                amount=input.amount,
                actor=viewer,
            )
            return Goal.from_model(goal)

        goal, errors = await run_command(info, action)
        return SetGoalPayload(goal=goal, user_errors=errors)
