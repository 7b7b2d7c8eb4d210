"""The dashboard's charts, drawn here as inline SVG so the page needs nothing from outside: hires
per quarter across years, one year beside the year before, departments by hires, and departments
against the mean. Every bar carries a tooltip with its exact number."""

from __future__ import annotations

from gdx_pipeline.core.dashboard.data import DashboardData, YearMetrics
from gdx_pipeline.core.dashboard.text import escaped
from gdx_pipeline.core.metrics import QUARTERS

QUARTER_COLOURS = ("#9ecae1", "#4292c6", "#2171b5", "#08306b")
PREVIOUS_COLOUR = "#c5ccd4"
ABOVE_COLOUR = "#e6550d"
BELOW_COLOUR = "#bdbdbd"
LABEL_CHARS = 30


def short_label(name: str) -> str:
    """A department name cut to fit a chart's label column (the full name is in its tooltip)."""
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _svg_text(x: float, y: float, text: str, anchor: str = "start", css: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{css}">{escaped(text)}</text>'


def _legend(x: float, items: list[tuple[str, str]], step: float = 70) -> str:
    return "".join(
        f'<rect x="{x + i * step:.1f}" y="6" width="14" height="14" fill="{colour}"/>'
        + _svg_text(x + i * step + 19, 18, label, css="legend")
        for i, (label, colour) in enumerate(items)
    )


def across_years_svg(data: DashboardData) -> str:
    if not any(m.hires for m in data.years.values()):
        return '<p class="no-data">No hires in any year yet.</p>'
    bar, gap, top, plot_height = 14, 22, 34, 180
    largest = max(max(m.quarter_totals.values()) for m in data.years.values()) or 1
    group = len(QUARTERS) * bar + gap
    width = 40 + len(data.years) * group
    width = max(width, 330)
    parts = [
        f'<svg id="years-chart" role="img" viewBox="0 0 {width} {top + plot_height + 24}" style="max-width: {width}px" '
        f'aria-label="Hires per quarter in every year">' + _legend(40, list(zip(QUARTERS, QUARTER_COLOURS)))
    ]
    baseline = top + plot_height
    for index, (year, metrics) in enumerate(data.years.items()):
        x0 = 40 + index * group
        selected = " selected" if year == data.selected_year else ""
        parts.append(f'<g class="year-group{selected}" data-year="{year}"><title>{year}: {metrics.hires:,} hired</title>')
        for offset, (quarter, colour) in enumerate(zip(QUARTERS, QUARTER_COLOURS)):
            value = metrics.quarter_totals[quarter]
            height = plot_height * value / largest
            parts.append(
                f'<rect x="{x0 + offset * bar:.1f}" y="{baseline - height:.1f}" width="{bar - 2}" height="{height:.1f}" fill="{colour}">'
                f"<title>{year} {quarter}: {value:,}</title></rect>"
            )
        parts.append(_svg_text(x0 + len(QUARTERS) * bar / 2, baseline + 16, str(year), anchor="middle", css="label") + "</g>")
    parts.append(f'<line x1="36" y1="{baseline}" x2="{width}" y2="{baseline}" class="axis"/></svg>')
    return "\n".join(parts)


def quarters_svg(metrics: YearMetrics, previous: YearMetrics) -> str:
    """Per quarter, the year before (grey) beside the year (blue), with their values."""
    if not metrics.hires and not previous.hires:
        return f'<p class="no-data">No hires in {previous.year} or {metrics.year}.</p>'
    bar, gap, top, plot_height = 34, 40, 34, 160
    largest = max(*metrics.quarter_totals.values(), *previous.quarter_totals.values(), 1)
    baseline = top + plot_height
    width = 40 + len(QUARTERS) * (2 * bar + gap)
    parts = [
        f'<svg class="quarters-chart" role="img" viewBox="0 0 {width} {baseline + 24}" style="max-width: {width}px" '
        f'aria-label="Hires per quarter in {metrics.year} beside {previous.year}">'
        + _legend(40, [(str(previous.year), PREVIOUS_COLOUR), (str(metrics.year), QUARTER_COLOURS[2])])
    ]
    for index, quarter in enumerate(QUARTERS):
        x0 = 40 + index * (2 * bar + gap)
        for offset, (source, colour) in enumerate(((previous, PREVIOUS_COLOUR), (metrics, QUARTER_COLOURS[2]))):
            value = source.quarter_totals[quarter]
            height = plot_height * value / largest
            x = x0 + offset * bar
            parts.append(
                f'<rect x="{x}" y="{baseline - height:.1f}" width="{bar - 3}" height="{height:.1f}" fill="{colour}">'
                f"<title>{source.year} {quarter}: {value:,}</title></rect>"
                + _svg_text(x + (bar - 3) / 2, baseline - height - 4, f"{value:,}", anchor="middle", css="value")
            )
        parts.append(_svg_text(x0 + bar, baseline + 16, quarter, anchor="middle", css="label"))
    parts.append(f'<line x1="36" y1="{baseline}" x2="{width}" y2="{baseline}" class="axis"/></svg>')
    return "\n".join(parts)


def departments_svg(metrics: YearMetrics, previous: YearMetrics) -> str:
    """Stacked quarter bars per department, most hires first, the year before as a thin bar under each."""
    ranked = metrics.by_department
    if ranked.empty:
        return f'<p class="no-data">No hires in {metrics.year}.</p>'
    before = dict(zip(previous.by_department["id"], previous.by_department["hired"]))
    compare = bool(previous.hires)  # nobody hired the year before: no row of empty bars
    label_width, plot_width, bar, gap, top = 210, 520, 18, 10, 34
    thin = 6 if compare else 0
    largest = max(int(ranked["hired"].max()), max(before.values(), default=0), 1)
    row_height = bar + (thin + 2 if compare else 0) + gap
    height = top + len(ranked) * row_height + 6
    parts = [
        f'<svg class="departments-chart" role="img" viewBox="0 0 {label_width + plot_width + 70} {height}" '
        f'aria-label="Hires per department in {metrics.year}, most first, beside {previous.year}">'
        + _legend(label_width, [*zip(QUARTERS, QUARTER_COLOURS), *([(str(previous.year), PREVIOUS_COLOUR)] if compare else [])])
    ]
    for index, row in enumerate(ranked.itertuples(index=False)):
        y = top + index * row_height
        hired, hired_before = int(row.hired), int(before.get(row.id, 0))
        parts.append(
            f'<g class="department-bar" data-department-id="{int(row.id)}" data-hired="{hired}" data-hired-before="{hired_before}">'
            f"<title>{escaped(row.department)}: {hired:,} hired in {metrics.year}, {hired_before:,} in {previous.year}</title>"
            + _svg_text(label_width - 8, y + bar * 0.72, short_label(row.department), anchor="end", css="label")
        )
        x = float(label_width)
        for quarter, colour in zip(QUARTERS, QUARTER_COLOURS):
            value = int(getattr(row, quarter))
            width = plot_width * value / largest
            if value:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{bar}" fill="{colour}">'
                    f"<title>{escaped(row.department)}, {quarter}: {value:,}</title></rect>"
                )
            x += width
        parts.append(_svg_text(x + 6, y + bar * 0.72, f"{hired:,}", css="value"))
        if compare:
            previous_width = plot_width * hired_before / largest
            parts.append(
                f'<rect x="{label_width}" y="{y + bar + 2}" width="{previous_width:.1f}" height="{thin}" fill="{PREVIOUS_COLOUR}"/>'
                + _svg_text(label_width + previous_width + 6, y + bar + 2 + thin, f"{hired_before:,}", css="previous-value")
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def mean_chart_svg(metrics: YearMetrics) -> str:
    """Every hiring department's hires as a bar, most first, the mean as a dashed line; above it highlighted."""
    ranked, mean = metrics.by_department, metrics.mean
    if ranked.empty or mean is None:
        return f'<p class="no-data">No hires in {metrics.year}.</p>'
    label_width, plot_width, bar, gap, top = 210, 520, 20, 8, 46
    largest = max(int(ranked["hired"].max()), 1)
    height = top + len(ranked) * (bar + gap) + 10
    mean_x = label_width + plot_width * mean / largest
    parts = [
        f'<svg class="mean-chart" role="img" viewBox="0 0 {label_width + plot_width + 60} {height}" '
        f'aria-label="Hires per department in {metrics.year} against the mean of {mean:.2f}">'
        + _legend(label_width, [("above the mean", ABOVE_COLOUR), ("at or below", BELOW_COLOUR)], step=140)
    ]
    for index, row in enumerate(ranked.itertuples(index=False)):
        y = top + index * (bar + gap)
        hired = int(row.hired)
        colour = ABOVE_COLOUR if hired > mean else BELOW_COLOUR
        width = plot_width * hired / largest
        parts.append(
            f"<g><title>{escaped(row.department)}: {hired:,} hired ({'above' if hired > mean else 'not above'} the mean)</title>"
            + _svg_text(label_width - 8, y + bar * 0.72, short_label(row.department), anchor="end", css="label")
            + f'<rect x="{label_width}" y="{y}" width="{width:.1f}" height="{bar}" fill="{colour}"/>'
            + _svg_text(label_width + width + 6, y + bar * 0.72, f"{hired:,}", css="value")
            + "</g>"
        )
    parts.append(
        f'<line x1="{mean_x:.1f}" y1="{top - 6}" x2="{mean_x:.1f}" y2="{height - 4}" class="mean-line"/>'
        + _svg_text(mean_x + 4, top - 8, f"mean {mean:.2f}", css="mean-label")
    )
    parts.append("</svg>")
    return "\n".join(parts)
