"""Simulation engines and the rule for choosing one: the fastest that can express the model."""

from __future__ import annotations

from collections.abc import Callable

from pipesim.engines import des, vectorized
from pipesim.engines.common import Outcomes
from pipesim.errors import EngineError
from pipesim.spec import Model

ENGINE_NAMES: tuple[str, ...] = ("auto", "vectorized", "des")

SIMULATORS: dict[str, Callable[[Model, int, int, int], Outcomes]] = {
    "vectorized": vectorized.simulate,
    "des": des.simulate,
}
BLOCK_TRIALS = {"vectorized": vectorized.BLOCK_TRIALS, "des": des.BLOCK_TRIALS}


def choose(model: Model, requested: str = "auto") -> str:
    """The Monte Carlo engine to run: ``vectorized`` unless the model has rep capacity."""
    if requested == "auto":
        return "des" if model.needs_capacity else "vectorized"
    if requested not in SIMULATORS:
        raise EngineError(f"engine must be one of {list(ENGINE_NAMES)} here, got {requested!r}")
    if requested == "vectorized":
        vectorized.check(model)
    return requested
