"""``pipesim`` command line: forecast, leads-needed, compare, sensitivity.

Tables go to stdout (``--json`` for machine-readable output); a progress bar goes to stderr once a run
has taken more than a second. Exit status: 0 on success, 2 on bad input (invalid model, bad argument).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from pipesim import questions
from pipesim.engines import ENGINE_NAMES
from pipesim.errors import PipesimError
from pipesim.parallel import executor_for
from pipesim.results import Comparison, Forecast, LeadsNeeded, Sensitivity, Summary
from pipesim.spec import load_model


class ProgressBar:
    """Trials done out of a total, drawn on stderr only after the first second."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total, self.stream, self.width = max(total, 1), stream, width
        self.done = 0
        self.started = time.perf_counter()
        self.shown = False

    def __call__(self, trials: int) -> None:
        self.done = min(self.done + trials, self.total)
        if time.perf_counter() - self.started < 1.0:
            return
        self.shown = True
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} trials")
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipesim",
        description="Monte Carlo lead-flow simulation. P10 is the 10th percentile, a pessimistic outcome.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("model", metavar="MODEL", help="model file (.toml or .json)")
        return sub

    forecast = command("forecast", "Wins and revenue within the horizon: mean, P10/P50/P90, P(goal).")
    forecast.add_argument("--goal", type=float, help="also report P(revenue >= GOAL)")
    leads = command("leads-needed", "Fewest leads (a batch at day 0) reaching the goal with the confidence.")
    leads.add_argument("--goal", type=float, required=True, help="revenue goal within the horizon")
    leads.add_argument("--confidence", type=float, default=0.9, help="required P(goal), default 0.9")
    compare = command("compare", "Paired what-if: the same simulated leads under MODEL and VARIANT.")
    compare.add_argument("variant", metavar="VARIANT", help="variant model file (same stages)")
    compare.add_argument("--goal", type=float, help="also report the change in P(revenue >= GOAL)")
    sensitivity = command("sensitivity", "Which stage's improvement moves the outcome most (the bottleneck).")
    sensitivity.add_argument("--goal", type=float, help="rank by the change in P(revenue >= GOAL)")
    sensitivity.add_argument(
        "--improvement", type=float, default=0.1, help="relative improvement per stage, default 0.1 (10%%)"
    )
    for sub in (forecast, leads, compare, sensitivity):
        sub.add_argument("--trials", type=int, default=questions.DEFAULT_TRIALS, help="trials, default 10000")
        sub.add_argument(
            "--seed", type=int, default=0, help="random seed; same seed, same answer (default 0)"
        )
        sub.add_argument(
            "--engine", choices=ENGINE_NAMES, default="auto", help="auto picks the fastest able engine"
        )
        sub.add_argument("--workers", type=int, default=1, help="local worker processes (default 1: inline)")
        sub.add_argument(
            "--scheduler", metavar="ADDRESS", help="dask.distributed scheduler, e.g. tcp://host:8786"
        )
        sub.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        sub.add_argument("--plot", metavar="FILE.png", help="write a chart (needs the 'plot' extra)")
    return parser


def _money(value: float) -> str:
    return f"{value:,.0f}"


def _summary_rows(label: str, summary: Summary, fmt: Any = _money) -> str:
    return (
        f"{label:<18}{fmt(summary.mean):>14}{fmt(summary.sd):>14}{fmt(summary.p10):>14}"
        f"{fmt(summary.p50):>14}{fmt(summary.p90):>14}"
    )


HEADER = f"{'':<18}{'mean':>14}{'sd':>14}{'P10':>14}{'P50':>14}{'P90':>14}"


def _render_forecast(result: Forecast) -> str:
    lines = [
        f"Forecast over {result.horizon_days:g} days — {result.trials} trials, engine {result.engine}, "
        f"seed {result.seed} ({result.currency})",
        HEADER,
        _summary_rows("wins", result.wins, lambda v: f"{v:,.1f}"),
        _summary_rows("revenue", result.revenue),
        _summary_rows("  new leads", result.revenue_new),
        _summary_rows("  open leads", result.revenue_existing),
    ]
    if result.engine == "des":
        lines.append(_summary_rows("wait for rep (d)", result.wait_days, lambda v: f"{v:,.2f}"))
    lines.append(f"mean revenue ± {_money(result.revenue.se)} (Monte Carlo standard error)")
    if result.p_goal is not None and result.goal is not None:
        lines.append(
            f"P(revenue >= {_money(result.goal)}) = {result.p_goal.value:.3f} ± {result.p_goal.se:.3f}"
        )
    lines.append("P10 is the 10th percentile, a pessimistic outcome.")
    return "\n".join(lines)


