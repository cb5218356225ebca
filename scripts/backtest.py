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

    python scripts/backtest.py [--backtests 200] [--seed 1] [--workers 2] [--trials 2000]

Every backtest has its own seed stream, so the figures are the same on any number of workers.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

import pipesim
from pipegraph.db import migrate
from pipegraph.db.session import Store
from pipegraph.services.calibration import CalibrationReport, calibrate
from pipegraph.services.calibration_synthetic import TruePipeline, generate, play_out, write_history

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
CUT_OFF_DAYS = 240.0
HORIZON_DAYS = 90.0
CONFIDENCE = 0.9
GOAL_STRETCH = 1.5  # the leads-needed goal: P50 of the open leads alone, times this


@dataclass(frozen=True)
class Outcome:
    realised: float
    p10: float
    p50: float
    p90: float
    naive: float
    goal: float
    leads: int
    leads_reached: bool
    naive_leads: int
    naive_reached: bool


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


async def _one(index: int, seed: int, trials: int, directory: str) -> Outcome:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    draft = _truth(rng)
    truth = TruePipeline(
        conversions=draft.conversions,
        mean_days=draft.mean_days,
        arrivals_per_day=draft.arrivals_per_day,
        deal_mean=draft.deal_mean,
        deal_sd=draft.deal_mean * float(rng.uniform(0.3, 1.0)),
    )
    lives = generate(truth, rng, CUT_OFF_DAYS + HORIZON_DAYS)
    store = Store.from_url(f"sqlite:///{Path(directory) / f'backtest_{index}.sqlite3'}")
    try:
        await migrate.upgrade(store.engine)
        pipeline_id = await write_history(store, truth, lives, origin=ORIGIN, until=CUT_OFF_DAYS)
        async with store.read() as session:
            calibration = await calibrate(
                session,
                pipeline_id=pipeline_id,
                horizon_days=HORIZON_DAYS,
                as_of=ORIGIN + timedelta(days=CUT_OFF_DAYS),
            )
    finally:
        await store.dispose()
    model, report = calibration.model, calibration.report
    forecast = pipesim.forecast(model, trials, seed + index)
    realised = lives.revenue_between(CUT_OFF_DAYS, CUT_OFF_DAYS + HORIZON_DAYS)

    # Leads needed: the open leads' actual future plus a batch of new leads played out by the truth.
    existing = model.with_new_leads(0)
    goal = GOAL_STRETCH * pipesim.forecast(existing, trials, seed + index).revenue.p50 + truth.deal_mean
    answer = pipesim.leads_needed(existing, goal, CONFIDENCE, trials, seed + index)
    open_before = lives.created <= CUT_OFF_DAYS
    won_later = lives.won & open_before & (lives.closed > CUT_OFF_DAYS)
    won_later &= lives.closed <= CUT_OFF_DAYS + HORIZON_DAYS
    from_open = float(lives.value[won_later].sum())
    reached = from_open + _batch_revenue(truth, rng, answer.leads) >= goal
    naive_reached = from_open + _batch_revenue(truth, rng, answer.naive) >= goal
    return Outcome(
        realised=realised,
        p10=forecast.revenue.p10,
        p50=forecast.revenue.p50,
        p90=forecast.revenue.p90,
        naive=_naive_forecast(report, model),
        goal=goal,
        leads=answer.leads,
        leads_reached=reached,
        naive_leads=answer.naive,
        naive_reached=naive_reached,
    )


def run_one(index: int, seed: int, trials: int, directory: str) -> Outcome:
    return asyncio.run(_one(index, seed, trials, directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backtests", type=int, default=200, help="number of backtests (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="master seed (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument(
        "--trials", type=int, default=2000, help="Monte Carlo trials per question (default 2000)"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory, ProcessPoolExecutor(args.workers) as pool:
        futures = [
            pool.submit(run_one, index, args.seed, args.trials, directory) for index in range(args.backtests)
        ]
        outcomes = [future.result() for future in futures]
    elapsed = time.perf_counter() - started

    n = len(outcomes)
    realised = np.array([o.realised for o in outcomes])
    inside = np.array([o.p10 <= o.realised <= o.p90 for o in outcomes])
    below = np.array([o.realised < o.p10 for o in outcomes])
    ape = np.abs(np.array([o.p50 for o in outcomes]) - realised) / realised
    naive_ape = np.abs(np.array([o.naive for o in outcomes]) - realised) / realised
    reached = np.array([o.leads_reached for o in outcomes])
    naive_reached = np.array([o.naive_reached for o in outcomes])
    leads = np.array([o.leads for o in outcomes])
    naive_leads = np.array([o.naive_leads for o in outcomes])

    def share(hits: np.ndarray) -> str:
        p = float(np.mean(hits))
        return f"{p:.1%} ± {math.sqrt(p * (1 - p) / n):.1%}"

    print(f"{n} backtests, seed {args.seed}, {args.trials} trials, {args.workers} workers: {elapsed:.0f} s")
    print(f"cut-off after {CUT_OFF_DAYS:g} days of history, horizon {HORIZON_DAYS:g} days")
    print()
    print("| | calibrated simulation | naive (weighted pipeline / reverse funnel) |")
    print("|---|---|---|")
    print(f"| P10–P90 contains realised revenue (nominal 80%) | {share(inside)} | no interval |")
    print(f"| realised below P10 / above P90 | {np.mean(below):.1%} / {np.mean(~inside & ~below):.1%} | |")
    print(
        f"| MAPE of the point forecast (P50; naive: its figure) | {np.mean(ape):.1%} "
        f"| {np.mean(naive_ape):.1%} |"
    )
    print(f"| median APE | {np.median(ape):.1%} | {np.median(naive_ape):.1%} |")
    print(f"| leads needed at 90%: goal reached | {share(reached)} | {share(naive_reached)} |")
    print(f"| leads asked for, median | {np.median(leads):.0f} | {np.median(naive_leads):.0f} |")


if __name__ == "__main__":
    main()
