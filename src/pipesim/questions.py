"""The four questions planners ask: forecast, leads needed, compare, sensitivity.

Every question takes a model, a number of trials, a seed, an engine name (``auto`` picks the fastest
engine that can express the model) and optionally an executor to spread trials over. The same seed gives
the same answer on any executor.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import Executor
from dataclasses import replace

import numpy as np
from scipy import stats

from pipesim import engines
from pipesim.engines import analytic, queue, vectorized
from pipesim.engines.common import Flow, Outcomes, fan_days, week_ends, window
from pipesim.errors import EngineError, QuestionError
from pipesim.parallel import Progress, map_blocks
from pipesim.results import (
    CapacityPlan,
    CapacityRow,
    Comparison,
    Estimate,
    Exceedance,
    FlowReport,
    Forecast,
    Histogram,
    LeadDays,
    LeadsNeeded,
    Lever,
    RevenueBand,
    Sensitivity,
    Summary,
    WeeklyQueue,
    pooled,
)
from pipesim.spec import Measurement, Model, Reps

DEFAULT_TRIALS = 10_000
# A capacity curve on the queue engine draws each block's leads once for every team when trials × teams
# is at most this: every team's per-lead measurements are then held at once (about 10 kB a trial for
# 1,000 leads), so bigger curves run team by team (the same numbers either way).
SHARED_DRAW_TRIALS = 10_000


def _check_trials(trials: int) -> None:
    if trials < 2:
        raise QuestionError(f"trials: must be >= 2, got {trials}")


def _check_goal(goal: float | None) -> None:
    if goal is not None and not (goal > 0 and math.isfinite(goal)):
        raise QuestionError(f"goal: must be a finite amount > 0, got {goal}")


def simulate(
    model: Model,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    *,
    engine: str = "auto",
    executor: Executor | None = None,
    progress: Progress | None = None,
    detail: bool = True,
) -> tuple[str, Outcomes]:
    """Raw per-trial outcomes from a Monte Carlo engine, and the engine's name. ``detail=False`` lets
    the engine skip per-lead measurements and revenue by week, for questions that read revenue and
    wins only; those are the same either way."""
    _check_trials(trials)
    name = engines.choose(model, engine)
    parts = map_blocks(
        engines.SIMULATORS[name],
        model,
        trials=trials,
        seed=seed,
        block_trials=engines.BLOCK_TRIALS[name],
        executor=executor,
        progress=progress,
        detail=detail,
    )
    return name, Outcomes.concat(parts)


def flow_report(model: Model, flow: Flow, thresholds: tuple[float, ...] = ()) -> FlowReport:
    """Per-lead waits and lead times, utilisation and weekly queues, with Monte Carlo errors."""
    exceeds = tuple(
        Exceedance(t, pooled(flow.waits, flow.wait_counts, lambda sample, t=t: np.mean(sample > t)))
        for t in thresholds
    )
    weeks = week_ends(model)
    queue = np.percentile(flow.queue, [10, 50, 90], axis=0) if len(weeks) else np.zeros((3, 0))
    return FlowReport(
        window=window(model),
        wait=LeadDays.of(flow.waits, flow.wait_counts),
        wait_exceeds=exceeds,
        lead_time=LeadDays.of(flow.lead_times, flow.lead_time_counts),
        utilisation=Estimate.mean_of(flow.utilisation),
        queue_by_week=tuple(
            WeeklyQueue(float(day), float(queue[0, i]), float(queue[1, i]), float(queue[2, i]))
            for i, day in enumerate(weeks)
        ),
    )


def _with_window(model: Model, warmup_days: float | None, end_days: float | None) -> Model:
    if warmup_days is None and end_days is None:
        return model
    base = model.measurement or Measurement()
    measurement = Measurement(
        base.warmup_days if warmup_days is None else warmup_days,
        base.end_days if end_days is None else end_days,
    )
    return replace(model, measurement=measurement)


def forecast(
    model: Model,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    *,
    goal: float | None = None,
    engine: str = "auto",
    executor: Executor | None = None,
    progress: Progress | None = None,
    bins: int = 30,
    thresholds: tuple[float, ...] = (),
    warmup_days: float | None = None,
    end_days: float | None = None,
) -> Forecast:
    """Wins and revenue within the horizon: mean, sd, P10/P50/P90, histogram, P(revenue >= goal).

    With [reps], also per-lead waits (P50/P90/P99, P(wait > t) for each of ``thresholds`` days), lead
    times, rep utilisation and queue length by week, measured between ``warmup_days`` and ``end_days``
    (default: the model's [measurement], else the whole horizon). ``engine="analytic"`` gives exact
    mean and sd only — ``moments_only`` says so, and the percentiles are not available (NaN)."""
    _check_goal(goal)
    for t in thresholds:
        if not (t >= 0 and math.isfinite(t)):
            raise QuestionError(f"thresholds: each must be a finite number of days >= 0, got {t}")
    if engine == "analytic":
        return _analytic_forecast(model, trials, seed, goal)
    model = _with_window(model, warmup_days, end_days)
    _check_trials(trials)
    name, why = engines.explain(model, engine)
    _, out = simulate(model, trials, seed, engine=name, executor=executor, progress=progress)
    return Forecast(
        engine=name,
        trials=trials,
        seed=seed,
        currency=model.currency,
        horizon_days=model.horizon_days,
        wins=Summary.of(out.wins),
        revenue=Summary.of(out.revenue),
        revenue_new=Summary.of(out.revenue_new),
        revenue_existing=Summary.of(out.revenue_existing),
        wait_days=Summary.of(out.wait_days),
        histogram=Histogram.of(out.revenue, bins),
        goal=goal,
        p_goal=None if goal is None else Estimate.proportion(out.revenue >= goal),
        engine_reason=why,
        flow=flow_report(model, out.flow, thresholds)
        if out.flow is not None and model.needs_capacity
        else None,
        revenue_by_week=RevenueBand.of(fan_days(model), out.revenue_by_day)
        if out.revenue_by_day is not None
        else (),
    )


def _analytic_forecast(model: Model, trials: int, seed: int, goal: float | None) -> Forecast:
    """Exact moments where the closed forms apply; a clear error naming the reason otherwise."""
    try:
        analytic.check(model)
    except EngineError as exc:
        raise EngineError(f"engine 'analytic' does not apply: {exc}") from exc
    if goal is not None:
        raise QuestionError("goal: engine 'analytic' gives moments only, not P(goal); use engine 'auto'")
    m = analytic.moments(model)
    nan = math.nan

    def moments(mean: float, var: float) -> Summary:
        return Summary(mean=mean, sd=math.sqrt(max(var, 0.0)), se=0.0, p10=nan, p50=nan, p90=nan)

    return Forecast(
        engine="analytic",
        trials=0,
        seed=seed,
        currency=model.currency,
        horizon_days=model.horizon_days,
        wins=moments(m.wins_mean, m.wins_var),
        revenue=moments(m.revenue_mean, m.revenue_var),
        revenue_new=moments(m.revenue_new_mean, nan),
        revenue_existing=moments(m.revenue_existing_mean, nan),
        wait_days=moments(0.0, 0.0),
        histogram=Histogram((), ()),
        goal=None,
        p_goal=None,
        engine_reason="requested: closed-form mean and sd only; percentiles need a Monte Carlo engine",
        moments_only=True,
    )


def leads_needed(
    model: Model,
    goal: float,
    confidence: float = 0.9,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    *,
    engine: str = "auto",
    executor: Executor | None = None,
    progress: Progress | None = None,
    max_winners: int = 20_000,
) -> LeadsNeeded:
    """Fewest new leads, as a batch at day 0, with P(revenue >= goal within the horizon) >= confidence.

    Vectorised: each trial yields the exact fewest leads that reach the goal under its random numbers, so
    the answer is the ``confidence`` quantile of those counts, P(goal) is monotone in the lead count, and
    an order-statistic interval gives the Monte Carlo uncertainty of the answer. DES: a bracket-and-bisect
    search on the lead count, every step with the same seed (common random numbers)."""
    _check_goal(goal)
    _check_trials(trials)
    if not 0 < confidence < 1:
        raise QuestionError(f"confidence: must be strictly between 0 and 1, got {confidence}")
    flow_rate: tuple[float, Estimate] | None = None
    if model.arrivals.kind != "batch":
        # Planners of flow models think in leads per week: find that rate, and give the batch figure
        # (the same model with its new leads all at day 0) beside it.
        flow_rate = _bisect_rate(model, goal, confidence, trials, seed, engine, executor)
        model = model.with_new_leads(0)
    naive = analytic.naive_leads(model, goal)
    exact = analytic.leads_needed(model, goal, confidence)
    name = engines.choose(model, engine)
    if name != "vectorized":
        leads, p_goal = _bisect_leads(model, goal, confidence, trials, seed, name, executor, progress)
        interval = None
    else:
        parts = map_blocks(
            vectorized.leads_to_goal,
            model,
            trials=trials,
            seed=seed,
            block_trials=vectorized.BLOCK_TRIALS,
            executor=executor,
            progress=progress,
            goal=goal,
            max_winners=max_winners,
        )
        per_trial = np.sort(np.concatenate(parts))
        answer = float(per_trial[math.ceil(confidence * trials) - 1])
        if not math.isfinite(answer):
            raise QuestionError(
                f"goal: {goal:,.0f} is out of reach at {confidence:.0%} confidence within "
                f"{model.horizon_days:g} days (needs more than {max_winners} wins in too many trials); "
                "lengthen the horizon or lower the goal"
            )
        leads = int(answer)
        p_goal = Estimate.proportion(per_trial <= leads)
        low_rank = max(int(stats.binom.ppf(0.025, trials, confidence)), 1)
        high_rank = min(int(stats.binom.ppf(0.975, trials, confidence)) + 1, trials)
        bounds = per_trial[low_rank - 1], per_trial[high_rank - 1]
        interval = (int(bounds[0]), int(bounds[1])) if np.isfinite(bounds).all() else None
    return LeadsNeeded(
        engine=name,
        trials=trials,
        seed=seed,
        goal=goal,
        confidence=confidence,
        leads=leads,
        p_goal=p_goal,
        interval=interval,
        naive=naive,
        analytic=exact,
        rate_per_week=None if flow_rate is None else flow_rate[0],
        p_goal_at_rate=None if flow_rate is None else flow_rate[1],
    )


def _bisect_rate(
    model: Model,
    goal: float,
    confidence: float,
    trials: int,
    seed: int,
    engine: str,
    executor: Executor | None,
) -> tuple[float, Estimate]:
    """Lowest Poisson arrival rate (leads per week) with P(goal) >= confidence, to 1 %: bracket, then
    bisect, every step on the same seed (common random numbers) so the steps differ only by the rate."""

    def p_goal(per_week: float) -> Estimate:
        variant = replace(model, arrivals=replace(model.arrivals, rate_per_day=per_week / 7))
        _, out = simulate(variant, trials, seed, engine=engine, executor=executor, detail=False)
        return Estimate.proportion(out.revenue >= goal)

    per_lead = model.win_probability * model.mean_deal_size
    high = max(7 * goal / max(per_lead, 1e-12) / model.horizon_days, 1e-6)
    low, found = 0.0, p_goal(high)
    while found.value < confidence:
        low, high = high, high * 2
        if high > 1e9:
            raise QuestionError(f"goal: {goal:,.0f} is out of reach at {confidence:.0%} confidence")
        found = p_goal(high)
    while high - low > 0.01 * high:
        middle = (low + high) / 2
        estimate = p_goal(middle)
        if estimate.value >= confidence:
            high, found = middle, estimate
        else:
            low = middle
    return high, found


def _bisect_leads(
    model: Model,
    goal: float,
    confidence: float,
    trials: int,
    seed: int,
    engine: str,
    executor: Executor | None,
    progress: Progress | None,
) -> tuple[int, Estimate]:
    def p_goal(leads: int) -> Estimate:
        _, out = simulate(
            model.with_new_leads(leads), trials, seed, engine=engine, executor=executor, detail=False
        )
        if progress is not None:
            progress(0)
        return Estimate.proportion(out.revenue >= goal)

    low, high = 0, max(analytic.naive_leads(model, goal), 1)
    found = p_goal(high)
    while found.value < confidence:
        low, high = high, high * 2
        if high > 10_000_000:
            raise QuestionError(f"goal: {goal:,.0f} is out of reach at {confidence:.0%} confidence")
        found = p_goal(high)
    while high - low > 1:
        middle = (low + high) // 2
        estimate = p_goal(middle)
        if estimate.value >= confidence:
            high, found = middle, estimate
        else:
            low = middle
    return high, found


def compare(
    base: Model,
    variant: Model,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    *,
    goal: float | None = None,
    engine: str = "auto",
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Paired what-if: both models see the same leads (common random numbers); differences are per trial."""
    _check_goal(goal)
    if len(base.stages) != len(variant.stages):
        raise QuestionError(
            "variant.stages: a paired comparison needs the same number of stages "
            f"({len(base.stages)} vs {len(variant.stages)})"
        )
    if engine == "auto":  # one engine for both, so the pair shares its random numbers
        picked = {engines.choose(base), engines.choose(variant)}
        engine = next(name for name in ("des", "queue", "vectorized") if name in picked)
    # Revenue and wins only: the engines may skip per-lead measurements.
    name = engines.choose(base, engine)
    if name == "queue" and _same_but_reps(base, variant):
        first, second = _teams(
            base, (base.reps, variant.reps), trials, seed, executor, progress, detail=False
        )
    else:
        name, first = simulate(
            base, trials, seed, engine=engine, executor=executor, progress=progress, detail=False
        )
        _, second = simulate(
            variant, trials, seed, engine=name, executor=executor, progress=progress, detail=False
        )
    difference = second.revenue - first.revenue
    goal_parts: tuple[Estimate | None, Estimate | None, Estimate | None] = (None, None, None)
    if goal is not None:
        hit_base, hit_variant = first.revenue >= goal, second.revenue >= goal
        goal_parts = (
            Estimate.proportion(hit_base),
            Estimate.proportion(hit_variant),
            Estimate.mean_of(hit_variant.astype(float) - hit_base.astype(float)),
        )
    return Comparison(
        engine=name,
        trials=trials,
        seed=seed,
        currency=base.currency,
        base=Summary.of(first.revenue),
        variant=Summary.of(second.revenue),
        difference=Summary.of(difference),
        wins_difference=Summary.of(second.wins - first.wins),
        p_variant_better=float(np.mean(difference > 0)),
        goal=goal,
        p_goal_base=goal_parts[0],
        p_goal_variant=goal_parts[1],
        p_goal_difference=goal_parts[2],
    )


def _same_but_reps(base: Model, variant: Model) -> bool:
    """Whether the models differ in their reps at most (so they see the same drawn leads)."""
    return replace(variant, reps=base.reps) == base


def _teams(
    model: Model,
    teams: tuple[Reps | None, ...],
    trials: int,
    seed: int,
    executor: Executor | None,
    progress: Progress | None,
    *,
    detail: bool,
) -> list[Outcomes]:
    """The queue engine's outcomes of ``model`` with each team of reps, every block's leads drawn once
    for all of them (the same numbers as one run per team)."""
    _check_trials(trials)
    queue.check(model)
    for team in teams:
        queue.check(replace(model, reps=team))
    counted = None if progress is None else (lambda done: progress(done * len(teams)))
    parts = map_blocks(
        queue.simulate_teams,
        model,
        trials=trials,
        seed=seed,
        block_trials=queue.BLOCK_TRIALS,
        executor=executor,
        progress=counted,
        teams=teams,
        detail=detail,
    )
    return [Outcomes.concat([part[index] for part in parts]) for index in range(len(teams))]


def sensitivity(
    model: Model,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    *,
    goal: float | None = None,
    improvement: float = 0.1,
    engine: str = "auto",
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> Sensitivity:
    """Improve each stage in turn — ``improvement`` of its losses won back (p → p + s·(1 − p)), or its
    time in stage cut by that share — and rank the paired effects on P(goal), or on mean revenue without
    a goal. Winning back a share of losses favours the leakiest stage, which is what "bottleneck" means."""
    _check_goal(goal)
    if not 0 < improvement < 1:
        raise QuestionError(f"improvement: must be strictly between 0 and 1, got {improvement}")
    name, base = simulate(  # revenue only, as for every variant below
        model, trials, seed, engine=engine, executor=executor, progress=progress, detail=False
    )
    percent = f"{improvement:.0%}"
    levers: list[Lever] = []
    for index, stage in enumerate(model.stages):
        variants = [
            (f"losses -{percent}", replace(stage, conversion=stage.conversion.improved(improvement))),
            (
                f"time in stage -{percent}",
                replace(stage, time_in_stage=stage.time_in_stage.scaled(1 - improvement)),
            ),
        ]
        for change, changed in variants:
            variant = model.replace_stage(
                index, conversion=changed.conversion, time_in_stage=changed.time_in_stage
            )
            _, out = simulate(
                variant, trials, seed, engine=name, executor=executor, progress=progress, detail=False
            )
            p_goal = None
            if goal is not None:
                p_goal = Estimate.mean_of((out.revenue >= goal).astype(float) - (base.revenue >= goal))
            levers.append(Lever(stage.name, change, Estimate.mean_of(out.revenue - base.revenue), p_goal))

    def effect(lever: Lever) -> float:
        return lever.p_goal.value if lever.p_goal is not None else lever.revenue.value

    levers.sort(key=lambda lever: (effect(lever), lever.revenue.value), reverse=True)
    return Sensitivity(
        engine=name, trials=trials, seed=seed, goal=goal, levers=tuple(levers), bottleneck=levers[0].stage
    )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def capacity(
    model: Model,
    added: tuple[int, ...] | range = range(6),
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    *,
    goal: float | None = None,
    engine: str = "auto",
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> CapacityPlan:
    """The capacity curve: for each number of reps ``added``, revenue P10/P50/P90, P(goal), per-lead
    wait P90 and utilisation. Every variant sees the same simulated leads (common random numbers), so
    each rep's gain is a paired difference; the knee is the rep after which one more buys less than
    half of what the one before did."""
    _check_goal(goal)
    if model.reps is None:
        raise QuestionError("reps: the model has no [reps] table; add one to plan capacity")
    steps = sorted(set(added))
    if not steps or steps[0] < 0:
        raise QuestionError(f"reps: the reps to add must be whole numbers >= 0, got {list(added)}")
    rows: list[CapacityRow] = []
    previous = None
    teams = tuple(replace(model.reps, count=model.reps.count + extra) for extra in steps)
    shared = None
    if engines.choose(model, engine) == "queue" and trials * len(teams) <= SHARED_DRAW_TRIALS:
        shared = _teams(model, teams, trials, seed, executor, progress, detail=True)
    for index, extra in enumerate(steps):
        variant = replace(model, reps=teams[index])
        if shared is not None:
            name, out = "queue", shared[index]
        else:
            name, out = simulate(variant, trials, seed, engine=engine, executor=executor, progress=progress)
        flow = flow_report(variant, out.flow) if out.flow is not None else None
        rows.append(
            CapacityRow(
                added=extra,
                reps=model.reps.reps + extra,
                engine=name,
                revenue=Summary.of(out.revenue),
                wins=Summary.of(out.wins),
                p_goal=None if goal is None else Estimate.proportion(out.revenue >= goal),
                wait_p90=flow.wait.p90 if flow is not None else Estimate(math.nan, math.nan),
                utilisation=flow.utilisation if flow is not None else Estimate(math.nan, math.nan),
                gain=None if previous is None else Estimate.mean_of(out.revenue - previous),
            )
        )
        previous = out.revenue
    gains = [(row.added, row.gain.value) for row in rows if row.gain is not None]
    knee = next((before for (before, g0), (_, g1) in itertools.pairwise(gains) if g1 < 0.5 * g0), None)
    words = ", ".join(
        f"the {_ordinal(n)} rep adds {model.currency} {gain:,.0f}" for n, gain in gains if n > 0
    )
    if knee is not None:
        words += f"; returns fall off after the {_ordinal(knee)} added rep"
    return CapacityPlan(
        trials=trials,
        seed=seed,
        currency=model.currency,
        goal=goal,
        rows=tuple(rows),
        knee=knee,
        summary=words[:1].upper() + words[1:] if words else "",
    )
