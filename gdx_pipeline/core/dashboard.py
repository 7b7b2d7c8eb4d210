"""How the hiring metrics are shown: PNG charts for the Dagster UI, and one self-contained HTML
dashboard per year for stakeholders.

The dashboard works offline and from a file: styles, the sorting script and the charts (SVG
drawn here) are inline, nothing is fetched. It is rendered on the server with every number in
the markup, so it reads without JavaScript; the script only sorts and filters the tables.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from string import Template

import pandas as pd
import sqlalchemy as sa
from matplotlib.figure import Figure

from gdx_pipeline.core.metrics import (
    QUARTERS,
    quarterly_hires_by_id,
    departments_above_mean,
    hiring_year,
    write_text_atomically,
)
from gdx_pipeline.core.warehouse import data_tables, ingestion_ledger, quarantined_files, rejected_rows
from gdx_pipeline.dictionary import TABLES

QUARTER_COLOURS = ("#9ecae1", "#4292c6", "#2171b5", "#08306b")
ABOVE_COLOUR = "#e6550d"
BELOW_COLOUR = "#bdbdbd"
LABEL_CHARS = 30


@dataclass
class DashboardData:
    """Everything the dashboard shows for one year, read in one place."""

    year: int
    quarterly: pd.DataFrame  # department_id, department, job_id, job, Q1..Q4
    above_mean: pd.DataFrame  # id, department, hired
    mean: float | None
    generated_at: datetime
    loaded_at: datetime | None = None
    rows_by_table: dict[str, int] = field(default_factory=dict)
    rejected_by_table: dict[str, int] = field(default_factory=dict)
    quarantined_files: int = 0

    @property
    def by_department(self) -> pd.DataFrame:
        """Hires per department and quarter (every department that hired), by name then id."""
        return hires_by_department(self.quarterly)

    @property
    def hires(self) -> int:
        return int(self.quarterly[list(QUARTERS)].to_numpy().sum())

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_table.values())


def hires_by_department(quarterly: pd.DataFrame) -> pd.DataFrame:
    """Columns id, department, Q1..Q4, hired, summed over jobs from the quarterly metric."""
    columns = ["id", "department", *QUARTERS, "hired"]
    if quarterly.empty:
        return pd.DataFrame(columns=columns)
    grouped = quarterly.groupby(["department_id", "department"], sort=False)[list(QUARTERS)].sum().reset_index()
    grouped = grouped.rename(columns={"department_id": "id"})
    grouped["hired"] = grouped[list(QUARTERS)].sum(axis=1)
    # quarterly is already ordered by department name, then id; groupby(sort=False) keeps that order.
    return grouped[columns]


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def collect_dashboard_data(engine: sa.Engine, year: int, *, generated_at: datetime | None = None) -> DashboardData:
    """The year's metrics computed now, plus what the reader needs to trust them: when the data
    was last loaded, how many rows the warehouse holds and how many were rejected."""
    year = hiring_year(year)
    quarterly = quarterly_hires_by_id(engine, year)
    above, mean = departments_above_mean(engine, year)
    with engine.connect() as conn:
        loaded_at = conn.execute(sa.select(sa.func.max(ingestion_ledger.c.finished_at))).scalar_one()
        rows = {name: conn.execute(sa.select(sa.func.count()).select_from(data_tables[name])).scalar_one() for name in TABLES}
        rejected = dict(conn.execute(sa.select(rejected_rows.c.table_name, sa.func.count()).group_by(rejected_rows.c.table_name)).all())
        quarantined = conn.execute(sa.select(sa.func.count()).select_from(quarantined_files)).scalar_one()
    if isinstance(loaded_at, str):  # SQLite may hand an aggregate's timestamp back as text
        loaded_at = datetime.fromisoformat(loaded_at)
    return DashboardData(
        year=year,
        quarterly=quarterly,
        above_mean=above,
        mean=mean,
        generated_at=generated_at or datetime.now(UTC),
        loaded_at=_as_utc(loaded_at),
        rows_by_table=rows,
        rejected_by_table={name: int(rejected.get(name, 0)) for name in TABLES},
        quarantined_files=int(quarantined),
    )


# --- PNG charts for the Dagster UI --------------------------------------------------------


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def quarterly_chart_png(by_department: pd.DataFrame, year: int) -> bytes:
    """Stacked horizontal bars: hires per quarter for each department."""
    figure = Figure(figsize=(8, 0.35 * max(len(by_department), 3) + 1))
    axes = figure.add_subplot()
    labels = [_short(name) for name in by_department["department"]][::-1]
    left = [0] * len(by_department)
    for quarter, colour in zip(QUARTERS, QUARTER_COLOURS):
        values = [int(v) for v in by_department[quarter]][::-1]
        axes.barh(labels, values, left=left, color=colour, label=quarter)
        left = [a + b for a, b in zip(left, values)]
    axes.set_title(f"Hires per quarter by department, {year} (UTC)")
    axes.set_xlabel("employees hired")
    if len(by_department):
        axes.legend(ncols=4, loc="lower right", frameon=False)
    else:
        axes.text(0.5, 0.5, f"no hires in {year}", ha="center", va="center", transform=axes.transAxes)
    return _png(figure)


def above_mean_chart_png(by_department: pd.DataFrame, mean: float | None, year: int) -> bytes:
    """Every hiring department's hires against the mean line; those above it highlighted."""
    ranked = _ranked(by_department)
    figure = Figure(figsize=(8, 0.35 * max(len(ranked), 3) + 1))
    axes = figure.add_subplot()
    labels = [_short(name) for name in ranked["department"]][::-1]
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


