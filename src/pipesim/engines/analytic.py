"""Closed forms, for checks and instant answers.

Wins. Given the conversion probabilities ``p`` (random when Beta), each group's in-horizon wins are
binomial — ``Bin(n, q·P)`` for a batch, ``Poisson(λH·r·P)`` for Poisson arrivals — with ``P`` the product of
conversions from the group's stage and ``q`` (``r``) the probability that a winner finishes by the horizon
(averaged over a uniform arrival time). The law of total variance over ``p`` gives mean and variance.

Revenue is compound: ``E[R] = E[W]·E[X]``, ``Var R = E[W]·Var X + Var W·E[X]²`` per group, plus the
covariance the shared conversions induce between groups.

The horizon probability is closed-form when the total time is a constant plus one gamma: every time in
stage fixed, exponential or gamma with one common scale (a cohort's current stage fixed or exponential).
Other models raise :class:`~pipesim.errors.EngineError` — use a Monte Carlo engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import integrate, stats

from pipesim.distributions import Exponential, Fixed, Gamma
from pipesim.engines.common import Group, groups
from pipesim.errors import EngineError
from pipesim.spec import Model


@dataclass(frozen=True)
class Moments:
    wins_mean: float
    wins_var: float
    revenue_mean: float
    revenue_var: float
    revenue_existing_mean: float
    revenue_new_mean: float


def check(model: Model) -> None:
    if model.needs_capacity:
        raise EngineError("the analytic engine has no rep capacity; this model has [reps] — use engine 'des'")
    if model.has_parameter_uncertainty or model.arrivals.varies:
        raise EngineError(
            "the analytic engine has no closed form for uncertain times, deal sizes or arrival rates, or "
            "for arrivals that vary in time — use 'vectorized'"
        )
    if model.segments:
        raise EngineError(
            "the analytic engine has no segments; this model has [[segments]] — use 'vectorized'"
        )
    for group in groups(model):
        _finish_probability(model, group)


def _total_time(model: Model, group: Group) -> tuple[float, float, float]:
    """(shift, gamma shape, gamma scale) of the time from entering ``group.start`` to the win."""
    shift, shape, scale = 0.0, 0.0, 0.0
    for index in range(group.start, len(model.stages)):
        duration = model.stages[index].time_in_stage
        aged = index == group.start and group.age_days > 0
        if isinstance(duration, Fixed):
            shift += max(duration.value - group.age_days, 0.0) if aged else duration.value
            continue
        if isinstance(duration, Exponential):
            phase_shape, phase_scale = 1.0, duration.mean_value
        elif isinstance(duration, Gamma) and not aged:
            phase_shape, phase_scale = duration.shape, duration.scale
        else:
            raise EngineError(
                f"the analytic engine needs fixed, exponential or gamma times in stage; "
                f"stages[{index}].time_in_stage is {duration.to_mapping()['dist']} — use 'vectorized'"
            )
        if shape and not math.isclose(phase_scale, scale):
            raise EngineError(
                "the analytic engine needs one common scale for exponential/gamma times in stage — "
                "use 'vectorized'"
            )
        shape, scale = shape + phase_shape, phase_scale
    return shift, shape, scale


def _finish_probability(model: Model, group: Group) -> float:
    shift, shape, scale = _total_time(model, group)
    horizon = model.horizon_days

    def cdf(t: float) -> float:
        if t < shift:
            return 0.0
        return 1.0 if shape == 0 else float(stats.gamma.cdf(t - shift, shape, scale=scale))

    if group.existing or model.arrivals.kind == "batch":
        return cdf(horizon)
    # Arrival uniform on [0, H]: average the finish probability over the time left.
    area, _ = integrate.quad(cdf, 0.0, horizon, points=[shift] if 0 < shift < horizon else None, limit=200)
    return float(area / horizon)


def moments(model: Model) -> Moments:
    check(model)
    n_stages = len(model.stages)
    first = [stage.conversion.mean for stage in model.stages]
    second = [stage.conversion.second_moment for stage in model.stages]

    def product_moment(a: int, b: int) -> float:
        """E[P_a · P_b] with P_s the product of conversions from stage s: shared stages appear squared."""
        low, high = min(a, b), max(a, b)
        return math.prod(first[low:high]) * math.prod(second[high:n_stages])

    found = groups(model)
    leads: list[float] = []
    for group in found:
        if not group.existing:
            if model.arrivals.kind == "batch":
                leads.append(float(model.arrivals.count))
            else:
                leads.append(model.arrivals.rate_per_day * model.horizon_days)
    leads += [float(cohort.count) for cohort in model.open_leads]
    poisson = [not g.existing and model.arrivals.kind == "poisson" for g in found]
    scale = [n * _finish_probability(model, g) for n, g in zip(leads, found, strict=True)]  # a_g = n·q
    deal_mean = [g.value if g.value is not None else model.deal_size.mean for g in found]
    deal_var = [0.0 if g.value is not None else model.deal_size.variance for g in found]
    p_mean = [math.prod(first[g.start :]) for g in found]

    wins_mean = sum(a * p for a, p in zip(scale, p_mean, strict=True))
    revenue_mean = sum(a * p * x for a, p, x in zip(scale, p_mean, deal_mean, strict=True))
    # E[Var(W_g | p)]: binomial n·(qP)(1 - qP) averaged over P; Poisson has variance = mean.
    within = []
    for g, a, n, is_poisson in zip(found, scale, leads, poisson, strict=True):
        ep, ep2 = p_mean[found.index(g)], product_moment(g.start, g.start)
        q = a / n if n else 0.0
        within.append(a * ep if is_poisson else n * (q * ep - q * q * ep2))
    # Var(E[W | p]) terms, for wins (weight a_g) and revenue (weight a_g·E[X_g]).
    cov = [
        [product_moment(g.start, h.start) - p_mean[i] * p_mean[j] for j, h in enumerate(found)]
        for i, g in enumerate(found)
    ]
    k = range(len(found))
    wins_var = sum(within) + sum(scale[i] * scale[j] * cov[i][j] for i in k for j in k)
    revenue_var = sum(within[i] * deal_mean[i] ** 2 + scale[i] * p_mean[i] * deal_var[i] for i in k) + sum(
        scale[i] * deal_mean[i] * scale[j] * deal_mean[j] * cov[i][j] for i in k for j in k
    )
    existing = sum(scale[i] * p_mean[i] * deal_mean[i] for i in k if found[i].existing)
    return Moments(
        wins_mean=wins_mean,
        wins_var=wins_var,
        revenue_mean=revenue_mean,
        revenue_var=revenue_var,
        revenue_existing_mean=existing,
        revenue_new_mean=revenue_mean - existing,
    )


def leads_needed(model: Model, goal: float, confidence: float) -> int | None:
    """Negative-binomial answer: the fewest leads n with P(Bin(n, q·P) >= ceil(goal / deal)) >= confidence.

    Exact when the deal size is fixed, conversions are fixed, there are no open leads and no capacity
    limit; ``None`` otherwise."""
    fixed_deal = isinstance(model.deal_size, Fixed) and model.deal_size.value > 0
    fixed_p = all(stage.conversion.is_fixed for stage in model.stages)
    if not fixed_deal or not fixed_p or model.open_leads or model.needs_capacity or model.segments:
        return None
    try:
        q = _finish_probability(model.with_new_leads(1), groups(model)[0])
    except EngineError:
        return None
    p = model.win_probability * q
    if p <= 0:
        return None
    assert isinstance(model.deal_size, Fixed)
    wins = math.ceil(goal / model.deal_size.value)
    # Failures before the k-th success ~ NB(k, p): leads = k + quantile.
    return wins + int(stats.nbinom.ppf(confidence, wins, p))


def naive_leads(model: Model, goal: float) -> int:
    """The reverse-funnel figure: goal ÷ mean deal ÷ product of mean conversions, no variance, no horizon."""
    per_lead = model.win_probability * model.mean_deal_size
    return math.ceil(goal / per_lead) if per_lead > 0 else 0
