"""Forecast quality: calibrate on history at a cut-off, forecast the next horizon, compare with what
actually happened — on synthetic truths and on the demo data.

Synthetic backtests. Each draws a true pipeline (stages, conversions, days in stage, arrivals, deal
sizes), plays out its leads from day 0 to the cut-off plus the horizon, stores the history up to the
cut-off in a fresh SQLite file, calibrates there (``as_of`` = cut-off) and asks:

- Forecast: is the realised revenue of the horizon inside the P10–P90 interval (nominal 80 %), below
  P10 or above P90? How far is the P50 from it (absolute percentage error)? The naive method beside it
  is the weighted pipeline: open value × observed win rate from its stage, plus new leads at the
  observed rate × win rate × mean deal; it ignores how long closing takes and has no interval.
- Leads needed at 90 %: the goal is the forecast's P50 with no new leads plus half of it again. The
  answer's leads are then played out by the true process (a batch at the cut-off, on top of the
  actual open leads): did they reach the goal? The naive answer is pipesim's reverse funnel.
- Each open lead's odds of winning within the horizon as ``Lead.winProbability`` serves them (the
  segmented model, by the lead's stage, age, source and owner): Brier score and a reliability table
  (mean odds against the share won, by band of odds).

Demo time-split backtests. The demo data set (``pipegraph serve --demo``) for each of ``--demo-seeds``,
history ending at a fixed day; each pipeline calibrated 90 days before it, forecast over those 90 days,
compared with the value won in them; odds of the leads open at the cut-off as above.

Two models answer every question, side by side: the new one (times in stage in the family the history
shows, the time to advance timed apart from the time to loss where the history shows they differ,
uncertainty of times, deal size, arrival rate and trend in the spread, arrivals with a weekday profile
and trend where the history shows them) and the old one (exponential times, only conversion uncertainty,
a flat arrival rate).

Beside them, the truth's own model (``synthetic.truth_model``: the true parameters, every open lead as
it is) gives the coverage a perfect calibration would reach on the same draws: with a few hundred
backtests, a few points from 80 % either way is the sample's, not the model's.

Beside coverage, a components table says where a forecast runs low or high: the realised revenue over
the forecast's mean, summed over backtests, from the leads open at the cut-off and from the new ones.

    python scripts/backtest.py [--backtests 100] [--truths all] [--demo-seeds 1,2,3,4,5,6] [--workers 1]
        [--segments]

``--segments`` compares the segmented model (conversion per source and owner, partially pooled) with
the same model without segments instead.

``--truths`` picks the truths played out (comma-separated, ``all`` or ``none``): ``exponential`` is the
model's own assumption; the others each break one of them — ``weibull`` and ``lognormal`` times in stage
(same means), ``sources`` (four sources whose conversions differ), ``reps`` (reps of different
strength), ``seasonal`` (a weekday profile and a growing trend) — and ``mixed`` breaks them all at once.
Every truth replays the same drawn pipelines, so the rows differ only by the truth. ``--workers`` runs
that many processes (0: one per core); the default 1 runs everything in this process. Every backtest
has its own seed stream, so the figures are the same on any number of workers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import select

import pipesim
from pipegraph.db import migrate
from pipegraph.db.models import Lead as LeadRow
from pipegraph.db.models import LeadStatus, Pipeline, Stage, StageHistory, StageStay, User
from pipegraph.db.session import Store
from pipegraph.demo import load_demo
from pipegraph.services.forecasting.calibration import Calibration, CalibrationReport, calibrate
from pipegraph.services.forecasting.lead_odds import win_probability
from pipegraph.services.forecasting.synthetic import (
    Trajectories,
    TruePipeline,
    TrueSource,
    generate,
    play_out,
    truth_model,
    write_history,
)

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
CUT_OFF_DAYS = 240.0
HORIZON_DAYS = 90.0
CONFIDENCE = 0.9
GOAL_STRETCH = 1.5  # the leads-needed goal: P50 of the open leads alone, times this
DEMO_NOW = datetime(2025, 6, 30, 12, tzinfo=UTC)  # the demo history's last day: fixed, so runs repeat
ODDS_BANDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
MODELS = ("new", "old")


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
    """One calibrated model's answers."""

    p10: float
    p50: float
    p90: float
    leads: int | None = None  # leads needed (synthetic backtests only)
    leads_reached: bool | None = None
    odds: tuple[float, ...] = ()  # each open lead's odds of winning within the horizon
    mean_existing: float = 0.0  # forecast mean revenue from the leads open at the cut-off
    mean_new: float = 0.0  # and from the leads that arrive in the horizon


