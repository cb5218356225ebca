"""GraphQL view of the capacity curve: ``capacityPlan``.

For a pipeline's calibrated model (reps with their capacity in it), the same simulated leads are run
with 0, 1, …, ``repsAdded`` more reps: revenue P10/P50/P90, P(goal), per-lead wait P90 and utilisation
per row, each rep's paired gain, and the knee named. Wired as ``whatIf`` is: calibration shared while
the history stands, the simulation in the application's pool, errors naming the input field.
"""

from __future__ import annotations

import math
from datetime import datetime

import strawberry

from pipegraph.api import ids
from pipegraph.api.context import Info
from pipegraph.api.forecast import (
    Calibration,
    CountRange,
    Probability,
    RevenueRange,
    goal_cents,
    input_error,
    money,
    simulation_pool,
)
from pipegraph.api.scalars import Money
from pipegraph.errors import PipegraphError
from pipegraph.services.forecasting import questions


@strawberry.type
class MeasuredValue:
    value: float | None
    se: float | None

    @classmethod
    def of(cls, estimate: questions.Estimate) -> MeasuredValue:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return cls(value=finite(estimate.value), se=finite(estimate.se))


@strawberry.type
class CapacityPlanRow:
    reps_added: int
    reps: int
    revenue: RevenueRange
    wins: CountRange
    p_goal: Probability | None
    wait_p90_days: MeasuredValue
    utilisation: MeasuredValue
    gain: Money | None
    gain_se: Money | None


@strawberry.type
class CapacityPlanResult:
    pipeline_id: strawberry.ID
    horizon_days: float
    trials: int
    seed: int
    engine: str
    goal: Money | None
    reps: int
    rows: list[CapacityPlanRow]
    knee: int | None
    summary: str
    calibration: Calibration

    @classmethod
    def of(cls, pipeline_id: strawberry.ID, answer: questions.CapacityAnswer) -> CapacityPlanResult:
        plan = answer.plan
        return cls(
            pipeline_id=pipeline_id,
            horizon_days=answer.horizon_days,
            trials=plan.trials,
            seed=plan.seed,
            engine=plan.rows[0].engine,
            goal=None if plan.goal is None else money(plan.goal),
            reps=answer.reps,
            rows=[
                CapacityPlanRow(
                    reps_added=row.added,
                    reps=answer.reps + row.added,
                    revenue=RevenueRange.of(row.revenue),
                    wins=CountRange.of(row.wins),
                    p_goal=Probability.of(row.p_goal),
                    wait_p90_days=MeasuredValue.of(row.wait_p90),
                    utilisation=MeasuredValue.of(row.utilisation),
                    gain=None if row.gain is None else money(row.gain.value),
                    gain_se=None if row.gain is None else money(row.gain.se),
                )
                for row in plan.rows
            ],
            knee=plan.knee,
            summary=plan.summary,
            calibration=Calibration.from_report(answer.report),
        )


@strawberry.input
class CapacityPlanInput:
    pipeline_id: strawberry.ID
    reps_added: int = 5
    horizon_days: int = 90
    goal: Money | None = None
    trials: int = questions.CAPACITY_TRIALS
    seed: int = 0
    as_of: datetime | None = None


@strawberry.type
class CapacityPlanQuery:
    @strawberry.field
    async def capacity_plan(self, info: Info, input: CapacityPlanInput) -> CapacityPlanResult:
        info.context.require_viewer()
        try:
            pk = ids.decode_as(input.pipeline_id, "Pipeline", field="pipelineId")
            async with info.context.store.read() as session:
                answer = await questions.capacity_plan(
                    session,
                    simulation_pool(info),
                    pipeline_id=pk,
                    horizon_days=input.horizon_days,
                    reps_added=input.reps_added,
                    goal_cents=goal_cents(input.goal),
                    trials=input.trials,
                    seed=input.seed,
                    as_of=input.as_of,
                )
        except PipegraphError as error:
            raise input_error(error) from None
        return CapacityPlanResult.of(input.pipeline_id, answer)
