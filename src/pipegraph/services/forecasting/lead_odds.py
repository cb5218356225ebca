"""Each open lead's probability of being won within a horizon, from the pipeline's calibrated model.

A lead in stage i that has spent ``age`` days there wins within ``H`` days when it converts out of
stage i and every later stage (independent Beta draws, so the expected probability is the product of
the mean conversions) and its remaining time in stage i, given the age, plus its times in the later
stages sum to at most ``H``. The time part is a Monte Carlo estimate over ``SAMPLES`` common draws
(a fixed seed, so a page of leads gets consistent, repeatable odds); the answer depends on the lead
only through its stage and age, so leads of the same stage and day share one computation.

Not yet by source or owner: every lead of a stage and age gets the same odds.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from pipesim import Model

SAMPLES = 4_000
AGE_STEP_DAYS = 0.1  # ages are rounded to this before computing: nearby ages share a result
_SEED = 20_240_101


def win_probability(model: Model, stage: str, age_days: float, horizon_days: float) -> float | None:
    """P(won within ``horizon_days``) for an open lead in ``stage`` for ``age_days``; None when the
    stage is not one the model simulates (post-sale or removed)."""
    if stage not in model.stage_names:
        return None
    age = round(max(age_days, 0.0) / AGE_STEP_DAYS) * AGE_STEP_DAYS
    return _win_probability(model, model.stage_index(stage), age, float(horizon_days))


@functools.lru_cache(maxsize=4096)
def _win_probability(model: Model, start: int, age: float, horizon: float) -> float:
    stages = model.stages[start:]
    converts = math.prod(stage.conversion.mean for stage in stages)
    if converts == 0.0:
        return 0.0
    u = np.random.default_rng(_SEED).random((len(stages), SAMPLES))
    total = stages[0].time_in_stage.remaining(u[0], age)
    for index, stage in enumerate(stages[1:], start=1):
        total = total + stage.time_in_stage.ppf(u[index])
    return converts * float(np.mean(total <= horizon))
