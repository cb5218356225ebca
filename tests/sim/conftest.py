"""Models shared by the pipesim tests; none of them needs a database."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipesim import Arrivals, Exponential, Fixed, FixedProbability, Model, Stage

ISSUE_CONVERSIONS = (0.5, 0.6, 0.5, 0.4, 0.5)  # product 0.03


def funnel(deal_size: object = None, horizon_days: float = 1e9, leads: int = 1000) -> Model:
    """The issue's five-stage funnel; a huge horizon means every eventual win counts."""
    return Model(
        stages=tuple(
            Stage(f"stage {i}", FixedProbability(p), Exponential(5.0))
            for i, p in enumerate(ISSUE_CONVERSIONS)
        ),
        deal_size=deal_size if deal_size is not None else Fixed(25_000.0),  # type: ignore[arg-type]
        arrivals=Arrivals.batch(leads),
        horizon_days=horizon_days,
    )


@pytest.fixture
def issue_funnel() -> Model:
    return funnel()


@pytest.fixture
def make_funnel() -> Callable[..., Model]:
    return funnel
