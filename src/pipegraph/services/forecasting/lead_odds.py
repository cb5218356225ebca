"""Each open lead's probability of being won within a horizon, from the pipeline's calibrated model.

A lead in stage i that has spent ``age`` days there wins within ``H`` days when it converts out of
stage i and every later stage (independent Beta draws, so the expected probability is the product of
the mean conversions) and its remaining time in stage i, given the age, plus its times in the later
stages sum to at most ``H``. The time part is a Monte Carlo estimate over ``SAMPLES`` common draws
(a fixed seed, so a page of leads gets consistent, repeatable odds); the answer depends on the lead
only through its stage and age, so leads of the same stage and day share one computation.

By source and owner: when the model has segments, the lead's conversions are those of its segment —
the (source, owner) cell, else its source's owner-less cell, else the stages' own.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from pipesim import Model

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
) -> float | None:
    """P(won within ``horizon_days``) for an open lead in ``stage`` for ``age_days``, from ``source``
    and with ``owner`` (an email); None when the stage is not one the model simulates."""
    if stage not in model.stage_names:
        return None
    age = round(max(age_days, 0.0) / AGE_STEP_DAYS) * AGE_STEP_DAYS
    segment = segment_of(model, source, owner)
    return _win_probability(model, model.stage_index(stage), age, float(horizon_days), segment)


@functools.lru_cache(maxsize=4096)
def _win_probability(
    model: Model, start: int, age: float, horizon: float, segment: int | None = None
) -> float:
    stages = model.stages[start:]
    if segment is None:
        converts = math.prod(stage.conversion.mean for stage in stages)
    else:
        converts = model.segment_win_probability(model.segments[segment], start)
    if converts == 0.0:
        return 0.0
    u = np.random.default_rng(_SEED).random((len(stages), SAMPLES))
    total = stages[0].time_in_stage.remaining(u[0], age)
    for index, stage in enumerate(stages[1:], start=1):
        total = total + stage.time_in_stage.ppf(u[index])
    return converts * float(np.mean(total <= horizon))
