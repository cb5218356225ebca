"""Simulation engine benchmark: ratios measured in the same run, plus the target timings.

    python scripts/bench_sim.py [--trials 10000] [--des-trials 100] [--capacity-only]
    python scripts/bench_sim.py --models FILE [--repeat 5]

Prints: vectorised vs SimPy-engine trials/s (target >= 1000x), the SimPy engine vs a bare SimPy model of
the same flow (target >= 0.8x), a 10,000-trial forecast of 1,000 leads (target <= 0.2 s), a leads-needed
solve at 90 % (target <= 1 s) and the speed-up of 2 worker processes over one.

Capacity rows (the README's reps model, examples/readme_team.toml): 10,000 trials on the queue engine
(target <= 2 s; wall and CPU seconds, medians of 3, since CPU time is what one free core would take) and
the same as a forecast with its per-lead waits; the queue engine vs the SimPy engine per trial in this
run (information: the issue's "300x" was 588 s for 10,000 SimPy trials when it was filed against the
2 s target); and a paired compare with one rep added at 2,000 trials — what ``whatIf`` with
``repsDelta`` runs (target <= 1 s; scripts/bench_whatif.py times it over HTTP). Load averages are
printed before and after.

``--models FILE`` times only the forecast view's simulation on calibrated models: FILE holds a pickled
list of ``Model`` s, calibrations of one pipeline a moment apart (each a little different: its leads have
aged). Per model, median wall and CPU seconds of ``--repeat`` runs of
``forecast(model, 2000, 0, goal=500,000)``: cold with nothing kept (every process-level cache emptied
first), cold after the previous model's forecast (what a server sees after a write: the parts of the
model that did not change are kept), warm (the same model again), and ``leads_needed`` after the
model's forecast (the view's second question).
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from pipesim import (
    Arrivals,
    Exponential,
    FixedProbability,
    LogNormal,
    Model,
    Person,
    Reps,
    Stage,
    compare,
    forecast,
    leads_needed,
    simulate,
)
from pipesim.engines import cohort_scales, cohorts, common, kept, vectorized
from pipesim.spec import load_model

CONVERSIONS = (0.5, 0.6, 0.5, 0.4, 0.5)
MODEL = Model(
    stages=tuple(
        Stage(f"stage {i}", FixedProbability(p), Exponential(6.0)) for i, p in enumerate(CONVERSIONS)
    ),
    deal_size=LogNormal(25_000, 10_000),
    arrivals=Arrivals.batch(1000),
    horizon_days=90,
)


def best_of(repeats: int, action: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def bare_simpy(trials: int, seed: int) -> float:
    """The same flow written plainly: one process per lead drawing its own times, no capacity."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(trials):
        env = simpy.Environment()
        revenue = [0.0]

        def lead(env: simpy.Environment, revenue: list[float] = revenue) -> Any:
            for p in CONVERSIONS:
                yield env.timeout(rng.exponential(6.0))
                if rng.random() >= p:
                    return
            if env.now <= 90:
                revenue[0] += MODEL.deal_size.ppf(rng.random(1))[0]

        for _ in range(1000):
            env.process(lead(env))
        env.run(until=90)
        total += revenue[0]
    return total


README_MODEL = Path(__file__).resolve().parents[1] / "examples" / "readme_team.toml"


def cpu_and_wall(action: Callable[[], Any]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    action()
    return time.process_time() - cpu, time.perf_counter() - wall


def median_cpu_and_wall(repeats: int, action: Callable[[], Any]) -> tuple[float, float]:
    runs = [cpu_and_wall(action) for _ in range(repeats)]
    return statistics.median(cpu for cpu, _ in runs), statistics.median(wall for _, wall in runs)


def capacity_rows(des_trials: int) -> None:
    model = load_model(README_MODEL)
    assert model.reps is not None
    simulate(model, 500, seed=0)  # warm imports and caches
    print(f"load average {', '.join(f'{value:.2f}' for value in os.getloadavg())}")
    fast_cpu, fast_wall = median_cpu_and_wall(3, lambda: simulate(model, 10_000, seed=1, engine="queue"))
    slow_cpu, slow_wall = cpu_and_wall(lambda: simulate(model, des_trials, seed=1, engine="des"))
    print(f"capacity model: {README_MODEL.name} (1,000 leads, 12 open, 120 rep slots, 90 days)")
    print(f"queue engine, 10,000 trials  {fast_wall:8.2f} s wall  {fast_cpu:8.2f} s CPU   (target <= 2 s)")
    fc_cpu, fc_wall = median_cpu_and_wall(3, lambda: forecast(model, 10_000, seed=1, thresholds=(1.0,)))
    print(f"forecast (with waits, P(wait > 1 d)) {fc_wall:5.2f} s wall  {fc_cpu:8.2f} s CPU")
    print(f"SimPy engine, {des_trials} trials  {slow_wall:11.2f} s wall  {slow_cpu:8.2f} s CPU")
    per_fast, per_slow = fast_cpu / 10_000, slow_cpu / des_trials
    # The goal is the 2 s above: 10,000 trials took 588 s on the SimPy engine when the goal was set, so
    # "300x" meant 588 s -> 2 s. This ratio is measured in this run, for information.
    print(f"ratio queue / SimPy per trial, CPU, this run {per_slow / per_fast:8,.0f}x   (information)")
    more = replace(model, reps=Reps(model.reps.count + 1, model.reps.leads_each))
    compare(model, more, 500, seed=0)
    cpu, wall = median_cpu_and_wall(3, lambda: compare(model, more, 2000, seed=2))
    print(f"compare +1 rep, 2,000 trials (whatIf)  {wall:8.3f} s wall  {cpu:8.3f} s CPU   (target <= 1 s)")
    # Reps as people: one rep leaves on day 45, a hire starts on day 10 ramping over 30 days. The queue
    # engine then runs the recursion with per-slot opening and closing times.
    people = replace(
        model,
        reps=Reps(2, 40, (Person("leaver", leave_day=45.0), Person("hire", start_day=10.0, ramp_days=30.0))),
    )
    fast_cpu, _ = cpu_and_wall(lambda: simulate(people, 2_000, seed=1, engine="queue"))
    slow_cpu, _ = cpu_and_wall(lambda: simulate(people, des_trials, seed=1, engine="des"))
    print(
        f"with people, queue 2,000 trials {fast_cpu:8.2f} s CPU; SimPy {des_trials} trials {slow_cpu:.2f} s"
    )
    print(f"ratio queue / SimPy per trial, people (CPU) {slow_cpu / des_trials / (fast_cpu / 2_000):6,.0f}x")
    print(f"load average {', '.join(f'{value:.2f}' for value in os.getloadavg())}")


def forget_kept() -> None:
    """Empties every process-level cache of the cohort path: the next question runs cold."""
    for module in (cohorts, cohort_scales, vectorized):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)) and not isinstance(value, type):
                value.cache_clear()
    kept.clear()
    common.clear_kept_conversions()


