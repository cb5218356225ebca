"""GraphQL view of calibrated forecasts: ``forecast``, ``leadsNeeded``, ``whatIf``.

Each query calibrates the pipeline's model from its stage history (the ``calibration`` field says how
much history stands behind each parameter; as of now, one calibration is shared by the questions while
the history stands, see ``services/forecasting/cache``) and simulates it in the application's simulation
pool, off the event loop. Amounts are ``Money`` in the pipeline currency. Any authenticated user may ask.
Bad input is a GraphQL error with ``extensions: {code, field}``, the field named as in the input
(``input.changes[1].daysFactor``).
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

import strawberry

from pipegraph.api import ids
from pipegraph.api.context import Info
from pipegraph.api.scalars import Money
from pipegraph.errors import PipegraphError
from pipegraph.services.forecasting import questions
from pipegraph.services.forecasting.calibration import CalibrationReport, Source, StageFit
from pipegraph.services.simulation_pool import SimulationPool
from pipegraph.services.validation import to_cents
from pipesim.fitting import Family, FamilyFit

strawberry.enum(
    Family,
    name="TimeFamily",
    description="A family of distributions for the time a lead spends in a stage.",
)
strawberry.enum(
    Source,
    name="CalibrationSource",
    description="HISTORY: fitted from the pipeline's history; PRIOR: too little history, the stated prior.",
)


def money(amount: float) -> Money:
    return Money(Decimal(repr(round(amount, 2))).quantize(Decimal("0.01")))


def simulation_pool(info: Info) -> SimulationPool:
    """The app's pool (``create_app`` puts it on ``app.state``)."""
    request = info.context.request
    pool = getattr(getattr(request, "app", None), "state", None)
    found = getattr(pool, "simulations", None)
    if not isinstance(found, SimulationPool):
        raise RuntimeError("no simulation pool on the application; build the app with create_app")
    return found


def input_error(error: PipegraphError) -> PipegraphError:
    """The same error with its field named from the query's ``input`` argument."""
    return type(error)(error.message, field=f"input.{error.field}" if error.field else "input")


def goal_cents(goal: Money | None) -> int | None:
    return None if goal is None else to_cents(Decimal(goal), field="goal")


# --- calibration report -----------------------------------------------------------------------------


@strawberry.type(description="One parameter of a fitted family, with its standard error.")
class FittedParameter:
    name: str = strawberry.field(description="As the family names it: mean; shape, scale; mu, sigma.")
    value: float = strawberry.field(description="Maximum-likelihood estimate.")
    standard_error: float | None = strawberry.field(
        description="From the observed information; null where it could not be computed."
    )


@strawberry.type(description="One family fitted to a stage's latest stays, running stays right-censored.")
class TimeFamilyFit:
    family: Family = strawberry.field(description="The family fitted.")
    aic: float = strawberry.field(description="Akaike information criterion: lower fits better.")
    mean_days: float = strawberry.field(description="Mean time in stage of the fitted distribution.")
    parameters: list[FittedParameter] = strawberry.field(description="The fitted parameters.")

    @classmethod
    def from_fit(cls, fit: FamilyFit) -> TimeFamilyFit:
        return cls(
            family=fit.family,
            aic=fit.aic,
            mean_days=fit.distribution.mean,
            parameters=[
                FittedParameter(
                    name=name,
                    value=value,
                    standard_error=None if math.isnan(error := fit.standard_errors[name]) else error,
                )
                for name, value in fit.parameters.items()
            ],
        )


@strawberry.type(description="A point of a Kaplan–Meier curve: the share of stays lasting longer.")
class SurvivalPoint:
    days: float = strawberry.field(description="Days in the stage.")
    survival: float = strawberry.field(description="Share of stays that lasted longer than `days`.")
    standard_error: float = strawberry.field(description="Greenwood standard error of `survival`.")
    at_risk: int = strawberry.field(description="Stays that had lasted at least `days`.")


