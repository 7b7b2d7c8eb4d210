"""The dashboard as one self-contained HTML page: the template (`template.html` beside this
module) filled with every year's panel, the chart across years, the year menu, what is left out
and where the numbers come from, and the little data the script needs, made safe inside a
<script> element."""

from __future__ import annotations

import json
from importlib.resources import files
from string import Template

from gdx_pipeline.core.dashboard.charts import across_years_svg
from gdx_pipeline.core.dashboard.data import DashboardData
from gdx_pipeline.core.dashboard.sources import left_out_section, provenance_section
from gdx_pipeline.core.dashboard.text import change_text, escaped, utc_time
from gdx_pipeline.core.dashboard.year_panel import year_panel
from gdx_pipeline.core.metrics import QUARTERS


def render_dashboard(data: DashboardData) -> str:
    template = Template(files("gdx_pipeline.core.dashboard").joinpath("template.html").read_text(encoding="utf-8"))
    return template.substitute(
        year=data.selected_year,
        year_options=_year_options(data),
        generated_at=utc_time(data.generated_at),
        loaded_at=utc_time(data.loaded_at) if data.loaded_at else "never (the warehouse is empty)",
        across_years=_across_years(data),
        year_panels="\n".join(year_panel(data, year) for year in data.years),
        left_out=left_out_section(data),
        provenance=provenance_section(data.provenance),
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


def _script_json(value: object) -> str:
    """JSON safe inside a <script> element: no `</script>` or `<!--` can close it early."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


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
            f'<td class="num">{escaped(change_text(metrics.hires, previous.hires))}</td></tr>'
        )
    head = "".join(f'<th scope="col" class="num">{q}</th>' for q in QUARTERS)
    table = (
        f'<table id="years-table"><thead><tr><th scope="col">year</th>{head}<th scope="col" class="num">total</th>'
        f'<th scope="col" class="num">vs. year before</th></tr></thead><tbody>\n' + "\n".join(rows) + "\n</tbody></table>"
    )
    return across_years_svg(data) + table
