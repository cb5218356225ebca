"""``pipesim`` command line: forecast, leads-needed, compare, sensitivity, capacity.

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

from pipesim import questions, segments
from pipesim.engines import ENGINE_NAMES
from pipesim.errors import PipesimError, QuestionError
from pipesim.parallel import executor_for
from pipesim.results import CapacityPlan, Comparison, Forecast, LeadsNeeded, Sensitivity, Summary
from pipesim.spec import Model, load_model


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
    compare.add_argument(
        "variant", metavar="VARIANT", nargs="?", help="variant model file (same stages); default MODEL"
    )
    compare.add_argument(
        "--shift-source",
        nargs=3,
        metavar=("FROM", "TO", "FRACTION"),
        help="what-if by segment: FRACTION of the new leads of source FROM arrive as source TO leads",
    )
    compare.add_argument(
        "--rep-leaves",
        metavar="OWNER",
        help="what-if by segment: OWNER leaves (their new leads spread, their open leads pooled)",
    )
    compare.add_argument("--goal", type=float, help="also report the change in P(revenue >= GOAL)")
    sensitivity = command("sensitivity", "Which stage's improvement moves the outcome most (the bottleneck).")
    sensitivity.add_argument("--goal", type=float, help="rank by the change in P(revenue >= GOAL)")
    sensitivity.add_argument(
        "--improvement", type=float, default=0.1, help="relative improvement per stage, default 0.1 (10%%)"
    )
    capacity = command(
        "capacity", "The capacity curve: revenue, P(goal), waits and utilisation per rep added."
    )
    capacity.add_argument(
        "--reps",
        default="0..5",
        type=_rep_range,
        help="reps to add, a range A..B or a list 0,1,3 (default 0..5)",
    )
    capacity.add_argument("--goal", type=float, help="also report P(revenue >= GOAL) per row")
    forecast.add_argument(
        "--threshold",
        type=float,
        action="append",
        default=[],
        metavar="DAYS",
        help="with [reps]: also report P(wait > DAYS) per lead (repeatable)",
    )
    for sub in (forecast, leads, compare, sensitivity, capacity):
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


def _rep_range(text: str) -> tuple[int, ...]:
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split("..", 1))
            values = tuple(range(low, high + 1))
        else:
            values = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected A..B or a comma list of whole numbers, got {text!r}"
        ) from exc
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"reps to add must be whole numbers >= 0, got {text!r}")
    return values


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
    flow = result.flow
    if flow is not None:
        wait, lead = flow.wait, flow.lead_time
        lines.append(
            f"wait for a rep slot, per lead (days, {flow.window[0]:g}–{flow.window[1]:g}): "
            f"mean {wait.mean.value:.2f} ± {wait.mean.se:.2f}, P50 {wait.p50.value:.2f}, "
            f"P90 {wait.p90.value:.2f}, P99 {wait.p99.value:.2f}"
        )
        for exceed in flow.wait_exceeds:
            lines.append(
                f"  P(wait > {exceed.days:g} d) = "
                f"{exceed.probability.value:.3f} ± {exceed.probability.se:.3f}"
            )
        lines.append(
            f"lead time arrival→win (days): P50 {lead.p50.value:.1f}, P90 {lead.p90.value:.1f}; "
            f"rep utilisation {flow.utilisation.value:.1%} ± {flow.utilisation.se:.1%}"
        )
    if result.moments_only:
        lines.append("engine analytic: exact mean and sd only; percentiles need a Monte Carlo engine")
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
    if result.rate_per_week is not None and result.p_goal_at_rate is not None:
        lines.append(
            f"as a flow           {result.rate_per_week:,.1f} leads per week "
            f"(P(goal) {result.p_goal_at_rate.value:.3f} ± {result.p_goal_at_rate.se:.3f}); "
            "the figures above are one batch at day 0"
        )
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


def _render_capacity(result: CapacityPlan) -> str:
    lines = [
        f"Capacity curve — {result.trials} trials, seed {result.seed}, same leads in every row "
        f"({result.currency})",
        f"{'reps':>5}{'added':>6}{'revenue P10':>14}{'P50':>14}{'P90':>14}{'P(goal)':>9}"
        f"{'wait P90 d':>11}{'util.':>7}{'gain':>14}",
    ]
    for row in result.rows:
        p_goal = f"{row.p_goal.value:.3f}" if row.p_goal is not None else "—"
        gain = f"{row.gain.value:+,.0f}" if row.gain is not None else "—"
        lines.append(
            f"{row.reps:>5}{row.added:>6}{_money(row.revenue.p10):>14}{_money(row.revenue.p50):>14}"
            f"{_money(row.revenue.p90):>14}{p_goal:>9}{row.wait_p90.value:>11.1f}"
            f"{row.utilisation.value:>7.0%}{gain:>14}"
        )
    if result.summary:
        lines.append(result.summary + ".")
    lines.append("gain: paired change in mean revenue from one row to the next (common random numbers).")
    return "\n".join(lines)


def _variant(model: Model, args: argparse.Namespace) -> Model:
    """VARIANT (default MODEL) with the segment what-ifs applied."""
    if args.variant is None and args.shift_source is None and args.rep_leaves is None:
        raise QuestionError("VARIANT: give a variant model file, --shift-source or --rep-leaves")
    variant = model if args.variant is None else load_model(args.variant)
    if args.shift_source is not None:
        source, target, fraction = args.shift_source
        try:
            share = float(fraction)
        except ValueError:
            raise QuestionError(f"fraction: must be a number in [0, 1], got {fraction!r}") from None
        variant = segments.shift_source(variant, source, target, share)
    if args.rep_leaves is not None:
        variant = segments.without_owner(variant, args.rep_leaves)
    return variant


def _run(
    args: argparse.Namespace, progress: ProgressBar
) -> Forecast | LeadsNeeded | Comparison | Sensitivity | CapacityPlan:
    model = load_model(args.model)
    runs = {"compare": 2, "sensitivity": 1 + 2 * len(model.stages)}.get(args.command, 1)
    if args.command == "capacity":
        runs = len(args.reps)
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
            return questions.forecast(model, goal=args.goal, thresholds=tuple(args.threshold), **common)
        if args.command == "capacity":
            return questions.capacity(model, args.reps, goal=args.goal, **common)
        if args.command == "leads-needed":
            return questions.leads_needed(model, args.goal, args.confidence, **common)
        if args.command == "compare":
            return questions.compare(model, _variant(model, args), goal=args.goal, **common)
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
    elif isinstance(result, CapacityPlan):
        out.write(_render_capacity(result) + "\n")
    else:
        out.write(_render_sensitivity(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