@strawberry.type
class StageCalibration:
    stage_id: strawberry.ID
    name: str
    conversion: float = strawberry.field(description="Posterior mean of Beta(1 + advances, 1 + losses).")
    conversion_sd: float
    conversion_source: Source
    advances: int = strawberry.field(description="Stays that moved on or won, skips through included.")
    passed_through: int = strawberry.field(description="Of the advances: leads that skipped this stage.")
    losses: int
    moved_back: int = strawberry.field(description="Stays ended by a move backwards: censored.")
    still_open: int = strawberry.field(description="Stays still running: censored.")
    exits: int
    mean_days_in_stage: float = strawberry.field(
        description="Mean of the model's time in stage (the exponential's is exposure days ÷ exits)."
    )
    mean_days_se: float | None
    naive_mean_days: float | None = strawberry.field(
        description="Mean of completed stays only, biased low; shown for comparison."
    )
    time_source: Source
    time_family: Family = strawberry.field(
        description="Family of the model's time in stage: the exponential unless the latest stays show "
        "another with an AIC lower by 4 or more."
    )
    time_family_fits: list[TimeFamilyFit] = strawberry.field(
        description="Every family fitted to the latest stays, best AIC first; empty with too few exits."
    )
    survival: list[SurvivalPoint] = strawberry.field(
        description="Kaplan–Meier curve of the latest stays (at most 40 points), to set beside the fit."
    )

    @classmethod
    def from_fit(cls, s: StageFit) -> StageCalibration:
        return cls(
            stage_id=strawberry.ID(ids.encode("Stage", s.stage_id)),
            name=s.name,
            conversion=s.conversion.mean,
            conversion_sd=s.conversion_sd,
            conversion_source=s.conversion_source,
            advances=s.advances,
            passed_through=s.passed_through,
            losses=s.losses,
            moved_back=s.moved_back,
            still_open=s.still_open,
            exits=s.exits,
            mean_days_in_stage=s.mean_days,
            mean_days_se=s.mean_days_se,
            naive_mean_days=s.naive_mean_days,
            time_source=s.time_source,
            time_family=Family(s.time_family),
            time_family_fits=[TimeFamilyFit.from_fit(f) for f in s.family_fits.fits] if s.family_fits else [],
            survival=[
                SurvivalPoint(
                    days=p.days, survival=p.survival, standard_error=p.standard_error, at_risk=p.at_risk
                )
                for p in s.survival
            ],
        )


@strawberry.type
class DealSizeCalibration:
    wins: int
    mean: Money
    sd: Money
    source: Source


@strawberry.type
class ArrivalCalibration:
    created: int
    window_days: float
    rate_per_day: float
    source: Source


@strawberry.type
class RepsCalibration:
    count: int
    total_capacity: int
    leads_each: int
    in_model: bool = strawberry.field(description="Whether rep capacity was simulated (what-ifs on reps).")


@strawberry.type
class Calibration:
    as_of: str
    currency: str
    stages: list[StageCalibration]
    deal_size: DealSizeCalibration
    arrivals: ArrivalCalibration
    reps: RepsCalibration
    open_leads: int
    open_cohorts: int
    notes: list[str]

    @classmethod
    def from_report(cls, r: CalibrationReport) -> Calibration:
        return cls(
            as_of=r.as_of.isoformat(),
            currency=r.currency,
            stages=[StageCalibration.from_fit(s) for s in r.stages],
            deal_size=DealSizeCalibration(
                wins=r.deal_size.wins,
                mean=money(r.deal_size.mean),
                sd=money(r.deal_size.sd),
                source=r.deal_size.source,
            ),
            arrivals=ArrivalCalibration(
                created=r.arrivals.created,
                window_days=r.arrivals.window_days,
                rate_per_day=r.arrivals.rate_per_day,
                source=r.arrivals.source,
            ),
            reps=RepsCalibration(
                count=r.reps.count,
                total_capacity=r.reps.total_capacity,
                leads_each=r.reps.leads_each,
                in_model=r.reps.in_model,
            ),
            open_leads=r.open_leads,
            open_cohorts=r.open_cohorts,
            notes=list(r.notes),
        )