def _render_leads(result: LeadsNeeded) -> str:
    interval = (
        f" (95% Monte Carlo interval {result.interval[0]}–{result.interval[1]})" if result.interval else ""
    )
    lines = [
        f"Leads needed for {_money(result.goal)} at {result.confidence:.0%} confidence — "
        f"{result.trials} trials, engine {result.engine}, seed {result.seed}",
        f"leads needed        {result.leads}{interval}",
        f"P(goal) at answer   {result.p_goal.value:.3f} ± {result.p_goal.se:.3f}",
        f"reverse funnel      {result.naive}  (goal ÷ mean deal ÷ conversions: no variance, no horizon)",
    ]
    if result.analytic is not None:
        lines.append(f"negative binomial   {result.analytic}  (exact for fixed deal sizes)")
    return "\n".join(lines)


def _render_compare(result: Comparison) -> str:
    lines = [
        f"Paired comparison — {result.trials} trials, engine {result.engine}, seed {result.seed} "
        f"({result.currency})",
        HEADER,
        _summary_rows("base revenue", result.base),
        _summary_rows("variant revenue", result.variant),
        _summary_rows("difference", result.difference),
        _summary_rows("wins difference", result.wins_difference, lambda v: f"{v:,.1f}"),
        f"mean difference ± {_money(result.difference.se)} (paired standard error); "
        f"variant better in {result.p_variant_better:.1%} of trials",
    ]
    if result.p_goal_difference is not None and result.p_goal_base and result.p_goal_variant:
        lines.append(
            f"P(goal) {result.p_goal_base.value:.3f} → {result.p_goal_variant.value:.3f} "
            f"(change {result.p_goal_difference.value:+.3f} ± {result.p_goal_difference.se:.3f})"
        )
    return "\n".join(lines)


def _render_sensitivity(result: Sensitivity) -> str:
    lines = [
        f"Sensitivity — {result.trials} trials, engine {result.engine}, seed {result.seed}",
        f"{'stage':<22}{'change':<24}{'Δ mean revenue':>18}{'Δ P(goal)':>14}",
    ]
    for lever in result.levers:
        p_goal = f"{lever.p_goal.value:+.3f}" if lever.p_goal is not None else "—"
        lines.append(f"{lever.stage:<22}{lever.change:<24}{lever.revenue.value:>+18,.0f}{p_goal:>14}")
    lines.append(f"bottleneck: {result.bottleneck}")
    return "\n".join(lines)


def _run(
    args: argparse.Namespace, progress: ProgressBar
) -> Forecast | LeadsNeeded | Comparison | Sensitivity:
    model = load_model(args.model)
    runs = {"compare": 2, "sensitivity": 1 + 2 * len(model.stages)}.get(args.command, 1)
    progress.total = args.trials * runs
    common: dict[str, Any] = {
        "trials": args.trials,
        "seed": args.seed,
        "engine": args.engine,
        "progress": progress,
    }
    with executor_for(args.workers, args.scheduler) as executor:
        common["executor"] = executor
        if args.command == "forecast":
            return questions.forecast(model, goal=args.goal, **common)
        if args.command == "leads-needed":
            return questions.leads_needed(model, args.goal, args.confidence, **common)
        if args.command == "compare":
            return questions.compare(model, load_model(args.variant), goal=args.goal, **common)
        return questions.sensitivity(model, goal=args.goal, improvement=args.improvement, **common)


def main(
    argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = _parser().parse_args(argv)
    progress = ProgressBar(args.trials, err)
    try:
        result = _run(args, progress)
        progress.close()
        if args.plot:
            from pipesim.plot import plot

            plot(result, args.plot)
    except PipesimError as exc:
        progress.close()
        err.write(f"pipesim: error: {exc}\n")
        return 2
    if args.json:
        json.dump(result.to_dict(), out, indent=2)
        out.write("\n")
    elif isinstance(result, Forecast):
        out.write(_render_forecast(result) + "\n")
    elif isinstance(result, LeadsNeeded):
        out.write(_render_leads(result) + "\n")
    elif isinstance(result, Comparison):
        out.write(_render_compare(result) + "\n")
    else:
        out.write(_render_sensitivity(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