@dataclass(frozen=True)
class Outcome:
    realised: float
    naive: float
    new: Judged
    old: Judged
    won: tuple[bool, ...] = ()  # per open lead at the cut-off: won within the horizon
    naive_reached: bool | None = None
    realised_existing: float = 0.0  # of ``realised``: won by leads created by the cut-off
    truth: Judged | None = None  # the truth's own model (synthetic backtests only)


async def _calibrate_both(
    store: Store, pipeline_id: int, as_of: datetime, segments: bool = False
) -> tuple[Calibration, Calibration, Calibration]:
    """The new model and the one it is compared with: the old model, or with ``segments`` the new model
    without segments (so the rows show what segments add); and the model the new lead odds come from,
    the segmented one, as ``Lead.winProbability`` serves them."""
    async with store.read() as session:
        new = await calibrate(
            session, pipeline_id=pipeline_id, horizon_days=HORIZON_DAYS, as_of=as_of, segments=segments
        )
        if segments:
            old = await calibrate(session, pipeline_id=pipeline_id, horizon_days=HORIZON_DAYS, as_of=as_of)
            return new, old, new
        served = await calibrate(
            session, pipeline_id=pipeline_id, horizon_days=HORIZON_DAYS, as_of=as_of, segments=True
        )
        old = await calibrate(
            session,
            pipeline_id=pipeline_id,
            horizon_days=HORIZON_DAYS,
            as_of=as_of,
            time_families=False,
            parameter_uncertainty=False,
            arrival_shape=False,
        )
    return new, old, served


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


# An open lead as its odds see it: stage, days in it, source and owner's email ("" and None: none).
OpenLead = tuple[str, float, str, str | None]


def _open_leads(truth: TruePipeline, lives: Trajectories) -> tuple[list[OpenLead], tuple[bool, ...]]:
    """Each lead open at the cut-off, and whether it was won within the horizon."""
    open_now = (lives.created <= CUT_OFF_DAYS) & (lives.closed > CUT_OFF_DAYS)
    leads: list[OpenLead] = []
    won = []
    for index in np.nonzero(open_now)[0]:
        entered = lives.enter[index]
        stage = int(np.max(np.nonzero(entered <= CUT_OFF_DAYS)[0]))
        source = truth.sources[lives.source[index]].name if truth.sources else ""
        # write_history's reps, in the order it adds them (its default pipeline name).
        owner = f"rep{lives.owner[index] % truth.reps}@synthetic.example" if truth.rep_strengths else None
        leads.append((truth.stage_names[stage], CUT_OFF_DAYS - float(entered[stage]), source, owner))
        won.append(bool(lives.won[index] and lives.closed[index] <= CUT_OFF_DAYS + HORIZON_DAYS))
    return leads, tuple(won)


def _odds(calibration: Calibration, leads: list[OpenLead]) -> tuple[float, ...]:
    """Each lead's odds as ``Lead.winProbability`` computes them from the calibration."""
    model = calibration.model
    return tuple(
        win_probability(model, stage, age, HORIZON_DAYS, source, owner, calibration.loss_time(stage)) or 0.0
        for stage, age, source, owner in leads
    )