# --- answers ----------------------------------------------------------------------------------------


@strawberry.type
class RevenueRange:
    mean: Money
    sd: Money
    se: Money = strawberry.field(description="Monte Carlo standard error of the mean.")
    p10: Money = strawberry.field(description="10th percentile: a pessimistic outcome.")
    p50: Money
    p90: Money = strawberry.field(description="90th percentile: an optimistic outcome.")

    @classmethod
    def of(cls, s: questions.Summary) -> RevenueRange:
        return cls(
            mean=money(s.mean),
            sd=money(s.sd),
            se=money(s.se),
            p10=money(s.p10),
            p50=money(s.p50),
            p90=money(s.p90),
        )


@strawberry.type
class CountRange:
    mean: float
    sd: float
    p10: float
    p50: float
    p90: float

    @classmethod
    def of(cls, s: questions.Summary) -> CountRange:
        return cls(mean=s.mean, sd=s.sd, p10=s.p10, p50=s.p50, p90=s.p90)


@strawberry.type
class Probability:
    value: float
    se: float = strawberry.field(description="Monte Carlo standard error.")

    @classmethod
    def of(cls, e: questions.Estimate | None) -> Probability | None:
        return None if e is None else cls(value=e.value, se=e.se)


@strawberry.type
class HistogramBucket:
    low: Money
    high: Money
    trials: int


@strawberry.type
class RevenueBand:
    day: float
    p10: Money
    p50: Money
    p90: Money


@strawberry.type
class ForecastResult:
    pipeline_id: strawberry.ID
    horizon_days: float
    trials: int
    seed: int
    engine: str
    revenue: RevenueRange
    wins: CountRange
    expected_revenue: Money
    goal: Money | None
    p_goal: Probability | None = strawberry.field(description="P(revenue ≥ goal within the horizon).")
    histogram: list[HistogramBucket]
    revenue_by_week: list[RevenueBand]
    from_open_leads: RevenueRange = strawberry.field(
        description="Revenue from leads already in the pipeline."
    )
    from_new_leads: RevenueRange = strawberry.field(description="Revenue from leads arriving in the horizon.")
    calibration: Calibration

    @classmethod
    def of(cls, pipeline_id: strawberry.ID, answer: questions.ForecastAnswer) -> ForecastResult:
        f = answer.forecast
        edges, counts = f.histogram.edges, f.histogram.counts
        return cls(
            pipeline_id=pipeline_id,
            horizon_days=f.horizon_days,
            trials=f.trials,
            seed=f.seed,
            engine=f.engine,
            revenue=RevenueRange.of(f.revenue),
            wins=CountRange.of(f.wins),
            expected_revenue=money(f.revenue.mean),
            goal=None if f.goal is None else money(f.goal),
            p_goal=Probability.of(f.p_goal),
            histogram=[
                HistogramBucket(low=money(edges[i]), high=money(edges[i + 1]), trials=count)
                for i, count in enumerate(counts)
            ],
            revenue_by_week=[
                RevenueBand(day=band.day, p10=money(band.p10), p50=money(band.p50), p90=money(band.p90))
                for band in f.revenue_by_week
            ],
            from_open_leads=RevenueRange.of(f.revenue_existing),
            from_new_leads=RevenueRange.of(f.revenue_new),
            calibration=Calibration.from_report(answer.report),
        )


@strawberry.type
class LeadsNeededResult:
    pipeline_id: strawberry.ID
    goal: Money
    confidence: float
    horizon_days: float
    trials: int
    leads: int = strawberry.field(description="New leads, as a batch today, on top of the open ones.")
    leads_per_week: float
    p_goal: Probability = strawberry.field(description="P(goal) with that many new leads.")
    interval_low: int | None = strawberry.field(description="95% Monte Carlo interval of the answer.")
    interval_high: int | None
    naive_leads: int = strawberry.field(
        description="Reverse funnel: goal ÷ mean deal ÷ win rate; no variance, no horizon, no open leads."
    )
    naive_leads_per_week: float
    calibration: Calibration

    @classmethod
    def of(cls, pipeline_id: strawberry.ID, result: questions.LeadsNeededAnswer) -> LeadsNeededResult:
        a = result.answer
        return cls(
            pipeline_id=pipeline_id,
            goal=money(a.goal),
            confidence=a.confidence,
            horizon_days=result.horizon_days,
            trials=a.trials,
            leads=a.leads,
            leads_per_week=result.per_week,
            p_goal=Probability(value=a.p_goal.value, se=a.p_goal.se),
            interval_low=None if a.interval is None else a.interval[0],
            interval_high=None if a.interval is None else a.interval[1],
            naive_leads=a.naive,
            naive_leads_per_week=result.naive_per_week,
            calibration=Calibration.from_report(result.report),
        )


