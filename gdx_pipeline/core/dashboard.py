"""The stakeholders' hiring dashboard: one self-contained HTML file for every hiring year.

It opens offline and from a file: styles, the script and the charts (SVG drawn here) are
inline, nothing is fetched. Every year is rendered on the server with all its numbers in the
markup; the script only switches the year shown (a menu, or `#2021` in the address), sorts and
filters tables. Without JavaScript every year is shown, one after another.

Beside the numbers it says what they leave out (rows rejected at load, counted over all loads
because a rejected row often has no valid date to place it in a year) and where they come from
(the files, API batches and restores in the ingestion ledger), so nobody mistakes the demo
sample for the real data.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from string import Template

import pandas as pd
import sqlalchemy as sa

from gdx_pipeline.core.metrics import (
    QUARTERS,
    departments_above_mean,
    hires_by_department,
    hiring_year,
    quarterly_hires_by_id,
    ranked_by_hires,
    write_text_atomically,
    years_with_hires,
)
from gdx_pipeline.core.provenance import Provenance, read_provenance
from gdx_pipeline.core.warehouse import as_utc, data_tables, quarantined_files, rejected_rows
from gdx_pipeline.dictionary import TABLES

DASHBOARD_FILE = "hiring_dashboard.html"
QUARTER_COLOURS = ("#9ecae1", "#4292c6", "#2171b5", "#08306b")
PREVIOUS_COLOUR = "#c5ccd4"
ABOVE_COLOUR = "#e6550d"
BELOW_COLOUR = "#bdbdbd"
LABEL_CHARS = 30


@dataclass
class YearMetrics:
    """Both metrics of one year, as computed from the warehouse."""

    year: int
    quarterly: pd.DataFrame  # department_id, department, job_id, job, Q1..Q4
    above_mean: pd.DataFrame  # id, department, hired
    mean: float | None

    @classmethod
    def empty(cls, year: int) -> YearMetrics:
        quarterly = pd.DataFrame(columns=["department_id", "department", "job_id", "job", *QUARTERS])
        return cls(year, quarterly, pd.DataFrame(columns=["id", "department", "hired"]), None)

    @cached_property
    def by_department(self) -> pd.DataFrame:
        """Id, department, Q1..Q4 and hired per hiring department, most hires first."""
        return ranked_by_hires(hires_by_department(self.quarterly))

    @cached_property
    def quarter_totals(self) -> dict[str, int]:
        return {q: int(self.quarterly[q].sum()) if len(self.quarterly) else 0 for q in QUARTERS}

    @property
    def hires(self) -> int:
        return sum(self.quarter_totals.values())

    @property
    def departments_hiring(self) -> int:
        return len(self.by_department)


@dataclass
class DashboardData:
    """Everything the dashboard shows, read in one place: every year's metrics, what was left
    out, and what fed the warehouse."""

    years: dict[int, YearMetrics]  # every year shown, ascending
    selected_year: int  # the year shown first
    generated_at: datetime
    provenance: Provenance
    rows_by_table: dict[str, int] = field(default_factory=dict)
    rejected_by_table: dict[str, int] = field(default_factory=dict)
    quarantined_files: int = 0

    @property
    def selected(self) -> YearMetrics:
        return self.years[self.selected_year]

    def previous(self, year: int) -> YearMetrics:
        """The year before `year`; a year missing from the data had no hires."""
        return self.years.get(year - 1) or YearMetrics.empty(year - 1)

    @property
    def loaded_at(self) -> datetime | None:
        return self.provenance.loaded_at

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_table.values())


def collect_dashboard_data(engine: sa.Engine, year: int | None = None, *, generated_at: datetime | None = None) -> DashboardData:
    """Every year with hires (and `year`, when given, even without), computed now, shown first
    `year` or else the latest year with hires (this year in an empty warehouse)."""
    hiring_years = years_with_hires(engine)
    if year is not None:
        selected = hiring_year(year)
    else:
        selected = max(hiring_years) if hiring_years else datetime.now(UTC).year
    years = {y: _year_metrics(engine, y) for y in sorted({*hiring_years, selected})}
    with engine.connect() as conn:
        rows = {name: conn.execute(sa.select(sa.func.count()).select_from(data_tables[name])).scalar_one() for name in TABLES}
        rejected = dict(conn.execute(sa.select(rejected_rows.c.table_name, sa.func.count()).group_by(rejected_rows.c.table_name)).all())
        quarantined = conn.execute(sa.select(sa.func.count()).select_from(quarantined_files)).scalar_one()
    return DashboardData(
        years=years,
        selected_year=selected,
        generated_at=generated_at or datetime.now(UTC),
        provenance=read_provenance(engine, TABLES),
        rows_by_table=rows,
        rejected_by_table={name: int(rejected.get(name, 0)) for name in TABLES},
        quarantined_files=int(quarantined),
    )


def _year_metrics(engine: sa.Engine, year: int) -> YearMetrics:
    above, mean = departments_above_mean(engine, year)
    return YearMetrics(year, quarterly_hires_by_id(engine, year), above, mean)


def dashboard_path(reports: Path) -> Path:
    """Where the dashboard lives in the reports folder."""
    return reports / DASHBOARD_FILE


def write_dashboard(engine: sa.Engine, reports: Path, year: int | None = None) -> Path:
    """Compute, render and (atomically) write the dashboard, opening on `year`; returns its path."""
    return write_text_atomically(dashboard_path(reports), render_dashboard(collect_dashboard_data(engine, year)))


def render_dashboard(data: DashboardData) -> str:
    template = Template(files("gdx_pipeline.core").joinpath("dashboard_template.html").read_text(encoding="utf-8"))
    return template.substitute(
        year=data.selected_year,
        year_options=_year_options(data),
        generated_at=_when(data.generated_at),
        loaded_at=_when(data.loaded_at) if data.loaded_at else "never (the warehouse is empty)",
        across_years=_across_years(data),
        year_panels="\n".join(_year_panel(data, year) for year in data.years),
        left_out=_left_out(data),
        provenance=_provenance(data.provenance),
        data_json=_script_json(
            {
                "selected": data.selected_year,
                "years": {
                    str(y): {"hires": m.hires, "quarters": list(m.quarter_totals.values()), "mean": m.mean, "above_mean": len(m.above_mean)}
                    for y, m in data.years.items()
                },
            }
        ),
    )


# --- Text ---------------------------------------------------------------------------------


def _when(value: datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _script_json(value: object) -> str:
    """JSON safe inside a <script> element: no `</script>` or `<!--` can close it early."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def short_label(name: str) -> str:
    """A department name cut to fit a chart's label column (the full name is in its tooltip)."""
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _mean_text(mean: float | None) -> str:
    return "—" if mean is None else f"{mean:.2f}"