async def _one(
    index: int, seed: int, trials: int, directory: str, kind: str, segments: bool = False
) -> Outcome:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    draft = _truth(rng)
    truth = replace(draft, deal_sd=draft.deal_mean * float(rng.uniform(0.3, 1.0)))
    truth = replace(truth, **TRUTHS[kind])  # type: ignore[arg-type]
    lives = generate(truth, rng, CUT_OFF_DAYS + HORIZON_DAYS)
    store = Store.from_url(f"sqlite:///{Path(directory) / f'backtest_{kind}_{index}.sqlite3'}")
    try:
        await migrate.upgrade(store.engine)
        pipeline_id = await write_history(store, truth, lives, origin=ORIGIN, until=CUT_OFF_DAYS)
        new, old, served = await _calibrate_both(
            store, pipeline_id, ORIGIN + timedelta(days=CUT_OFF_DAYS), segments
        )
    finally:
        await store.dispose()
    realised = lives.revenue_between(CUT_OFF_DAYS, CUT_OFF_DAYS + HORIZON_DAYS)
    leads, won = _open_leads(truth, lives)

    # Leads needed: the open leads' actual future plus a batch of new leads played out by the truth.
    # One goal for both models, set from the old one.
    existing = old.model.with_new_leads(0)
    goal = GOAL_STRETCH * pipesim.forecast(existing, trials, seed + index).revenue.p50 + truth.deal_mean
    open_before = lives.created <= CUT_OFF_DAYS
    won_later = lives.won & open_before & (lives.closed > CUT_OFF_DAYS)
    won_later &= lives.closed <= CUT_OFF_DAYS + HORIZON_DAYS
    from_open = float(lives.value[won_later].sum())
    batch_seed = int(rng.integers(2**63))

    def judge(model: pipesim.Model, odds_from: Calibration) -> tuple[Judged, int]:
        forecast = pipesim.forecast(model, trials, seed + index)
        answer = pipesim.leads_needed(model.with_new_leads(0), goal, CONFIDENCE, trials, seed + index)
        # The same true play-out for both models: their answers are compared on equal terms.
        batch = _batch_revenue(truth, np.random.default_rng(batch_seed), answer.leads)
        revenue = forecast.revenue
        judged = Judged(
            revenue.p10,
            revenue.p50,
            revenue.p90,
            answer.leads,
            from_open + batch >= goal,
            _odds(odds_from, leads),
            forecast.revenue_existing.mean,
            forecast.revenue_new.mean,
        )
        return judged, answer.naive

    judged_new, _ = judge(new.model, served)
    judged_old, naive_leads = judge(old.model, old)
    naive_batch = _batch_revenue(truth, np.random.default_rng(batch_seed), naive_leads)
    own_model = truth_model(truth, lives, CUT_OFF_DAYS, HORIZON_DAYS)
    own = pipesim.forecast(own_model, trials, seed + index).revenue
    return Outcome(
        realised=realised,
        naive=_naive_forecast(old.report, old.model),
        new=judged_new,
        old=judged_old,
        won=won,
        naive_reached=from_open + naive_batch >= goal,
        realised_existing=from_open,
        truth=Judged(own.p10, own.p50, own.p90),
    )


def run_one(index: int, seed: int, trials: int, directory: str, kind: str, segments: bool = False) -> Outcome:
    return asyncio.run(_one(index, seed, trials, directory, kind, segments))


# --- the demo data, split in time -----------------------------------------------------------------------


async def _demo(demo_seed: int, trials: int, directory: str, segments: bool = False) -> list[Outcome]:
    store = Store.from_url(f"sqlite:///{Path(directory) / f'demo_{demo_seed}.sqlite3'}")
    as_of = DEMO_NOW - timedelta(days=HORIZON_DAYS)
    outcomes = []
    try:
        await migrate.upgrade(store.engine)
        await load_demo(store, seed=demo_seed, now=DEMO_NOW)
        async with store.read() as session:
            pipelines = list((await session.scalars(select(Pipeline.id).order_by(Pipeline.id))).all())
        for pipeline_id in pipelines:
            new, old, served = await _calibrate_both(store, pipeline_id, as_of, segments)
            async with store.read() as session:
                realised = await _demo_won_value(session, pipeline_id, as_of)
                existing = await _demo_won_value(session, pipeline_id, as_of, created_by=as_of)
                leads, won = await _demo_open_leads(session, pipeline_id, as_of)

            outcomes.append(
                Outcome(
                    realised=realised,
                    naive=_naive_forecast(old.report, old.model),
                    new=_demo_judged(new.model, trials, demo_seed, leads, served),
                    old=_demo_judged(old.model, trials, demo_seed, leads, old),
                    won=won,
                    realised_existing=existing,
                )
            )
    finally:
        await store.dispose()
    return outcomes


