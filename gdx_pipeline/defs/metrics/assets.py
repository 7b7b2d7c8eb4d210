"""Hiring metrics as year-partitioned assets, downstream of the three table assets.

`hiring_years` keeps one dynamic partition per year that has hires. Every metric asset carries
`AutomationCondition.eager()`: after a load updates `departments`, `jobs` or `hired_employees`
(or a new year's partition appears), the automation sensor requests the affected years, and
each year's metrics and dashboard run together in one run per year. The metrics write to the
warehouse (`metric_*` tables), to CSV under `reports/`, and to the asset's metadata (markdown
table and a chart the UI renders).
"""

import base64
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from gdx_pipeline.core import dashboard, metrics
from gdx_pipeline.defs.metrics.checks import above_mean_spec, check_above_mean, check_quarter_totals, quarter_totals_spec
from gdx_pipeline.defs.metrics.partitions import hiring_year_partitions, year_of_run
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource
from gdx_pipeline.dictionary import TABLES

METRICS_GROUP = "metrics"
PREVIEW_ROWS = 25

refresh_after_loads = dg.AutomationCondition.eager()
table_assets = [dg.AssetKey(name) for name in TABLES]


def _column_schema(table: sa.Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=c.name, type=str(c.type).lower(), description=c.comment, constraints=dg.TableColumnConstraints(nullable=bool(c.nullable)))
            for c in table.columns
        ]
    )


