"""Forecast quality: calibrate on synthetic history at a cut-off, forecast the next horizon, compare with
what the generator actually produced.

Each backtest draws a true pipeline (stages, conversions, days in stage, arrivals, deal sizes), plays
out its leads from day 0 to the cut-off plus the horizon, stores the history up to the cut-off in a
fresh SQLite file, calibrates there (``as_of`` = cut-off), and asks two questions:

- Forecast: is the realised revenue of the horizon inside the P10–P90 interval (nominal 80 %)? How far
  is the P50 from it (absolute percentage error)? The naive method beside it is the weighted pipeline:
  open value × observed win rate from its stage, plus new leads at the observed rate × win rate × mean
  deal; it ignores how long closing takes and has no interval.
- Leads needed at 90 %: the goal is the forecast's P50 with no new leads plus half of it again. The
  answer's leads are then played out by the true process (a batch at the cut-off, on top of the
  actual open leads): did they reach the goal? The naive answer is pipesim's reverse funnel.

    python scripts/backtest.py [--backtests 200] [--seed 1] [--workers 2] [--trials 2000] [--truths all]
        [--segments]

``--truths`` picks the truths played out (comma-separated, or ``all``): ``exponential`` is the model's
own assumption; the others each break one of them — ``weibull`` and ``lognormal`` times in stage (same
means), ``sources`` (four sources whose conversions differ), ``reps`` (reps of different strength),
``seasonal`` (a weekday profile and a growing trend) — and ``mixed`` breaks them all at once. Every
truth replays the same drawn pipelines, so the rows differ only by the truth.

Every backtest has its own seed stream, so the figures are the same on any number of workers.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

import pipesim
from pipegraph.db import migrate
from pipegraph.db.session import Store
from pipegraph.services.calibration import CalibrationReport, calibrate
from pipegraph.services.calibration_synthetic import (
    TruePipeline,
    TrueSource,
    generate,
    play_out,
    write_history,
)

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
CUT_OFF_DAYS = 240.0
HORIZON_DAYS = 90.0
CONFIDENCE = 0.9
GOAL_STRETCH = 1.5  # the leads-needed goal: P50 of the open leads alone, times this


SOURCES = (
    TrueSource("cold outreach", 0.4, 0.6),
    TrueSource("website", 0.3, 1.0),
    TrueSource("event", 0.2, 1.25),
    TrueSource("referral", 0.1, 1.5),
)
TRUTHS: dict[str, dict[str, object]] = {
    "exponential": {},
    "weibull": {"duration": "weibull", "duration_shape": 0.7},
    "lognormal": {"duration": "lognormal", "duration_shape": 0.9},
    "sources": {"sources": SOURCES},
    "reps": {"rep_strengths": (0.5, 0.8, 1.1, 1.4)},
    "seasonal": {"weekday_profile": (1.3, 1.2, 1.1, 1.0, 0.9, 0.3, 0.2), "trend_per_year": 0.5},
}
TRUTHS["mixed"] = {key: value for changes in TRUTHS.values() for key, value in changes.items()}


@dataclass(frozen=True)
class Judged:
    """One calibrated model's answers, and whether its leads reached the goal."""

    p10: float
    p50: float
    p90: float
    leads: int
    leads_reached: bool


@dataclass(frozen=True)
class Outcome:
    realised: float
    naive: float
    goal: float
    naive_leads: int
    naive_reached: bool
    new: Judged  # times in stage in the family the history shows
    old: Judged  # exponential times in stage


def _truth(rng: np.random.Generator) -> TruePipeline:
    stages = int(rng.integers(3, 5))
    return TruePipeline(
        conversions=tuple(float(x) for x in rng.uniform(0.4, 0.85, stages)),
        mean_days=tuple(float(x) for x in rng.uniform(4.0, 20.0, stages)),
        arrivals_per_day=float(rng.uniform(2.0, 6.0)),
        deal_mean=float(rng.uniform(1_000.0, 10_000.0)),
        deal_sd=0.0,  # set below from a coefficient of variation
    )