def median_timed(repeat: int, before: Callable[[], Any], action: Callable[[], Any]) -> str:
    """Median wall and CPU seconds of ``action``, each run after ``before``."""
    runs = []
    for _ in range(repeat):
        before()
        runs.append(cpu_and_wall(action))
    cpu, wall = statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs)
    return f"{wall:6.3f} s ({cpu:.3f} CPU)"


def calibrated_rows(path: Path, repeat: int) -> None:
    with path.open("rb") as file:
        models: list[Model] = pickle.load(file)
    print(f"load average {', '.join(f'{value:.2f}' for value in os.getloadavg())}")
    forecast(models[0], 2000, 0, goal=500_000.0)  # imports
    for index, model in enumerate(models):

        def ask(model: Model = model) -> None:
            forecast(model, 2000, 0, goal=500_000.0)

        def after_previous(previous: Model = models[index - 1]) -> None:
            forget_kept()
            forecast(previous, 2000, 0, goal=500_000.0)

        def view_second(model: Model = model) -> None:
            leads_needed(model.with_new_leads(0), 2_000_000.0, 0.9, 2000, 0)

        def no_op() -> None:
            pass

        def forecast_cold(ask: Callable[[], None] = ask) -> None:
            forget_kept()
            ask()

        cold = median_timed(repeat, forget_kept, ask)
        after = median_timed(repeat, after_previous, ask) if index > 0 else "-"
        warm = median_timed(repeat, no_op, ask)
        second = median_timed(repeat, forecast_cold, view_second)
        print(
            f"model {index}: forecast cold {cold}, after the previous {after}, warm {warm}; "
            f"leads_needed after it {second}"
        )
    print(f"load average {', '.join(f'{value:.2f}' for value in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10_000, help="vectorised trials (default 10000)")
    parser.add_argument("--des-trials", type=int, default=100, help="SimPy trials (default 100)")
    parser.add_argument("--capacity-only", action="store_true", help="only the capacity rows")
    parser.add_argument("--models", type=Path, help="pickled list of calibrated Models: only their rows")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure with --models (default 5)")
    args = parser.parse_args()
    if args.models is not None:
        calibrated_rows(args.models, args.repeat)
        return
    capacity_rows(min(args.des_trials, 30))
    if args.capacity_only:
        return

    simulate(MODEL, 1000, seed=0)  # warm imports and caches
    vec = best_of(3, lambda: simulate(MODEL, args.trials, seed=1, engine="vectorized"))
    des = best_of(1, lambda: simulate(MODEL, args.des_trials, seed=1, engine="des"))
    bare = best_of(1, lambda: bare_simpy(args.des_trials, seed=1))
    vec_rate, des_rate = args.trials / vec, args.des_trials / des
    print("model: 5 stages, 1,000 leads per trial, 90-day horizon, lognormal deals")
    print(f"vectorized engine   {vec_rate:12,.0f} trials/s")
    print(f"SimPy (des) engine  {des_rate:12,.1f} trials/s")
    print(f"bare SimPy model    {args.des_trials / bare:12,.1f} trials/s")
    print(f"ratio vectorized / des per trial        {vec_rate / des_rate:10,.0f}x   (target >= 1000x)")
    print(f"ratio des engine / bare SimPy (events/s) {bare / des:9.2f}x   (target >= 0.8x)")

    fc = best_of(3, lambda: forecast(MODEL, 10_000, seed=2))
    ln = best_of(3, lambda: leads_needed(MODEL, 500_000, 0.9, 10_000, seed=3))
    print(f"forecast, 10,000 trials x 1,000 leads  {fc:8.3f} s   (target <= 0.2 s)")
    print(f"leads-needed at 90%, 10,000 trials      {ln:8.3f} s   (target <= 1 s)")

    big = 8 * args.trials
    one = best_of(1, lambda: simulate(MODEL, big, seed=4))
    with ProcessPoolExecutor(max_workers=2) as pool:
        simulate(MODEL, 2000, seed=0, executor=pool)  # start the workers
        two = best_of(1, lambda: simulate(MODEL, big, seed=4, executor=pool))
    print(f"2 worker processes vs inline, {big:,} trials  {one / two:6.2f}x speed-up")


if __name__ == "__main__":
    main()
