"""PNG charts of one year's metrics, for the metric assets' pages in the Dagster UI (the HTML
dashboard draws its own SVG). Both rank departments by hires, like the metric itself."""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.figure import Figure

from gdx_pipeline.core.dashboard import ABOVE_COLOUR, BELOW_COLOUR, QUARTER_COLOURS, short_label
from gdx_pipeline.core.metrics import QUARTERS, ranked_by_hires


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def _figure(rows: int) -> Figure:
    return Figure(figsize=(8, 0.35 * max(rows, 3) + 1))


def quarterly_chart_png(by_department: pd.DataFrame, year: int) -> bytes:
    """Stacked horizontal bars: hires per quarter for each department, most hires on top."""
    ranked = ranked_by_hires(by_department)
    figure = _figure(len(ranked))
    axes = figure.add_subplot()
    labels = [short_label(name) for name in ranked["department"]][::-1]
    left = [0] * len(ranked)
    for quarter, colour in zip(QUARTERS, QUARTER_COLOURS):
        values = [int(v) for v in ranked[quarter]][::-1]
        axes.barh(labels, values, left=left, color=colour, label=quarter)
        left = [a + b for a, b in zip(left, values)]
    axes.set_title(f"Hires per quarter by department, {year} (UTC)")
    axes.set_xlabel("employees hired")
    if len(ranked):
        axes.legend(ncols=4, loc="lower right", frameon=False)
    else:
        axes.text(0.5, 0.5, f"no hires in {year}", ha="center", va="center", transform=axes.transAxes)
    return _png(figure)


def above_mean_chart_png(by_department: pd.DataFrame, mean: float | None, year: int) -> bytes:
    """Every hiring department's hires against the mean line; those above it highlighted."""
    ranked = ranked_by_hires(by_department)
    figure = _figure(len(ranked))
    axes = figure.add_subplot()
    labels = [short_label(name) for name in ranked["department"]][::-1]
    values = [int(v) for v in ranked["hired"]][::-1]
    colours = [ABOVE_COLOUR if mean is not None and v > mean else BELOW_COLOUR for v in values]
    axes.barh(labels, values, color=colours)
    if mean is not None:
        axes.axvline(mean, color="#333333", linestyle="--", linewidth=1)
        axes.text(mean, len(values) - 0.4, f" mean {mean:.2f}", va="bottom", fontsize=9)
    else:
        axes.text(0.5, 0.5, f"no hires in {year}", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(f"Departments against the mean hires per department, {year}")
    axes.set_xlabel("employees hired")
    return _png(figure)
