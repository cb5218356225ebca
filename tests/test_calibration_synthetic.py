"""The synthetic truths that are not the model's own draw what they say they draw."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from pipegraph.services.forecasting.synthetic import TruePipeline, TrueSource, generate, play_out

BASE = TruePipeline(
    conversions=(0.5,), mean_days=(10.0,), arrivals_per_day=50.0, deal_mean=1_000.0, deal_sd=300.0
)
N = 40_000


def test_times_in_stage_keep_their_mean_in_every_family() -> None:
    for duration, shape in (("exponential", 1.0), ("weibull", 0.7), ("lognormal", 0.9)):
        truth = replace(BASE, duration=duration, duration_shape=shape)
        lives = play_out(truth, np.random.default_rng(1), np.zeros(N))
        days = lives.closed
        assert abs(days.mean() - 10.0) < 5 * days.std() / math.sqrt(N), duration
    weibull = play_out(
        replace(BASE, duration="weibull", duration_shape=0.7), np.random.default_rng(2), np.zeros(N)
    )
    # A Weibull of shape 0.7 has a coefficient of variation of 1.46 (exponential: 1).
    assert 1.35 < weibull.closed.std() / weibull.closed.mean() < 1.57


def test_sources_and_reps_change_conversion_by_their_factor() -> None:
    sources = (TrueSource("cold", 0.5, 0.6), TrueSource("referral", 0.5, 1.5))
    lives = play_out(
        replace(BASE, sources=sources, rep_strengths=(1.0, 1.2)), np.random.default_rng(3), np.zeros(N)
    )
    for index, source in enumerate(sources):
        for rep, strength in enumerate((1.0, 1.2)):
            mask = (lives.source == index) & (lives.owner == rep)
            expected = min(0.5 * source.conversion_factor * strength, 0.98)
            share = lives.won[mask].mean()
            assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / mask.sum())


def test_arrivals_follow_the_weekday_profile_and_the_trend() -> None:
    profile = (1.3, 1.2, 1.1, 1.0, 0.9, 0.3, 0.2)
    truth = replace(BASE, weekday_profile=profile, trend_per_year=1.0)
    created = generate(truth, np.random.default_rng(4), 364.0).created
    weekday = np.floor(created).astype(int) % 7
    counts = np.bincount(weekday, minlength=7)
    shares = np.array(profile) / sum(profile)
    for day in range(7):
        expected = shares[day] * len(created)
        assert abs(counts[day] - expected) < 4 * math.sqrt(expected), day
    # Rate grows linearly by 100 % a year: the second half holds (1.75 / 1.25) times the first's leads.
    first, second = np.sum(created < 182), np.sum(created >= 182)
    ratio_se = (second / first) * math.sqrt(1 / first + 1 / second)
    assert abs(second / first - (1 + 0.75) / (1 + 0.25)) < 4 * ratio_se
