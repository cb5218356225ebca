"""The four questions planners ask: forecast, leads needed, compare, sensitivity.

Every question takes a model, a number of trials, a seed, an engine name (``auto`` picks the fastest
engine that can express the model) and optionally an executor to spread trials over. The same seed gives
the same answer on any executor.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import replace

import numpy as np
from scipy import stats

from pipesim import engines
from pipesim.engines import analytic, vectorized
from pipesim.engines.common import Outcomes
from pipesim.errors import QuestionError
from pipesim.parallel import Progress, map_blocks
from pipesim.results import (
    Comparison,
    Estimate,
    Forecast,
    Histogram,
    LeadsNeeded,
    Lever,
    Sensitivity,
    Summary,
)
from pipesim.spec import Model

DEFAULT_TRIALS = 10_000


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
) -> tuple[str, Outcomes]:
    """Raw per-trial outcomes from a Monte Carlo engine, and the engine's name."""
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
    )
    return name, Outcomes.concat(parts)


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
) -> Forecast:
    """Wins and revenue within the horizon: mean, sd, P10/P50/P90, histogram, P(revenue >= goal)."""
    _check_goal(goal)
    name, out = simulate(model, trials, seed, engine=engine, executor=executor, progress=progress)
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
    if model.arrivals.kind != "batch":
        raise QuestionError(
            "arrivals.kind: leads-needed varies a batch of leads at day 0; set arrivals.kind = 'batch'"
        )
    naive = analytic.naive_leads(model, goal)
    exact = analytic.leads_needed(model, goal, confidence)
    name = engines.choose(model, engine)
    if name == "des":
        leads, p_goal = _bisect_leads(model, goal, confidence, trials, seed, executor, progress)
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
    )


def _bisect_leads(
    model: Model,
    goal: float,
    confidence: float,
    trials: int,
    seed: int,
    executor: Executor | None,
    progress: Progress | None,
) -> tuple[int, Estimate]:
    def p_goal(leads: int) -> Estimate:
        _, out = simulate(model.with_new_leads(leads), trials, seed, engine="des", executor=executor)
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
    if engine == "auto":
        engine = "des" if base.needs_capacity or variant.needs_capacity else "vectorized"
    name, first = simulate(base, trials, seed, engine=engine, executor=executor, progress=progress)
    _, second = simulate(variant, trials, seed, engine=name, executor=executor, progress=progress)
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
    name, base = simulate(model, trials, seed, engine=engine, executor=executor, progress=progress)
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
            _, out = simulate(variant, trials, seed, engine=name, executor=executor, progress=progress)
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