def _change(current: float, previous: float) -> str:
    difference = current - previous
    if difference == 0:
        return "no change"
    return f"{difference:+,.0f}" if float(difference).is_integer() else f"{difference:+,.2f}"


# --- Every year ---------------------------------------------------------------------------


def _year_options(data: DashboardData) -> str:
    return "\n".join(
        f'<option value="{year}"{" selected" if year == data.selected_year else ""}>{year}</option>' for year in reversed(list(data.years))
    )


def _across_years(data: DashboardData) -> str:
    """Hires per quarter for every year: grouped bars, and the same numbers as a table."""
    rows = []
    for year, metrics in data.years.items():
        previous = data.previous(year)
        totals = metrics.quarter_totals
        selected = ' class="selected" aria-current="true"' if year == data.selected_year else ""
        cells = "".join(f'<td class="num" data-value="{totals[q]}">{totals[q]:,}</td>' for q in QUARTERS)
        rows.append(
            f'<tr data-year="{year}"{selected}><th scope="row"><a href="#{year}">{year}</a></th>{cells}'
            f'<td class="num" data-value="{metrics.hires}">{metrics.hires:,}</td>'
            f'<td class="num">{_e(_change(metrics.hires, previous.hires))}</td></tr>'
        )
    head = "".join(f'<th scope="col" class="num">{q}</th>' for q in QUARTERS)
    table = (
        f'<table id="years-table"><thead><tr><th scope="col">year</th>{head}<th scope="col" class="num">total</th>'
        f'<th scope="col" class="num">vs. year before</th></tr></thead><tbody>\n' + "\n".join(rows) + "\n</tbody></table>"
    )
    return _across_years_svg(data) + table


