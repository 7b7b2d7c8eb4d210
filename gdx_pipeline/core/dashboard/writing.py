"""The dashboard file in the reports folder: where it lives, and writing it whole (computed,
rendered, then replaced atomically, so a reader never sees half a page)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from gdx_pipeline.core.dashboard.collect import collect_dashboard_data
from gdx_pipeline.core.dashboard.page import render_dashboard
from gdx_pipeline.core.metrics import write_text_atomically

DASHBOARD_FILE = "hiring_dashboard.html"


def dashboard_path(reports: Path) -> Path:
    """Where the dashboard lives in the reports folder."""
    return reports / DASHBOARD_FILE


def write_dashboard(engine: sa.Engine, reports: Path, year: int | None = None) -> Path:
    """Compute, render and (atomically) write the dashboard, opening on `year`; returns its path."""
    return write_text_atomically(dashboard_path(reports), render_dashboard(collect_dashboard_data(engine, year)))