def _ranked(by_department: pd.DataFrame) -> pd.DataFrame:
    """Most hires first; ties by name, then id (the metric's own order)."""
    if by_department.empty:
        return by_department
    return by_department.sort_values(["hired", "department", "id"], ascending=[False, True, True], kind="stable")


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


# --- The HTML dashboard -------------------------------------------------------------------


def dashboard_path(reports: Path, year: int) -> Path:
    """Where the dashboard for `year` lives in the reports folder."""
    return reports / f"hiring_dashboard_{hiring_year(year)}.html"


def write_dashboard(engine: sa.Engine, reports: Path, year: int) -> Path:
    """Compute, render and (atomically) write the year's dashboard; returns its path."""
    return write_text_atomically(dashboard_path(reports, year), render_dashboard(collect_dashboard_data(engine, year)))


def render_dashboard(data: DashboardData) -> str:
    template = Template(files("gdx_pipeline.core").joinpath("dashboard_template.html").read_text(encoding="utf-8"))
    by_department = data.by_department
    departments_hiring = len(by_department)
    return template.substitute(
        year=data.year,
        generated_at=_when(data.generated_at),
        loaded_at=_when(data.loaded_at) if data.loaded_at else "never (the warehouse is empty)",
        summary=_summary_cards(data, departments_hiring),
        excluded=_excluded_note(data),
        quarter_chart=_quarter_chart_svg(by_department, data.year),
        quarter_totals=_quarter_totals(data),
        mean_chart=_mean_chart_svg(by_department, data.mean, data.year),
        mean_caption=_mean_caption(data, departments_hiring),
        above_mean_table=_above_mean_table(data),
        quarterly_table=_quarterly_table(data),
        quarterly_rows=len(data.quarterly),
        data_json=_script_json({"year": data.year, "mean": data.mean, "hires": data.hires}),
    )


