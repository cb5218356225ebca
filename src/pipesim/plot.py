"""Charts for ``--plot``: the revenue histogram and the fan chart of cumulative revenue by week with the
goal line (forecast), the difference histogram (compare), the ranked levers (sensitivity), the capacity
curve (capacity). matplotlib is imported lazily, so the
core runs without it."""

from __future__ import annotations

import itertools
from typing import Any

from pipesim.errors import MissingExtraError
from pipesim.results import CapacityPlan, Comparison, Forecast, Histogram, LeadsNeeded, Sensitivity


def plot(result: Forecast | LeadsNeeded | Comparison | Sensitivity | CapacityPlan, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as exc:
        raise MissingExtraError("--plot", "plot") from exc
    fan = isinstance(result, Forecast) and bool(result.revenue_by_week)
    figure, panels = pyplot.subplots(1, 2 if fan else 1, figsize=(14 if fan else 8, 4.5), squeeze=False)
    axes = panels[0][0]
    try:
        if isinstance(result, Forecast):
            if fan:
                _fan(panels[0][1], result)
            _histogram(
                axes, result.histogram, f"Revenue within {result.horizon_days:g} days ({result.currency})"
            )
            for label, value in (
                ("P10", result.revenue.p10),
                ("P50", result.revenue.p50),
                ("P90", result.revenue.p90),
            ):
                axes.axvline(value, linestyle="--", color="black", linewidth=1)
                axes.annotate(label, (value, 0), xytext=(3, 3), textcoords="offset points")
        elif isinstance(result, CapacityPlan):
            reps = [row.reps for row in result.rows]
            axes.fill_between(
                reps,
                [row.revenue.p10 for row in result.rows],
                [row.revenue.p90 for row in result.rows],
                alpha=0.3,
                label="revenue P10–P90",
            )
            axes.plot(reps, [row.revenue.p50 for row in result.rows], marker="o", label="revenue P50")
            axes.set_xlabel("reps")
            axes.set_ylabel(f"revenue ({result.currency})")
            waits = axes.twinx()
            waits.plot(reps, [row.wait_p90.value for row in result.rows], color="grey", linestyle="--")
            waits.set_ylabel("wait P90 per lead (days, dashed)")
            axes.legend(loc="lower right")
            axes.set_title(result.summary[:90])
        elif isinstance(result, Comparison):
            d = result.difference
            axes.bar(["P10", "P50", "P90", "mean"], [d.p10, d.p50, d.p90, d.mean])
            axes.set_title(f"Variant − base revenue per trial ({result.currency})")
        elif isinstance(result, Sensitivity):
            labels = [f"{lever.stage}: {lever.change}" for lever in result.levers]
            values = [lever.p_goal.value if lever.p_goal else lever.revenue.value for lever in result.levers]
            axes.barh(labels[::-1], values[::-1])
            axes.set_title(
                "Effect of each improvement" + (" on P(goal)" if result.goal else " on mean revenue")
            )
        else:
            axes.bar(["reverse funnel", "simulated"], [result.naive, result.leads])
            axes.set_title(f"Leads needed for {result.goal:,.0f} at {result.confidence:.0%}")
        figure.tight_layout()
        figure.savefig(path)
    finally:
        pyplot.close(figure)


def _fan(axes: Any, result: Forecast) -> None:
    """Cumulative revenue by week: the P10–P90 band, the P50 line and the goal as a horizontal line."""
    days = [0.0, *(band.day for band in result.revenue_by_week)]
    low = [0.0, *(band.p10 for band in result.revenue_by_week)]
    mid = [0.0, *(band.p50 for band in result.revenue_by_week)]
    high = [0.0, *(band.p90 for band in result.revenue_by_week)]
    axes.fill_between(days, low, high, alpha=0.3, label="P10–P90")
    axes.plot(days, mid, linewidth=2, label="P50")
    if result.goal is not None:
        axes.axhline(result.goal, color="firebrick", linewidth=1.5, label=f"goal {result.goal:,.0f}")
    axes.set_xlabel("days from today")
    axes.set_ylabel(f"revenue won so far ({result.currency})")
    axes.set_title("Cumulative revenue by week")
    axes.legend(loc="upper left")


def _histogram(axes: Any, histogram: Histogram, title: str) -> None:
    edges = histogram.edges
    widths = [high - low for low, high in itertools.pairwise(edges)]
    axes.bar(edges[:-1], histogram.counts, width=widths, align="edge", edgecolor="white")
    axes.set_title(title)
    axes.set_ylabel("trials")
