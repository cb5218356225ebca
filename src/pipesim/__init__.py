"""pipesim: Monte Carlo lead-flow simulation — leads needed, forecast range, capacity what-if.

    >>> from pipesim import load_model, forecast
    >>> result = forecast(load_model("examples/saas_inbound.toml"), trials=10_000, seed=1)

P10 is the 10th percentile, a pessimistic outcome; P90 an optimistic one.
"""

from __future__ import annotations

from pipesim.distributions import (
    BetaProbability,
    Empirical,
    Exponential,
    Fixed,
    FixedProbability,
    Gamma,
    LogNormal,
    Triangular,
    Weibull,
)
from pipesim.errors import EngineError, MissingExtraError, ModelError, PipesimError, QuestionError
from pipesim.questions import capacity, compare, forecast, leads_needed, sensitivity, simulate
from pipesim.results import (
    CapacityPlan,
    Comparison,
    Estimate,
    FlowReport,
    Forecast,
    LeadsNeeded,
    Sensitivity,
    Summary,
)
from pipesim.spec import (
    Arrivals,
    Measurement,
    Model,
    OpenLeads,
    Person,
    Reps,
    Segment,
    Stage,
    from_mapping,
    from_toml,
    load_model,
)

__all__ = [
    "Arrivals",
    "BetaProbability",
    "CapacityPlan",
    "Comparison",
    "Empirical",
    "EngineError",
    "Estimate",
    "Exponential",
    "Fixed",
    "FixedProbability",
    "FlowReport",
    "Forecast",
    "Gamma",
    "LeadsNeeded",
    "LogNormal",
    "Measurement",
    "MissingExtraError",
    "Model",
    "ModelError",
    "OpenLeads",
    "Person",
    "PipesimError",
    "QuestionError",
    "Reps",
    "Segment",
    "Sensitivity",
    "Stage",
    "Summary",
    "Triangular",
    "Weibull",
    "capacity",
    "compare",
    "forecast",
    "from_mapping",
    "from_toml",
    "leads_needed",
    "load_model",
    "sensitivity",
    "simulate",
]