def _naive_forecast(report: CalibrationReport, model: pipesim.Model) -> float:
    """Weighted pipeline: open value × observed win rate from the stage, plus expected new-lead value."""
    observed = [
        fit.advances / (fit.advances + fit.losses) if fit.advances + fit.losses else 0.0
        for fit in report.stages
    ]
    total = 0.0
    for cohort in model.open_leads:
        start = model.stage_index(cohort.stage)
        value = cohort.value if cohort.value is not None else report.deal_size.mean
        total += cohort.count * value * math.prod(observed[start:])
    new_leads = report.arrivals.rate_per_day * HORIZON_DAYS
    return total + new_leads * math.prod(observed) * report.deal_size.mean


def _batch_revenue(truth: TruePipeline, rng: np.random.Generator, leads: int) -> float:
    batch = play_out(truth, rng, np.full(leads, CUT_OFF_DAYS))
    return batch.revenue_between(CUT_OFF_DAYS, CUT_OFF_DAYS + HORIZON_DAYS)


async def _one(
    index: int, seed: int, trials: int, directory: str, kind: str, segments: bool = False
) -> Outcome:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    draft = _truth(rng)
    truth = TruePipeline(
        conversions=draft.conversions,
        mean_days=draft.mean_days,
        arrivals_per_day=draft.arrivals_per_day,
        deal_mean=draft.deal_mean,
        deal_sd=draft.deal_mean * float(rng.uniform(0.3, 1.0)),
    )
    truth = replace(truth, **TRUTHS[kind])  # type: ignore[arg-type]
    lives = generate(truth, rng, CUT_OFF_DAYS + HORIZON_DAYS)
    store = Store.from_url(f"sqlite:///{Path(directory) / f'backtest_{kind}_{index}.sqlite3'}")
    as_of = ORIGIN + timedelta(days=CUT_OFF_DAYS)
    try:
        await migrate.upgrade(store.engine)
        pipeline_id = await write_history(store, truth, lives, origin=ORIGIN, until=CUT_OFF_DAYS)
        async with store.read() as session:
            # With --segments: the segmented model beside the pooled one (both with fitted families).
            variants = [(True, True), (True, False)] if segments else [(True, False), (False, False)]
            new, old = [
                await calibrate(
                    session,
                    pipeline_id=pipeline_id,
                    horizon_days=HORIZON_DAYS,
                    as_of=as_of,
                    time_families=families,
                    segments=segmented,
                )
                for families, segmented in variants
            ]
    finally:
        await store.dispose()
    realised = lives.revenue_between(CUT_OFF_DAYS, CUT_OFF_DAYS + HORIZON_DAYS)

    # Leads needed: the open leads' actual future plus a batch of new leads played out by the truth.
    # One goal for both models, set from the exponential one.
    existing = old.model.with_new_leads(0)
    goal = GOAL_STRETCH * pipesim.forecast(existing, trials, seed + index).revenue.p50 + truth.deal_mean
    open_before = lives.created <= CUT_OFF_DAYS
    won_later = lives.won & open_before & (lives.closed > CUT_OFF_DAYS)
    won_later &= lives.closed <= CUT_OFF_DAYS + HORIZON_DAYS
    from_open = float(lives.value[won_later].sum())

    batch_seed = int(rng.integers(2**63))

    def judge(model: pipesim.Model) -> tuple[Judged, int]:
        forecast = pipesim.forecast(model, trials, seed + index)
        answer = pipesim.leads_needed(model.with_new_leads(0), goal, CONFIDENCE, trials, seed + index)
        # The same true play-out for both models: their answers are compared on equal terms.
        batch = _batch_revenue(truth, np.random.default_rng(batch_seed), answer.leads)
        reached = from_open + batch >= goal
        revenue = forecast.revenue
        return Judged(revenue.p10, revenue.p50, revenue.p90, answer.leads, reached), answer.naive

    judged_new, _ = judge(new.model)
    judged_old, naive_leads = judge(old.model)
    return Outcome(
        realised=realised,
        naive=_naive_forecast(old.report, old.model),
        goal=goal,
        naive_leads=naive_leads,
        naive_reached=from_open + _batch_revenue(truth, np.random.default_rng(batch_seed), naive_leads)
        >= goal,
        new=judged_new,
        old=judged_old,
    )


