"""Simulation engines and the rule for choosing one: the fastest that can express the model.

- ``vectorized``: no rep capacity; binomial wins per trial, ``O(winners)``.
- ``queue``: rep capacity without stage work; the FIFO multi-server recursion over all trials at once.
- ``des``: SimPy, the reference; expresses everything, one event loop per trial.
"""

from __future__ import annotations

from typing import Protocol

from pipesim.engines import des, queue, vectorized
from pipesim.engines.common import Outcomes
from pipesim.errors import EngineError
from pipesim.spec import Model

ENGINE_NAMES: tuple[str, ...] = ("auto", "vectorized", "queue", "des")


class Simulator(Protocol):
    """One block of trials. ``detail=False`` may skip per-lead measurements and revenue by week (a
    paired compare reads revenue and wins only); every other outcome stays the same."""

    def __call__(
        self, model: Model, seed: int, block: int, trials: int, *, detail: bool = True
    ) -> Outcomes: ...


SIMULATORS: dict[str, Simulator] = {
    "vectorized": vectorized.simulate,
    "queue": queue.simulate,
    "des": des.simulate,
}
BLOCK_TRIALS = {
    "vectorized": vectorized.BLOCK_TRIALS,
    "queue": queue.BLOCK_TRIALS,
    "des": des.BLOCK_TRIALS,
}


def explain(model: Model, requested: str = "auto") -> tuple[str, str]:
    """The Monte Carlo engine to run and why it was picked."""
    if requested == "auto":
        if not model.needs_capacity:
            return "vectorized", "no [reps]: no queues, so the binomial fast path is exact"
        why = queue.reason(model)
        if why is None:
            return "queue", "[reps] without stage work: a FIFO queue for rep slots, all trials at once"
        return "des", why.replace(" — use engine 'des'", "")
    if requested not in SIMULATORS:
        raise EngineError(f"engine must be one of {list(ENGINE_NAMES)} here, got {requested!r}")
    if requested == "vectorized":
        vectorized.check(model)
    if requested == "queue":
        queue.check(model)
    return requested, "requested"


def choose(model: Model, requested: str = "auto") -> str:
    """The Monte Carlo engine to run: ``vectorized`` without rep capacity, ``queue`` where the queue
    recursion expresses the model, else ``des``."""
    return explain(model, requested)[0]
