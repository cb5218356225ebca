"""Each open lead's probability of being won within a horizon, from the pipeline's calibrated model.

A lead in stage i that has spent ``age`` days there wins within ``H`` days when it converts out of
stage i and every later stage (independent Beta draws, so the expected probability is the product of
the mean conversions) and its remaining time in stage i, given the age, plus its times in the later
stages sum to at most ``H``. The time part is a Monte Carlo estimate over ``SAMPLES`` common draws
(a fixed seed, so a page of leads gets consistent, repeatable odds); the answer depends on the lead
only through its stage and age, so leads of the same stage and day share one computation.

By source and owner: when the model has segments, the lead's conversions are those of its segment —
the (source, owner) cell, else its source's owner-less cell, else the stages' own.

By age, where losers linger: when the calibration timed the stage's losses apart from its advances
(``loss_time``; the model's time in stage is then the time to advance), a lead still there after
``age`` days advances with probability ``p S_a(age) / (p S_a(age) + (1 − p) S_l(age))`` instead of
``p`` — the longer it has waited, the likelier it is one of the slow losers.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from pipesim import Model
from pipesim.competing import advance_odds
from pipesim.distributions import Distribution

SAMPLES = 4_000
AGE_STEP_DAYS = 0.1  # ages are rounded to this before computing: nearby ages share a result
_SEED = 20_240_101


def segment_of(model: Model, source: str | None, owner: str | None) -> int | None:
    """Index of the lead's segment in ``model.segments``, or None for the stages' own conversions."""
    cells = {(segment.source, segment.owner): index for index, segment in enumerate(model.segments)}
    for key in ((source or "", owner or ""), (source or "", None)):
        if key in cells:
            return cells[key]
    return None


def win_probability(
    model: Model,
    stage: str,
    age_days: float,
    horizon_days: float,
    source: str | None = None,
    owner: str | None = None,
    loss_time: Distribution | None = None,
) -> float | None:
    """P(won within ``horizon_days``) for an open lead in ``stage`` for ``age_days``, from ``source``
    and with ``owner`` (an email); ``loss_time``: the stage's time to a loss where the calibration timed
    it apart (:meth:`Calibration.loss_time`). None when the stage is not one the model simulates."""
    if stage not in model.stage_names:
        return None
    age = round(max(age_days, 0.0) / AGE_STEP_DAYS) * AGE_STEP_DAYS
    start, segment = model.stage_index(stage), segment_of(model, source, owner)
    advance_factor = 1.0  # on the stage's conversion, for a lead of this age
    if loss_time is not None and age > 0:
        conversion = model.stages[start].conversion if segment is None else (
            model.segments[segment].conversion(model.stages, start)
        )  # fmt: skip
        p = conversion.mean
        if p > 0:
            advancing = advance_odds(p, model.stages[start].time_in_stage, loss_time, [age])
            advance_factor = float(advancing[0]) / p
    return _win_probability(model, start, age, float(horizon_days), segment, advance_factor)


@functools.lru_cache(maxsize=4096)
def _win_probability(
    model: Model,
    start: int,
    age: float,
    horizon: float,
    segment: int | None = None,
    advance_factor: float = 1.0,
) -> float:
    stages = model.stages[start:]
    if segment is None:
        converts = math.prod(stage.conversion.mean for stage in stages)
    else:
        converts = model.segment_win_probability(model.segments[segment], start)
    converts *= advance_factor
    if converts == 0.0:
        return 0.0
    u = np.random.default_rng(_SEED).random((len(stages), SAMPLES))
    total = stages[0].time_in_stage.remaining(u[0], age)
    for index, stage in enumerate(stages[1:], start=1):
        total = total + stage.time_in_stage.ppf(u[index])
    return converts * float(np.mean(total <= horizon))