def _svg_text(x: float, y: float, text: str, anchor: str = "start", css: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{css}">{_e(text)}</text>'


def _legend(x: float, items: list[tuple[str, str]], step: float = 70) -> str:
    return "".join(
        f'<rect x="{x + i * step:.1f}" y="6" width="14" height="14" fill="{colour}"/>' + _svg_text(x + i * step + 19, 18, label, css="legend")
        for i, (label, colour) in enumerate(items)
    )


def _across_years_svg(data: DashboardData) -> str:
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


# --- One year -----------------------------------------------------------------------------


def _year_panel(data: DashboardData, year: int) -> str:
    metrics, previous = data.years[year], data.previous(year)
    hidden = "" if year == data.selected_year else " hidden"
    return f"""<section class="year-panel" id="year-{year}" data-year="{year}"{hidden}>
<h2 class="panel-title">{year}, beside {previous.year}</h2>
<div class="cards">
{_cards(metrics, previous)}
</div>
<section class="panel-quarters">
<h3>Hires per quarter: {year} beside {previous.year}</h3>
<p class="caption">Employees hired in each quarter (UTC), all departments and jobs. {_quarter_totals(metrics, previous)}</p>
{_quarters_svg(metrics, previous)}
</section>
<section class="panel-departments">
<h3>Hires by department, most first</h3>
<p class="caption">Every department that hired in {year}, split by quarter; {_comparison_note(previous)}</p>
{_departments_svg(metrics, previous)}
</section>
<section class="panel-above-mean">
<h3>Departments above the mean</h3>
<p class="caption">{_mean_caption(metrics)}</p>
{_mean_chart_svg(metrics)}
<div class="scroll">{_above_mean_table(metrics)}</div>
</section>
<section class="panel-quarterly">
<h3>Hires per quarter by department and job</h3>
<p class="caption"><span class="row-count" data-table="quarterly-table-{year}">{len(metrics.quarterly)}</span> department and job pair(s) with at least one hire in {year}, by department, then job. Click a column to sort.</p>
<input type="search" class="table-filter" data-table="quarterly-table-{year}" placeholder="Filter by department or job" aria-label="Filter {year} by department or job">
<div class="scroll">{_quarterly_table(metrics)}</div>
</section>
<p class="note">Rows rejected at load are in none of these numbers: see <a href="#left-out">what is left out</a>.</p>
</section>"""


def _comparison_note(previous: YearMetrics) -> str:
    if previous.hires:
        return f"the grey bar under each is the same department in {previous.year}."
    return f"nobody was hired in {previous.year} to compare with."


def _cards(metrics: YearMetrics, previous: YearMetrics) -> str:
    above, above_before = len(metrics.above_mean), len(previous.above_mean)
    cards = [
        ("hires", f"Employees hired in {metrics.year}", f"{metrics.hires:,}", f"{previous.year}: {previous.hires:,} ({_change(metrics.hires, previous.hires)})"),
        (
            "departments",
            "Departments hiring",
            f"{metrics.departments_hiring:,}",
            f"{previous.year}: {previous.departments_hiring:,} ({_change(metrics.departments_hiring, previous.departments_hiring)})",
        ),
        ("mean", "Mean hires per hiring department", _mean_text(metrics.mean), f"{previous.year}: {_mean_text(previous.mean)}"),
        ("above-mean", "Departments above the mean", f"{above:,}", f"{previous.year}: {above_before:,} ({_change(above, above_before)})"),
    ]
    return "\n".join(
        f'<div class="card" data-card="{key}"><div class="card-label">{_e(label)}</div>'
        f'<div class="card-value">{_e(value)}</div><div class="card-note">{_e(note)}</div></div>'
        for key, label, value, note in cards
    )


def _quarter_totals(metrics: YearMetrics, previous: YearMetrics) -> str:
    return "Quarter totals: " + " &middot; ".join(
        f'{q} <strong data-quarter-total="{q}">{metrics.quarter_totals[q]:,}</strong> '
        f'<span class="previous" data-previous-quarter-total="{q}">({previous.year}: {previous.quarter_totals[q]:,})</span>'
        for q in QUARTERS
    ) + "."


def _quarters_svg(metrics: YearMetrics, previous: YearMetrics) -> str:
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


def _departments_svg(metrics: YearMetrics, previous: YearMetrics) -> str:
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
            f"<title>{_e(row.department)}: {hired:,} hired in {metrics.year}, {hired_before:,} in {previous.year}</title>"
            + _svg_text(label_width - 8, y + bar * 0.72, short_label(row.department), anchor="end", css="label")
        )
        x = float(label_width)
        for quarter, colour in zip(QUARTERS, QUARTER_COLOURS):
            value = int(getattr(row, quarter))
            width = plot_width * value / largest
            if value:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{bar}" fill="{colour}">'
                    f"<title>{_e(row.department)}, {quarter}: {value:,}</title></rect>"
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


def _mean_caption(metrics: YearMetrics) -> str:
    if metrics.mean is None:
        return f"Nobody was hired in {metrics.year}, so there is no mean and no department above it."
    return (
        f'Departments that hired more than the mean of <strong class="mean-value">{metrics.mean:.2f}</strong> employees '
        f"per department in {metrics.year}, the mean taken over the {metrics.departments_hiring:,} department(s) with at "
        "least one hire that year. Most hires first; ties by name."
    )


def _mean_chart_svg(metrics: YearMetrics) -> str:
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
            f"<g><title>{_e(row.department)}: {hired:,} hired ({'above' if hired > mean else 'not above'} the mean)</title>"
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