def _demo_judged(
    model: pipesim.Model, trials: int, seed: int, leads: list[OpenLead], odds_from: Calibration
) -> Judged:
    forecast = pipesim.forecast(model, trials, seed)
    revenue = forecast.revenue
    return Judged(
        revenue.p10,
        revenue.p50,
        revenue.p90,
        odds=_odds(odds_from, leads),
        mean_existing=forecast.revenue_existing.mean,
        mean_new=forecast.revenue_new.mean,
    )


async def _demo_won_value(
    session: Any, pipeline_id: int, as_of: datetime, created_by: datetime | None = None
) -> float:
    """Value won in the horizon after ``as_of`` (by leads created by ``created_by``, when given)."""
    h = StageHistory
    statement = (
        select(LeadRow.value_cents)
        .select_from(h)
        .join(LeadRow, LeadRow.id == h.lead_id)
        .where(
            h.pipeline_id == pipeline_id,
            h.to_status == LeadStatus.WON,
            h.from_status != LeadStatus.WON,
            h.changed_at > as_of,
            h.changed_at <= as_of + timedelta(days=HORIZON_DAYS),
        )
    )
    if created_by is not None:
        statement = statement.where(LeadRow.created_at <= created_by)
    return sum(int(value or 0) for value in (await session.scalars(statement))) / 100


async def _demo_open_leads(
    session: Any, pipeline_id: int, as_of: datetime
) -> tuple[list[OpenLead], tuple[bool, ...]]:
    """Each lead open at ``as_of`` (its source and owner as they are now) and whether it was won within
    the horizon."""
    end = as_of + timedelta(days=HORIZON_DAYS)
    stays = (
        await session.execute(
            select(StageStay.lead_id, Stage.name, StageStay.entered_at, LeadRow.source, User.email)
            .join(Stage, Stage.id == StageStay.stage_id)
            .join(LeadRow, LeadRow.id == StageStay.lead_id)
            .outerjoin(User, User.id == LeadRow.owner_id)
            .where(
                StageStay.pipeline_id == pipeline_id,
                StageStay.status == LeadStatus.OPEN,
                StageStay.entered_at <= as_of,
                (StageStay.left_at.is_(None)) | (StageStay.left_at > as_of),
            )
        )
    ).all()
    winners = set(
        (
            await session.scalars(
                select(StageHistory.lead_id).where(
                    StageHistory.pipeline_id == pipeline_id,
                    StageHistory.to_status == LeadStatus.WON,
                    StageHistory.changed_at > as_of,
                    StageHistory.changed_at <= end,
                )
            )
        ).all()
    )
    leads: list[OpenLead] = [
        (row.name, (as_of - row.entered_at).total_seconds() / 86_400, row.source or "", row.email)
        for row in stays
    ]
    return leads, tuple(row.lead_id in winners for row in stays)


def run_demo(demo_seed: int, trials: int, directory: str, segments: bool = False) -> list[Outcome]:
    return asyncio.run(_demo(demo_seed, trials, directory, segments))


# --- figures ----------------------------------------------------------------------------------------------


def _share(hits: np.ndarray) -> str:
    p, n = float(np.mean(hits)), len(hits)
    return f"{p:.1%} ± {math.sqrt(p * (1 - p) / n):.1%}"


def _judged(outcomes: list[Outcome], which: str) -> dict[str, str]:
    judged = [getattr(o, which) for o in outcomes]
    realised = np.array([o.realised for o in outcomes])
    inside = np.array([j.p10 <= o.realised <= j.p90 for j, o in zip(judged, outcomes, strict=True)])
    below = np.array([o.realised < j.p10 for j, o in zip(judged, outcomes, strict=True)])
    ape = np.abs(np.array([j.p50 for j in judged]) - realised) / np.maximum(realised, 1.0)
    cells = {
        "coverage": _share(inside),
        "tails": f"{np.mean(below):.1%} / {np.mean(~inside & ~below):.1%}",
        "mape": f"{np.mean(ape):.1%}",
        "brier": _brier(outcomes, which),
    }
    if judged and judged[0].leads_reached is not None:
        cells["reached"] = _share(np.array([j.leads_reached for j in judged]))
    return cells


