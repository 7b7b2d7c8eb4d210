"""One year's panel: its cards beside the year before, its charts with their captions, and its
sortable tables. Every year is rendered in full; the page's script only chooses which is shown."""

from __future__ import annotations

from gdx_pipeline.core.dashboard.charts import departments_svg, mean_chart_svg, quarters_svg
from gdx_pipeline.core.dashboard.data import DashboardData, YearMetrics
from gdx_pipeline.core.dashboard.text import change_text, escaped
from gdx_pipeline.core.metrics import QUARTERS


def year_panel(data: DashboardData, year: int) -> str:
    metrics, previous = data.years[year], data.previous(year)
    hidden = "" if year == data.selected_year else " hidden"
    quarterly = f"quarterly-table-{year}"
    quarterly_caption = (
        f'<span class="row-count" data-table="{quarterly}">{len(metrics.quarterly)}</span> department and job pair(s) '
        f"with at least one hire in {year}, by department, then job. Click a column to sort."
    )
    quarterly_filter = (
        f'<input type="search" class="table-filter" data-table="{quarterly}" placeholder="Filter by department or job" '
        f'aria-label="Filter {year} by department or job">'
    )
    return f"""<section class="year-panel" id="year-{year}" data-year="{year}"{hidden}>
<h2 class="panel-title">{year}, beside {previous.year}</h2>
<div class="cards">
{_cards(metrics, previous)}
</div>
<section class="panel-quarters">
<h3>Hires per quarter: {year} beside {previous.year}</h3>
<p class="caption">Employees hired in each quarter (UTC), all departments and jobs. {_quarter_totals(metrics, previous)}</p>
{quarters_svg(metrics, previous)}
</section>
<section class="panel-departments">
<h3>Hires by department, most first</h3>
<p class="caption">Every department that hired in {year}, split by quarter; {_comparison_note(previous)}</p>
{departments_svg(metrics, previous)}
</section>
<section class="panel-above-mean">
<h3>Departments above the mean</h3>
<p class="caption">{_mean_caption(metrics)}</p>
{mean_chart_svg(metrics)}
<div class="scroll">{_above_mean_table(metrics)}</div>
</section>
<section class="panel-quarterly">
<h3>Hires per quarter by department and job</h3>
<p class="caption">{quarterly_caption}</p>
{quarterly_filter}
<div class="scroll">{_quarterly_table(metrics)}</div>
</section>
<p class="note">Rows rejected at load are in none of these numbers: see <a href="#left-out">what is left out</a>.</p>
</section>"""


def _comparison_note(previous: YearMetrics) -> str:
    if previous.hires:
        return f"the grey bar under each is the same department in {previous.year}."
    return f"nobody was hired in {previous.year} to compare with."


def _mean_text(mean: float | None) -> str:
    return "—" if mean is None else f"{mean:.2f}"


def _cards(metrics: YearMetrics, previous: YearMetrics) -> str:
    above, above_before = len(metrics.above_mean), len(previous.above_mean)
    cards = [
        (
            "hires",
            f"Employees hired in {metrics.year}",
            f"{metrics.hires:,}",
            f"{previous.year}: {previous.hires:,} ({change_text(metrics.hires, previous.hires)})",
        ),
        (
            "departments",
            "Departments hiring",
            f"{metrics.departments_hiring:,}",
            f"{previous.year}: {previous.departments_hiring:,} ({change_text(metrics.departments_hiring, previous.departments_hiring)})",
        ),
        ("mean", "Mean hires per hiring department", _mean_text(metrics.mean), f"{previous.year}: {_mean_text(previous.mean)}"),
        (
            "above-mean",
            "Departments above the mean",
            f"{above:,}",
            f"{previous.year}: {above_before:,} ({change_text(above, above_before)})",
        ),
    ]
    return "\n".join(
        f'<div class="card" data-card="{key}"><div class="card-label">{escaped(label)}</div>'
        f'<div class="card-value">{escaped(value)}</div><div class="card-note">{escaped(note)}</div></div>'
        for key, label, value, note in cards
    )


def _quarter_totals(metrics: YearMetrics, previous: YearMetrics) -> str:
    return "Quarter totals: " + " &middot; ".join(
        f'{q} <strong data-quarter-total="{q}">{metrics.quarter_totals[q]:,}</strong> '
        f'<span class="previous" data-previous-quarter-total="{q}">({previous.year}: {previous.quarter_totals[q]:,})</span>'
        for q in QUARTERS
    ) + "."


def _mean_caption(metrics: YearMetrics) -> str:
    if metrics.mean is None:
        return f"Nobody was hired in {metrics.year}, so there is no mean and no department above it."
    return (
        f'Departments that hired more than the mean of <strong class="mean-value">{metrics.mean:.2f}</strong> employees '
        f"per department in {metrics.year}, the mean taken over the {metrics.departments_hiring:,} department(s) with at "
        "least one hire that year. Most hires first; ties by name."
    )


def _table(table_id: str, headers: list[tuple[str, str]], rows: list[list[tuple[object, str]]], empty: str) -> str:
    """A sortable table: each header is a button; numeric cells carry their value for sorting."""
    head = "".join(
        f'<th scope="col" data-type="{kind}" aria-sort="none"><button type="button">{escaped(label)}</button></th>'
        for label, kind in headers
    )
    if not rows:
        body = f'<tr class="empty"><td colspan="{len(headers)}">{escaped(empty)}</td></tr>'
    else:
        body = "\n".join(
            "<tr>"
            + "".join(
                f'<td class="num" data-value="{escaped(value)}">{int(value):,}</td>' if kind == "number" else f"<td>{escaped(value)}</td>"
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
        [
            (r.department, "text"),
            (r.job, "text"),
            *((getattr(r, q), "number") for q in QUARTERS),
            (sum(getattr(r, q) for q in QUARTERS), "number"),
        ]
        for r in metrics.quarterly.itertuples(index=False)
    ]
    headers = [("department", "text"), ("job", "text"), *((q, "number") for q in QUARTERS), ("total", "number")]
    return _table(f"quarterly-table-{metrics.year}", headers, rows, f"No hires in {metrics.year}.")