def run_one(index: int, seed: int, trials: int, directory: str, kind: str, segments: bool = False) -> Outcome:
    return asyncio.run(_one(index, seed, trials, directory, kind, segments))


def _share(hits: np.ndarray) -> str:
    p, n = float(np.mean(hits)), len(hits)
    return f"{p:.1%} ± {math.sqrt(p * (1 - p) / n):.1%}"


def _judged(outcomes: list[Outcome], which: str) -> tuple[str, str, str, str]:
    judged = [getattr(o, which) for o in outcomes]
    realised = np.array([o.realised for o in outcomes])
    inside = np.array([j.p10 <= o.realised <= j.p90 for j, o in zip(judged, outcomes, strict=True)])
    below = np.array([o.realised < j.p10 for j, o in zip(judged, outcomes, strict=True)])
    ape = np.abs(np.array([j.p50 for j in judged]) - realised) / realised
    reached = np.array([j.leads_reached for j in judged])
    tails = f"{np.mean(below):.1%} / {np.mean(~inside & ~below):.1%}"
    return _share(inside), tails, f"{np.mean(ape):.1%}", _share(reached)


def _row(kind: str, outcomes: list[Outcome]) -> str:
    realised = np.array([o.realised for o in outcomes])
    naive_ape = np.abs(np.array([o.naive for o in outcomes]) - realised) / realised
    naive_reached = np.array([o.naive_reached for o in outcomes])
    new, old = _judged(outcomes, "new"), _judged(outcomes, "old")
    cells = [f"{a} · {b}" for a, b in zip(new, old, strict=True)]
    return (
        f"| {kind} | {cells[0]} | {cells[1]} | {cells[2]} | {np.mean(naive_ape):.1%} "
        f"| {cells[3]} | {_share(naive_reached)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backtests", type=int, default=200, help="backtests per truth (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="master seed (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument(
        "--trials", type=int, default=2000, help="Monte Carlo trials per question (default 2000)"
    )
    parser.add_argument(
        "--truths",
        default="exponential",
        help=f"comma-separated truths, or 'all' (default exponential); one of {', '.join(TRUTHS)}",
    )
    parser.add_argument(
        "--segments",
        action="store_true",
        help="compare the model with segments (source, owner) against the pooled one, instead of "
        "fitted families against the exponential model",
    )
    args = parser.parse_args()
    kinds = list(TRUTHS) if args.truths == "all" else [kind.strip() for kind in args.truths.split(",")]
    unknown = [kind for kind in kinds if kind not in TRUTHS]
    if unknown:
        parser.error(f"--truths: unknown {', '.join(unknown)}; choose from {', '.join(TRUTHS)} or all")

    started = time.perf_counter()
    results: dict[str, list[Outcome]] = {}
    with tempfile.TemporaryDirectory() as directory, ProcessPoolExecutor(args.workers) as pool:
        futures = {
            kind: [
                pool.submit(run_one, index, args.seed, args.trials, directory, kind, args.segments)
                for index in range(args.backtests)
            ]
            for kind in kinds
        }
        for kind, pending in futures.items():
            results[kind] = [future.result() for future in pending]
    elapsed = time.perf_counter() - started

    print(
        f"{args.backtests} backtests per truth, seed {args.seed}, {args.trials} trials, "
        f"{args.workers} workers: {elapsed:.0f} s"
    )
    print(f"cut-off after {CUT_OFF_DAYS:g} days of history, horizon {HORIZON_DAYS:g} days")
    print()
    if args.segments:
        print("Each cell: the model with segments (source, owner) · the pooled model (both fitted families).")
    else:
        print("Each cell: the model with fitted families of times in stage · the exponential model.")
    print()
    print(
        "| truth | P10–P90 contains realised (nominal 80%) | below P10 / above P90 | MAPE of P50 "
        "| MAPE weighted pipeline | leads needed at 90%: goal reached | reverse funnel: reached |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, outcomes in results.items():
        print(_row(kind, outcomes))


if __name__ == "__main__":
    main()