def _pairs(outcomes: Iterable[Outcome], which: str) -> tuple[np.ndarray, np.ndarray]:
    odds = [p for o in outcomes for p in getattr(o, which).odds]
    won = [w for o in outcomes for w in o.won]
    return np.array(odds, dtype=np.float64), np.array(won, dtype=np.float64)


def _brier(outcomes: list[Outcome], which: str) -> str:
    odds, won = _pairs(outcomes, which)
    if not len(odds):
        return "–"
    return f"{np.mean((odds - won) ** 2):.4f}"


def _row(kind: str, outcomes: list[Outcome]) -> str:
    realised = np.array([o.realised for o in outcomes])
    naive_ape = np.abs(np.array([o.naive for o in outcomes]) - realised) / np.maximum(realised, 1.0)
    new, old = _judged(outcomes, "new"), _judged(outcomes, "old")
    cells = [f"{new[key]} · {old[key]}" if key in new else "–" for key in ("coverage", "tails", "mape")]
    reached = f"{new['reached']} · {old['reached']}" if "reached" in new else "–"
    own = "–"
    if all(o.truth is not None for o in outcomes):
        judged = _judged(outcomes, "truth")
        own = f"{judged['coverage']} ({judged['tails']})"
    naive_reached = [o.naive_reached for o in outcomes if o.naive_reached is not None]
    return (
        f"| {kind} | {len(outcomes)} | {cells[0]} | {cells[1]} | {own} | {cells[2]} "
        f"| {np.mean(naive_ape):.1%} "
        f"| {reached} | {_share(np.array(naive_reached)) if naive_reached else '–'} "
        f"| {new['brier']} · {old['brier']} |"
    )


def _components(kind: str, outcomes: list[Outcome]) -> str:
    """Realised revenue over the forecast mean, summed over backtests, from the leads open at the cut-off
    and from new ones: below 1 the forecast runs high, above 1 low."""
    realised = np.array([o.realised for o in outcomes])
    existing = np.array([o.realised_existing for o in outcomes])
    cells = []
    for part, actual in (("mean_existing", existing), ("mean_new", realised - existing)):
        ratios = []
        for which in MODELS:
            forecast = np.array([getattr(getattr(o, which), part) for o in outcomes])
            ratios.append(f"{actual.sum() / forecast.sum():.3f}" if forecast.sum() > 0 else "–")
        cells.append(" · ".join(ratios))
    return f"| {kind} | {len(outcomes)} | {cells[0]} | {cells[1]} |"


def _reliability(title: str, outcomes: list[Outcome]) -> list[str]:
    lines = [
        f"Reliability of the odds, {title}: per band of odds, leads, mean odds and share won (new · old).",
        "",
        "| odds band | leads (new · old) | mean odds (new · old) | share won (new · old) |",
        "|---|---|---|---|",
    ]
    columns = {which: _pairs(outcomes, which) for which in MODELS}
    for low, high in itertools.pairwise(ODDS_BANDS):
        cells: dict[str, tuple[str, str, str]] = {}
        for which, (odds, won) in columns.items():
            band = (odds >= low) & ((odds < high) if high < 1 else (odds <= high))
            n = int(band.sum())
            if n:
                share = float(won[band].mean())
                se = math.sqrt(share * (1 - share) / n)
                cells[which] = (str(n), f"{odds[band].mean():.3f}", f"{share:.3f} ± {se:.3f}")
            else:
                cells[which] = ("0", "–", "–")
        lines.append(
            f"| {low:.2f}–{high:.2f} | "
            + " | ".join(f"{cells['new'][i]} · {cells['old'][i]}" for i in range(3))
            + " |"
        )
    return lines


T = TypeVar("T")


