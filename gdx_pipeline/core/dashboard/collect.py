"""Reading the dashboard's data from the warehouse: the one module of the dashboard that queries
the database. Every year with hires is computed now, with the same metric functions the assets and
the API use."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from gdx_pipeline.core.dashboard.data import DashboardData, YearMetrics
from gdx_pipeline.core.metrics import departments_above_mean, hiring_year, quarterly_hires_by_id, years_with_hires
from gdx_pipeline.core.provenance import read_provenance
from gdx_pipeline.core.warehouse import data_tables, quarantined_files, rejected_rows
from gdx_pipeline.dictionary import TABLES


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