def _table(table_id: str, headers: list[tuple[str, str]], rows: list[list[tuple[object, str]]], empty: str) -> str:
    """A sortable table: each header is a button; numeric cells carry their value for sorting."""
    head = "".join(
        f'<th scope="col" data-type="{kind}" aria-sort="none"><button type="button">{_e(label)}</button></th>' for label, kind in headers
    )
    if not rows:
        body = f'<tr class="empty"><td colspan="{len(headers)}">{_e(empty)}</td></tr>'
    else:
        body = "\n".join(
            "<tr>"
            + "".join(
                f'<td class="num" data-value="{_e(value)}">{int(value):,}</td>' if kind == "number" else f"<td>{_e(value)}</td>"
                for value, kind in row
            )
            + "</tr>"
            for row in rows
        )
    return f'<table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _above_mean_table(metrics: YearMetrics) -> str:
    rows = [[(r.id, "number"), (r.department, "text"), (r.hired, "number")] for r in metrics.above_mean.itertuples(index=False)]
    empty = f"No hires in {metrics.year}." if metrics.mean is None else "No department hired more than the mean."
    return _table(f"above-mean-table-{metrics.year}", [("id", "number"), ("department", "text"), ("hired", "number")], rows, empty)


def _quarterly_table(metrics: YearMetrics) -> str:
    rows = [
        [(r.department, "text"), (r.job, "text"), *((getattr(r, q), "number") for q in QUARTERS), (sum(getattr(r, q) for q in QUARTERS), "number")]
        for r in metrics.quarterly.itertuples(index=False)
    ]
    headers = [("department", "text"), ("job", "text"), *((q, "number") for q in QUARTERS), ("total", "number")]
    return _table(f"quarterly-table-{metrics.year}", headers, rows, f"No hires in {metrics.year}.")


# --- What is left out, and where the numbers come from ------------------------------------


def _left_out(data: DashboardData) -> str:
    rejected = "\n".join(
        f'<li>Rows rejected while loading <code>{_e(name)}</code>, all loads: '
        f'<strong data-rejected-table="{_e(name)}">{count:,}</strong></li>'
        for name, count in data.rejected_by_table.items()
    )
    held = ", ".join(f"{_e(name)} {count:,}" for name, count in data.rows_by_table.items())
    quarantined = (
        f"{data.quarantined_files:,} file(s) could not be read at all and were quarantined."
        if data.quarantined_files
        else "No file was quarantined."
    )
    return (
        f'<p>Counted over every load so far, for all years together (<strong id="rejected-total">{data.rejected:,}</strong> '
        "in all): a rejected row is not placed in a year, because many have no valid hire date. Each broke the data "
        "dictionary (a blank or invalid field, an unknown department or job) and is in no number on this page; it is kept "
        "with its reasons in the <code>rejected_rows</code> table and in <code>rejects/</code>.</p>"
        f'<ul id="rejected-by-table">\n{rejected}\n</ul>'
        f"<p>{quarantined} The warehouse holds: {held}.</p>"
    )


def _provenance(provenance: Provenance) -> str:
    if provenance.is_empty:
        return '<p class="no-data">Nothing has been loaded yet.</p>'
    rows = [
        (f.table, "file", f.file, f.sha256_prefix, f"{f.rows_read:,}", f"{f.rows_inserted + f.rows_updated:,}", f"{f.rows_rejected:,}", _when(f.loaded_at))
        for f in provenance.files
    ]
    rows += [
        (
            b.table,
            b.source,
            f"{b.batches:,} batch(es), {_when(b.first_at)} to {_when(b.last_at)}",
            "",
            f"{b.rows_read:,}",
            f"{b.rows_inserted + b.rows_updated:,}",
            f"{b.rows_rejected:,}",
            _when(b.last_at),
        )
        for b in provenance.batches
    ]
    rows += [(r.table, "restore", r.backup, "", "", f"{r.rows:,}", "", _when(r.restored_at)) for r in provenance.restores]
    body = "\n".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    head = "".join(
        f'<th scope="col">{label}</th>'
        for label in ("table", "kind", "file or source", "sha256 (first 12)", "rows read", "rows loaded", "rows rejected", "committed at (UTC)")
    )
    older = (
        f"<p>And {provenance.older_files:,} older file(s), {provenance.older_file_rows:,} rows read, not listed.</p>" if provenance.older_files else ""
    )
    summary = (
        f"<p>{provenance.file_count:,} file(s), {provenance.batch_count:,} API batch(es) and {len(provenance.restores):,} restore(s) "
        "fed the warehouse, from the ingestion ledger, newest first. A file is named with the first digits of its sha256, "
        "so the shipped demo sample and the real files tell apart even under the same name.</p>"
    )
    return f'{summary}<div class="scroll"><table id="sources-table"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>{older}'