class _InProcess(Executor):
    """Runs each call at once, in this process: the default, so a run takes one core unless asked."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _executor(workers: int) -> Executor:
    count = os.cpu_count() or 1 if workers == 0 else workers
    return _InProcess() if count == 1 else ProcessPoolExecutor(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backtests", type=int, default=100, help="backtests per truth (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="master seed (default 1)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes; 0 = one per core (default 1: this process only)"
    )
    parser.add_argument(
        "--trials", type=int, default=1000, help="Monte Carlo trials per question (default 1000)"
    )
    parser.add_argument(
        "--truths",
        default="all",
        help=f"comma-separated truths, 'all' or 'none' (default all); of {', '.join(TRUTHS)}",
    )
    parser.add_argument(
        "--demo-seeds",
        default="1,2,3,4,5,6",
        help="demo data seeds for the time-split backtest, comma-separated; '' for none (default 1–6)",
    )
    parser.add_argument(
        "--segments",
        action="store_true",
        help="compare the segmented model (conversion by source and owner) with the model without segments",
    )
    args = parser.parse_args()
    if args.truths == "all":
        kinds = list(TRUTHS)
    elif args.truths == "none":
        kinds = []
    else:
        kinds = [kind.strip() for kind in args.truths.split(",")]
    unknown = [kind for kind in kinds if kind not in TRUTHS]
    if unknown:
        parser.error(f"--truths: unknown {', '.join(unknown)}; choose from {', '.join(TRUTHS)}, all or none")
    try:
        demo_seeds = [int(seed) for seed in args.demo_seeds.split(",") if seed.strip()]
    except ValueError:
        parser.error(f"--demo-seeds: comma-separated whole numbers, got {args.demo_seeds!r}")
    if args.workers < 0:
        parser.error(f"--workers: 0 or more, got {args.workers}")

    started = time.perf_counter()
    results: dict[str, list[Outcome]] = {}
    with tempfile.TemporaryDirectory() as directory, _executor(args.workers) as pool:
        demo_futures = [
            pool.submit(run_demo, seed, args.trials, directory, args.segments) for seed in demo_seeds
        ]
        futures = {
            kind: [
                pool.submit(run_one, index, args.seed, args.trials, directory, kind, args.segments)
                for index in range(args.backtests)
            ]
            for kind in kinds
        }
        for kind, pending in futures.items():
            results[kind] = [future.result() for future in pending]
        demo = [outcome for future in demo_futures for outcome in future.result()]
    elapsed = time.perf_counter() - started

    print(
        f"{args.backtests} backtests per truth, seed {args.seed}, demo seeds {args.demo_seeds or 'none'}, "
        f"{args.trials} trials, {args.workers} workers: {elapsed:.0f} s"
    )
    print(f"synthetic: cut-off after {CUT_OFF_DAYS:g} days of history; horizon {HORIZON_DAYS:g} days")
    print()
    if args.segments:
        print("Each cell: the segmented model · the same model without segments.")
    else:
        print("Each cell: the new model · the old model.")
    print()
    print(
        "| truth | backtests | P10–P90 contains realised (nominal 80%) | below P10 / above P90 "
        "| the truth's own model: contains (below / above) | MAPE of P50 | MAPE weighted pipeline "
        "| leads needed at 90%: goal reached | reverse funnel: reached | Brier of lead odds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, outcomes in results.items():
        print(_row(kind, outcomes))
    if demo:
        print(_row("demo, time split", demo))
    print()
    print("Realised revenue ÷ the forecast's mean, summed over backtests (new · old): above 1 runs low.")
    print()
    print("| truth | backtests | leads open at the cut-off | new leads |")
    print("|---|---|---|---|")
    for kind, outcomes in results.items():
        print(_components(kind, outcomes))
    if demo:
        print(_components("demo, time split", demo))
    synthetic = [outcome for outcomes in results.values() for outcome in outcomes]
    for title, outcomes in (("synthetic truths", synthetic), ("demo, time split", demo)):
        if outcomes:
            print()
            print("\n".join(_reliability(title, outcomes)))


if __name__ == "__main__":
    main()
