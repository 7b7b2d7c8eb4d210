"""The stakeholders' hiring dashboard: one self-contained HTML file for every hiring year.

It opens offline and from a file: styles, the script and the charts (SVG drawn here) are
inline, nothing is fetched. Every year is rendered on the server with all its numbers in the
markup; the script only switches the year shown (a menu, or `#2021` in the address), sorts and
filters tables. Without JavaScript every year is shown, one after another.

Beside the numbers it says what they leave out (rows rejected at load, counted over all loads
because a rejected row often has no valid date to place it in a year) and where they come from
(the files, API batches and restores in the ingestion ledger), so nobody mistakes the demo
sample for the real data.

One idea per module:

- `collect`: the only one that reads the warehouse, into `data`'s shapes.
- `data`: what the page shows, shaped per year (`YearMetrics`) and as a whole (`DashboardData`).
- `page`: the HTML page, `template.html` filled in; `year_panel` (one year), `charts` (the SVG),
  `sources` (what is left out, where the numbers come from) and `text` (escaping, times) feed it.
- `writing`: the file in the reports folder, written atomically.

The names below are the package's public interface; import them from here.
"""

from gdx_pipeline.core.dashboard.charts import (
    ABOVE_COLOUR,
    BELOW_COLOUR,
    LABEL_CHARS,
    PREVIOUS_COLOUR,
    QUARTER_COLOURS,
    short_label,
)
from gdx_pipeline.core.dashboard.collect import collect_dashboard_data
from gdx_pipeline.core.dashboard.data import DashboardData, YearMetrics
from gdx_pipeline.core.dashboard.page import render_dashboard
from gdx_pipeline.core.dashboard.writing import DASHBOARD_FILE, dashboard_path, write_dashboard

__all__ = [
    "ABOVE_COLOUR",
    "BELOW_COLOUR",
    "DASHBOARD_FILE",
    "LABEL_CHARS",
    "PREVIOUS_COLOUR",
    "QUARTER_COLOURS",
    "DashboardData",
    "YearMetrics",
    "collect_dashboard_data",
    "dashboard_path",
    "render_dashboard",
    "short_label",
    "write_dashboard",
]