def _markdown(frame: pd.DataFrame, empty: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(empty if frame.empty else frame.to_markdown(index=False))


def _chart(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG inlined as a data URI in markdown: the Dagster UI renders it on the asset page."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


@dg.asset(
    group_name=METRICS_GROUP,
    kinds={"sql"},
    deps=["hired_employees"],
    automation_condition=refresh_after_loads,
    description="The hiring years present in `hired_employees`, with their hire counts. Adds a `hiring_year` "
    "partition for each new year, so the metric assets below gain that year automatically.",
)
def hiring_years(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    years = metrics.years_with_hires(warehouse.engine())
    known = set(context.instance.get_dynamic_partitions(hiring_year_partitions.name))
    added = [str(year) for year in sorted(years) if str(year) not in known]
    if added:
        context.instance.add_dynamic_partitions(hiring_year_partitions.name, added)
        context.log.info(f"added hiring_year partitions: {', '.join(added)}")
    return dg.MaterializeResult(
        metadata={
            "years": _markdown(pd.DataFrame({"year": list(years), "hires": list(years.values())}), "_no hires yet_"),
            "years_added": dg.MetadataValue.json(added),
            "year_count": len(years),
        }
    )


@dg.asset(
    partitions_def=hiring_year_partitions,
    group_name=METRICS_GROUP,
    kinds={"sql", "csv"},
    deps=table_assets,
    automation_condition=refresh_after_loads,
    check_specs=[quarter_totals_spec],
    description="For each department and job with at least one hire in the year, the employees hired in Q1, Q2, Q3 "
    "and Q4 (UTC), ordered by department, then job. Stored in `metric_quarterly_hires` and `reports/quarterly_hires_<year>.csv`.",
    metadata={"dagster/table_name": metrics.metric_quarterly_hires.name, "dagster/column_schema": _column_schema(metrics.metric_quarterly_hires)},
)
def quarterly_hires(context: dg.AssetExecutionContext, warehouse: WarehouseResource, data_folder: DataFolderResource) -> dg.MaterializeResult:
    year = year_of_run(context)
    engine = warehouse.engine()
    metrics.ensure_metric_tables(engine)
    frame = metrics.quarterly_hires_by_id(engine, year)
    metrics.store_quarterly_hires(engine, year, frame, datetime.now(UTC))
    published = frame[metrics.QUARTERLY_COLUMNS]
    csv_path = metrics.write_csv_report(published, metrics.quarterly_hires_csv_path(data_folder.folders().reports, year))
    by_department = dashboard.hires_by_department(frame)
    totals = {q.lower(): int(frame[q].sum()) for q in metrics.QUARTERS}
    return dg.MaterializeResult(
        metadata={
            "year": year,
            "dagster/row_count": len(frame),
            "hires": sum(totals.values()),
            **totals,
            "by_department": _markdown(by_department.drop(columns="id"), f"_no hires in {year}_"),
            "preview": _markdown(published.head(PREVIEW_ROWS), f"_no hires in {year}_"),
            "chart": _chart(dashboard.quarterly_chart_png(by_department, year), f"hires per quarter by department, {year}"),
            "csv": dg.MetadataValue.path(str(csv_path)),
        },
        check_results=[check_quarter_totals(engine, year)],
    )


@dg.asset(
    partitions_def=hiring_year_partitions,
    group_name=METRICS_GROUP,
    kinds={"sql", "csv"},
    deps=table_assets,
    automation_condition=refresh_after_loads,
    check_specs=[above_mean_spec],
    description="Id, name and hires of every department that hired more than the year's mean hires per department "
    "(the mean taken over departments with at least one hire that year), most hires first, ties by name. Stored in "
    "`metric_departments_above_mean` and `reports/departments_above_mean_hires_<year>.csv`.",
    metadata={
        "dagster/table_name": metrics.metric_departments_above_mean.name,
        "dagster/column_schema": _column_schema(metrics.metric_departments_above_mean),
    },
)
def departments_above_mean_hires(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, data_folder: DataFolderResource
) -> dg.MaterializeResult:
    year = year_of_run(context)
    engine = warehouse.engine()
    metrics.ensure_metric_tables(engine)
    frame, mean = metrics.departments_above_mean(engine, year)
    metrics.store_departments_above_mean(engine, year, frame, mean, datetime.now(UTC))
    csv_path = metrics.write_csv_report(frame, metrics.departments_above_mean_csv_path(data_folder.folders().reports, year))
    by_department = metrics.hires_per_department(engine, year)
    return dg.MaterializeResult(
        metadata={
            "year": year,
            "dagster/row_count": len(frame),
            "mean_hired": round(mean, 4) if mean is not None else None,
            "departments_hiring": len(by_department),
            "table": _markdown(frame, f"_no hires in {year}_" if mean is None else "_no department above the mean_"),
            "chart": _chart(dashboard.above_mean_chart_png(by_department, mean, year), f"departments against the mean, {year}"),
            "csv": dg.MetadataValue.path(str(csv_path)),
        },
        check_results=[check_above_mean(engine, year)],
    )


@dg.asset(
    partitions_def=hiring_year_partitions,
    group_name=METRICS_GROUP,
    kinds={"html"},
    deps=[quarterly_hires, departments_above_mean_hires, "rejected_rows"],
    automation_condition=refresh_after_loads,
    description="One self-contained HTML file per year, `reports/hiring_dashboard_<year>.html`, that opens offline: both "
    "metrics as sortable tables and charts, the year, when the data was loaded, and how many rows were rejected.",
)
def hiring_dashboard(context: dg.AssetExecutionContext, warehouse: WarehouseResource, data_folder: DataFolderResource) -> dg.MaterializeResult:
    year = year_of_run(context)
    data = dashboard.collect_dashboard_data(warehouse.engine(), year)
    path = dashboard.dashboard_path(data_folder.folders().reports, year)
    metrics.write_text_atomically(path, dashboard.render_dashboard(data))
    return dg.MaterializeResult(
        metadata={
            "year": year,
            "path": dg.MetadataValue.path(str(path)),
            "url": dg.MetadataValue.url(path.as_uri()),
            "size_bytes": path.stat().st_size,
            "hires": data.hires,
            "rows_rejected": data.rejected,
            "data_loaded_at": dg.MetadataValue.timestamp(data.loaded_at) if data.loaded_at else None,
        }
    )


metrics_assets = [hiring_years, quarterly_hires, departments_above_mean_hires, hiring_dashboard]