def _when(value: datetime) -> str:
    return _as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _script_json(value: object) -> str:
    """JSON safe inside a <script> element: no `</script>` or `<!--` can close it early."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _mean_text(mean: float | None) -> str:
    return "—" if mean is None else f"{mean:.2f}"


def _summary_cards(data: DashboardData, departments_hiring: int) -> str:
    cards = [
        ("Hiring year", str(data.year), "quarters in UTC"),
        ("Employees hired", f"{data.hires:,}", f"in {data.year}"),
        ("Departments hiring", f"{departments_hiring:,}", f"with at least one hire in {data.year}"),
        ("Mean hires per department", _mean_text(data.mean), "over the departments hiring"),
        ("Rows rejected at load", f"{data.rejected:,}", "not counted in any metric"),
    ]
    return "\n".join(
        f'<div class="card" data-card="{_e(label)}"><div class="card-label">{_e(label)}</div>'
        f'<div class="card-value">{_e(value)}</div><div class="card-note">{_e(note)}</div></div>'
        for label, value, note in cards
    )


def _excluded_note(data: DashboardData) -> str:
    rows = ", ".join(f"{_e(name)} {count:,}" for name, count in data.rows_by_table.items())
    rejected = ", ".join(f'<span data-rejected-table="{_e(name)}">{_e(name)} {count:,}</span>' for name, count in data.rejected_by_table.items())
    quarantined = (
        f" {data.quarantined_files:,} file(s) could not be read at all and were quarantined."
        if data.quarantined_files
        else " No file was quarantined."
    )
    return (
        f"<p>The warehouse holds: {rows}. "
        f'<strong id="rejected-total">{data.rejected:,} row(s) were rejected</strong> at load because they broke the data '
        f"dictionary (blank or invalid fields, unknown department or job) and are left out of every number here — "
        f"rejected by table: {rejected}.{quarantined} Each rejected row is kept with its reasons in the "
        "<code>rejected_rows</code> table and in <code>rejects/</code>.</p>"
    )


def _quarter_totals(data: DashboardData) -> str:
    totals = data.quarterly[list(QUARTERS)].sum() if len(data.quarterly) else pd.Series(0, index=list(QUARTERS))
    return " &middot; ".join(f'{q} <strong data-quarter-total="{q}">{int(totals[q]):,}</strong>' for q in QUARTERS)


def _mean_caption(data: DashboardData, departments_hiring: int) -> str:
    if data.mean is None:
        return f"Nobody was hired in {data.year}, so there is no mean and no department above it."
    return (
        f"Departments that hired more than the mean of <strong id=\"mean-value\">{data.mean:.2f}</strong> employees "
        f"per department in {data.year}, the mean taken over the {departments_hiring:,} department(s) with at least "
        f"one hire that year. Most hires first; ties by name."
    )


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


def _above_mean_table(data: DashboardData) -> str:
    rows = [[(r.id, "number"), (r.department, "text"), (r.hired, "number")] for r in data.above_mean.itertuples(index=False)]
    empty = f"No hires in {data.year}." if data.mean is None else "No department hired more than the mean."
    return _table("above-mean-table", [("id", "number"), ("department", "text"), ("hired", "number")], rows, empty)


def _quarterly_table(data: DashboardData) -> str:
    rows = [
        [(r.department, "text"), (r.job, "text"), *((getattr(r, q), "number") for q in QUARTERS), (sum(getattr(r, q) for q in QUARTERS), "number")]
        for r in data.quarterly.itertuples(index=False)
    ]
    headers = [("department", "text"), ("job", "text"), *((q, "number") for q in QUARTERS), ("total", "number")]
    return _table("quarterly-table", headers, rows, f"No hires in {data.year}.")


def _svg_text(x: float, y: float, text: str, anchor: str = "start", css: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{css}">{_e(text)}</text>'


def _quarter_chart_svg(by_department: pd.DataFrame, year: int) -> str:
    """Stacked horizontal bars, one per department, one segment per quarter."""
    if by_department.empty:
        return f'<p class="no-data">No hires in {year}.</p>'
    label_width, plot_width, bar, gap, top = 210, 520, 20, 8, 34
    largest = max(int(by_department["hired"].max()), 1)
    height = top + len(by_department) * (bar + gap) + 10
    parts = [
        f'<svg id="quarter-chart" role="img" viewBox="0 0 {label_width + plot_width + 60} {height}" '
        f'aria-label="Hires per quarter by department in {year}">'
    ]
    for i, (quarter, colour) in enumerate(zip(QUARTERS, QUARTER_COLOURS)):
        x = label_width + i * 70
        parts.append(f'<rect x="{x}" y="6" width="14" height="14" fill="{colour}"/>' + _svg_text(x + 19, 18, quarter, css="legend"))
    for row_index, row in enumerate(by_department.itertuples(index=False)):
        y = top + row_index * (bar + gap)
        parts.append(f"<g><title>{_e(row.department)}: {int(row.hired):,} hired</title>")
        parts.append(_svg_text(label_width - 8, y + bar * 0.72, _short(row.department), anchor="end", css="label"))
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
        parts.append(_svg_text(x + 6, y + bar * 0.72, f"{int(row.hired):,}", css="value") + "</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def _mean_chart_svg(by_department: pd.DataFrame, mean: float | None, year: int) -> str:
    """Every hiring department's hires as a bar, the mean as a dashed line; above it highlighted."""
    if by_department.empty or mean is None:
        return f'<p class="no-data">No hires in {year}.</p>'
    ranked = _ranked(by_department)
    label_width, plot_width, bar, gap, top = 210, 520, 20, 8, 46
    largest = max(int(ranked["hired"].max()), 1)
    height = top + len(ranked) * (bar + gap) + 10
    mean_x = label_width + plot_width * mean / largest
    parts = [
        f'<svg id="mean-chart" role="img" viewBox="0 0 {label_width + plot_width + 60} {height}" '
        f'aria-label="Hires per department in {year} against the mean of {mean:.2f}">',
        f'<rect x="{label_width}" y="6" width="14" height="14" fill="{ABOVE_COLOUR}"/>' + _svg_text(label_width + 19, 18, "above the mean", css="legend"),
        f'<rect x="{label_width + 140}" y="6" width="14" height="14" fill="{BELOW_COLOUR}"/>'
        + _svg_text(label_width + 159, 18, "at or below", css="legend"),
    ]
    for row_index, row in enumerate(ranked.itertuples(index=False)):
        y = top + row_index * (bar + gap)
        hired = int(row.hired)
        colour = ABOVE_COLOUR if hired > mean else BELOW_COLOUR
        width = plot_width * hired / largest
        parts.append(
            f"<g><title>{_e(row.department)}: {hired:,} hired ({'above' if hired > mean else 'not above'} the mean)</title>"
            + _svg_text(label_width - 8, y + bar * 0.72, _short(row.department), anchor="end", css="label")
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
