"""Partial pooling of conversion rates across segments (sources, reps): empirical Bayes, Beta-binomial.

A rep with 5 leads and no win is not a 0 % rep, and one with 2 wins out of 2 is not a 100 % rep. Each
segment's rate is drawn from a common Beta(a, b); the segments' wins and losses then follow a
Beta-binomial, whose marginal likelihood ``Σ log B(a + wins, b + losses) − log B(a, b)`` gives (a, b).
Each segment's rate is then its exact posterior ``Beta(a + wins, b + losses)``: a segment with little
history sits near the pool's mean ``a / (a + b)``, one with much history near its own rate, and the
pool's concentration ``a + b`` — how alike the segments are — decides how far "little" reaches.

When the segments look alike (no more spread than chance gives), the likelihood keeps rising with the
concentration; it is capped at ``MAX_CONCENTRATION``, which pools almost completely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from pipesim.distributions import Array, BetaProbability

MAX_CONCENTRATION = 10_000.0  # a + b: the prior weighs as much as this many leads at most
PRIOR = BetaProbability(1.0, 1.0)  # no decided leads at all: uniform


@dataclass(frozen=True)
class PooledRates:
    """The pool's prior and each segment's posterior rate."""

    prior: BetaProbability
    segments: dict[str, BetaProbability]
    counts: dict[str, tuple[int, int]]  # (wins, losses) behind each segment

    def rate(self, segment: str) -> BetaProbability:
        """A segment's rate; a segment with no history gets the pool's."""
        return self.segments.get(segment, self.prior)


def _negative_marginal(parameters: Array, wins: Array, losses: Array) -> float:
    mean = special.expit(parameters[0])
    concentration = math.exp(parameters[1])
    a, b = mean * concentration, (1 - mean) * concentration
    total = special.betaln(a + wins, b + losses) - special.betaln(a, b)
    return -float(total.sum())


def pool_rates(counts: Mapping[str, tuple[int, int]]) -> PooledRates:
    """Fit the pool's Beta(a, b) to each segment's (wins, losses) and return every segment's posterior."""
    for segment, (won, lost) in counts.items():
        if won < 0 or lost < 0:
            raise ValueError(f"segment {segment!r}: counts must be >= 0, got ({won}, {lost})")
    names = list(counts)
    wins = np.array([counts[name][0] for name in names], dtype=np.float64)
    losses = np.array([counts[name][1] for name in names], dtype=np.float64)
    decided = wins + losses
    if decided.sum() == 0:
        prior = PRIOR
    else:
        # The pooled rate (shrunk a little so it is never exactly 0 or 1) and a moderate concentration.
        pooled = (wins.sum() + 0.5) / (decided.sum() + 1.0)
        start = np.array([special.logit(pooled), math.log(10.0)])
        bounds = [(-20.0, 20.0), (math.log(1e-3), math.log(MAX_CONCENTRATION))]
        found = optimize.minimize(
            _negative_marginal, start, args=(wins, losses), method="L-BFGS-B", bounds=bounds
        )
        mean, concentration = float(special.expit(found.x[0])), math.exp(float(found.x[1]))
        prior = BetaProbability(mean * concentration, (1 - mean) * concentration)
    segments = {
        name: BetaProbability(prior.alpha + won, prior.beta + lost) for name, (won, lost) in counts.items()
    }
    return PooledRates(
        prior=prior, segments=segments, counts={k: (int(w), int(x)) for k, (w, x) in counts.items()}
    )