@strawberry.type
class WhatIfResult:
    pipeline_id: strawberry.ID
    horizon_days: float
    trials: int
    engine: str
    changes: list[str] = strawberry.field(description="The changes applied, in words.")
    base: RevenueRange
    variant: RevenueRange
    difference: RevenueRange = strawberry.field(description="Variant − base, per trial (paired).")
    wins_difference: CountRange
    p_variant_better: float
    goal: Money | None
    p_goal_base: Probability | None
    p_goal_variant: Probability | None
    p_goal_difference: Probability | None
    calibration: Calibration

    @classmethod
    def of(cls, pipeline_id: strawberry.ID, result: questions.WhatIfAnswer) -> WhatIfResult:
        c = result.comparison
        return cls(
            pipeline_id=pipeline_id,
            horizon_days=result.horizon_days,
            trials=c.trials,
            engine=c.engine,
            changes=list(result.changes),
            base=RevenueRange.of(c.base),
            variant=RevenueRange.of(c.variant),
            difference=RevenueRange.of(c.difference),
            wins_difference=CountRange.of(c.wins_difference),
            p_variant_better=c.p_variant_better,
            goal=None if c.goal is None else money(c.goal),
            p_goal_base=Probability.of(c.p_goal_base),
            p_goal_variant=Probability.of(c.p_goal_variant),
            p_goal_difference=Probability.of(c.p_goal_difference),
            calibration=Calibration.from_report(result.report),
        )


# --- inputs -----------------------------------------------------------------------------------------


@strawberry.input
class ForecastInput:
    pipeline_id: strawberry.ID
    horizon_days: int = 90
    goal: Money | None = None
    trials: int = questions.DEFAULT_TRIALS
    seed: int = 0
    as_of: datetime | None = strawberry.field(
        default=None,
        description="Calibrate on the history up to this moment (with a time zone) instead of now: what "
        "the forecast would have said then, to compare with what happened since.",
    )


@strawberry.input
class LeadsNeededInput:
    pipeline_id: strawberry.ID
    goal: Money
    confidence: float = 0.9
    horizon_days: int = 90
    trials: int = questions.DEFAULT_TRIALS
    seed: int = 0
    as_of: datetime | None = strawberry.field(
        default=None,
        description="Calibrate on the history up to this moment (with a time zone) instead of now: what "
        "the forecast would have said then, to compare with what happened since.",
    )


@strawberry.input(
    description="One change; set exactly one of conversion, daysFactor, repsDelta, shiftFraction, repLeaves."
)
class WhatIfChange:
    stage_id: strawberry.ID | None = strawberry.field(default=None, description="For stage changes.")
    conversion: float | None = strawberry.field(default=None, description="New mean conversion (0-1).")
    days_factor: float | None = strawberry.field(
        default=None, description="Multiplies the time in stage: 0.8 is 20% faster."
    )
    reps_delta: int | None = strawberry.field(
        default=None, description="Reps added (negative: removed); simulates rep capacity (slower)."
    )
    shift_fraction: float | None = strawberry.field(
        default=None,
        description="Share (0-1) of the new leads of `shiftFromSource` that arrive as `shiftToSource` "
        "leads instead; the model then simulates segments (conversion by source and owner).",
    )
    shift_from_source: str | None = strawberry.field(
        default=None, description="For shiftFraction: the source whose new leads move."
    )
    shift_to_source: str | None = strawberry.field(
        default=None, description="For shiftFraction: the source they move to."
    )
    rep_leaves: strawberry.ID | None = strawberry.field(
        default=None,
        description="A rep (User) who leaves: their share of new leads is spread over the others and "
        "their open leads go to the pool of their source.",
    )


@strawberry.input
class WhatIfInput:
    pipeline_id: strawberry.ID
    changes: list[WhatIfChange]
    horizon_days: int = 90
    goal: Money | None = None
    trials: int | None = strawberry.field(
        default=None, description="Default 2000; at most 20000, or 5000 when reps change (queue engine)."
    )
    seed: int = 0
    as_of: datetime | None = strawberry.field(
        default=None,
        description="Calibrate on the history up to this moment (with a time zone) instead of now: what "
        "the forecast would have said then, to compare with what happened since.",
    )


def _changes(changes: list[WhatIfChange]) -> list[questions.Change]:
    return [
        questions.Change(
            stage_id=ids.decode_optional(c.stage_id, "Stage", field=f"changes[{i}].stageId"),
            conversion=c.conversion,
            days_factor=c.days_factor,
            reps_delta=c.reps_delta,
            shift_fraction=c.shift_fraction,
            shift_from_source=c.shift_from_source,
            shift_to_source=c.shift_to_source,
            rep_leaves=ids.decode_optional(c.rep_leaves, "User", field=f"changes[{i}].repLeaves"),
        )
        for i, c in enumerate(changes)
    ]


@strawberry.type
class ForecastQuery:
    @strawberry.field(description="Revenue and wins over the horizon, from the pipeline's own history.")
    async def forecast(self, info: Info, input: ForecastInput) -> ForecastResult:
        info.context.require_viewer()
        try:
            pk = ids.decode_as(input.pipeline_id, "Pipeline", field="pipelineId")
            async with info.context.store.read() as session:
                answer = await questions.forecast(
                    session,
                    simulation_pool(info),
                    pipeline_id=pk,
                    horizon_days=input.horizon_days,
                    goal_cents=goal_cents(input.goal),
                    trials=input.trials,
                    seed=input.seed,
                    as_of=input.as_of,
                )
        except PipegraphError as error:
            raise input_error(error) from None
        return ForecastResult.of(input.pipeline_id, answer)

    @strawberry.field(
        description="New leads needed for the goal at the given confidence, beside the naive figure."
    )
    async def leads_needed(self, info: Info, input: LeadsNeededInput) -> LeadsNeededResult:
        info.context.require_viewer()
        try:
            pk = ids.decode_as(input.pipeline_id, "Pipeline", field="pipelineId")
            cents = goal_cents(input.goal)
            assert cents is not None
            async with info.context.store.read() as session:
                answer = await questions.leads_needed(
                    session,
                    simulation_pool(info),
                    pipeline_id=pk,
                    horizon_days=input.horizon_days,
                    goal_cents=cents,
                    confidence=input.confidence,
                    trials=input.trials,
                    seed=input.seed,
                    as_of=input.as_of,
                )
        except PipegraphError as error:
            raise input_error(error) from None
        return LeadsNeededResult.of(input.pipeline_id, answer)

    @strawberry.field(description="Paired comparison of the calibrated model with the changes applied.")
    async def what_if(self, info: Info, input: WhatIfInput) -> WhatIfResult:
        info.context.require_viewer()
        try:
            pk = ids.decode_as(input.pipeline_id, "Pipeline", field="pipelineId")
            changes = _changes(input.changes)
            async with info.context.store.read() as session:
                answer = await questions.what_if(
                    session,
                    simulation_pool(info),
                    pipeline_id=pk,
                    horizon_days=input.horizon_days,
                    changes=changes,
                    goal_cents=goal_cents(input.goal),
                    trials=input.trials,
                    seed=input.seed,
                    as_of=input.as_of,
                )
        except PipegraphError as error:
            raise input_error(error) from None
        return WhatIfResult.of(input.pipeline_id, answer)
