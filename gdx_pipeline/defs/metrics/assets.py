"""Hiring metrics as year-partitioned assets, downstream of the three table assets, and the
dashboard that shows every year.

`hiring_years` keeps one dynamic partition per year that has hires; the metric assets depend on
it (it makes their partitions) without being refreshed by it. Every metric asset refreshes by
declarative automation after a load updates `departments`, `jobs` or `hired_employees`, and
nightly, but only while those tables pass their blocking checks (`matches_dictionary`,
`no_orphans`): a broken table stops the numbers instead of feeding them. Each year's metrics are
written to the warehouse (`metric_*` tables), to CSV under `reports/`, and to the asset's
metadata: numbers the Plots tab draws across years, tables, a chart, and the loads that fed them.
"""

import base64
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from gdx_pipeline.core import dashboard, metric_charts, metrics
from gdx_pipeline.core.provenance import read_provenance
from gdx_pipeline.defs.catalog import DASHBOARD_LOGIC, HR_ANALYTICS, METRICS_LOGIC, asset_tags, freshness_for_cron, source_version
from gdx_pipeline.defs.metrics.checks import above_mean_spec, check_above_mean, check_quarter_totals, quarter_totals_spec
from gdx_pipeline.defs.metrics.partitions import hiring_year_partitions, year_of_run
from gdx_pipeline.defs.provenance import provenance_metadata
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource
from gdx_pipeline.defs.retries import TRANSIENT_DATABASE_RETRY, retried_only_when_transient
from gdx_pipeline.dictionary import TABLES

METRICS_GROUP = "metrics"
PREVIEW_ROWS = 25
# Every year is recomputed nightly as well (after the default 02:00 backup): it heals a run that
# failed or a write that bypassed the pipeline, and gives the freshness policy a cadence to hold.
NIGHTLY_REFRESH_CRON = "30 3 * * *"

table_assets = [dg.AssetKey(name) for name in TABLES]

# Stricter than `all_deps_blocking_checks_passed()`, which also accepts a check requested in the
# same tick: that check runs in a run of its own, so the metrics could run before it fails.
_tables_pass_blocking_checks = dg.AutomationCondition.all_deps_match(
    dg.AutomationCondition.all_checks_match(dg.AutomationCondition.check_passed(), blocking_only=True)
).with_label("tables pass their blocking checks")
_nightly = (
    dg.AutomationCondition.cron_tick_passed(NIGHTLY_REFRESH_CRON, "UTC").since_last_handled() & ~dg.AutomationCondition.in_progress()
).with_label(f"nightly ({NIGHTLY_REFRESH_CRON} UTC)")
# hiring_years makes the partitions; a year appearing is `newly_missing`, so its updating must
# not recompute every other year.
metric_refresh = (dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets("hiring_years")) | _nightly) & _tables_pass_blocking_checks
# The dashboard shows every year: it waits until no year is being (or about to be) recomputed,
# and a year that failed does not hold it back (unlike `eager`, which waits for every partition).
dashboard_refresh = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
    & ~dg.AutomationCondition.in_progress()
).with_label("after every year's metrics settle")
metrics_freshness = freshness_for_cron(NIGHTLY_REFRESH_CRON)


def column_kind(column: sa.Column) -> str:
    """The column's type in the words the table assets use (`TableSpec.column_kind`), plus 'float'."""
    if isinstance(column.type, sa.DateTime):
        return "timestamp"
    if isinstance(column.type, sa.Integer):
        return "integer"
    if isinstance(column.type, sa.Float):
        return "float"
    return "text"


def metric_column_schema(table: sa.Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=column_kind(c),
                description=c.comment,
                constraints=dg.TableColumnConstraints(nullable=bool(c.nullable), other=["primary key"] if c.primary_key else []),
            )
            for c in table.columns
        ]
    )


def _markdown(frame: pd.DataFrame, empty: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(empty if frame.empty else frame.to_markdown(index=False))


def _chart(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG inlined as a data URI in markdown: the Dagster UI renders it on the asset page."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _sources(engine: sa.Engine) -> dict[str, object]:
    """Which loads of the three tables the numbers were computed from."""
    return provenance_metadata(read_provenance(engine, TABLES))


_metric_asset = {
    "group_name": METRICS_GROUP,
    "owners": [HR_ANALYTICS],
    "retry_policy": TRANSIENT_DATABASE_RETRY,
}


@dg.asset(
    **_metric_asset,
    kinds={"sql"},
    tags=asset_tags("metrics", pii=False),
    code_version=source_version(*METRICS_LOGIC),
    deps=["hired_employees"],
    automation_condition=dg.AutomationCondition.eager() & _tables_pass_blocking_checks,
    description="The hiring years present in `hired_employees`, with their hire counts. Adds a `hiring_year` "
    "partition for each new year, so the metric assets downstream gain that year automatically.",
)
def hiring_years(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with retried_only_when_transient():
        years = metrics.years_with_hires(warehouse.engine())
    known = set(context.instance.get_dynamic_partitions(hiring_year_partitions.name))
    added = [str(year) for year in sorted(years) if str(year) not in known]
    if added:
        context.instance.add_dynamic_partitions(hiring_year_partitions.name, added)
        context.log.info(f"added hiring_year partitions: {', '.join(added)}")
    metadata: dict[str, object] = {
        "years": _markdown(pd.DataFrame({"year": list(years), "hires": list(years.values())}), "_no hires yet_"),
        "years_added": dg.MetadataValue.json(added),
        "year_count": dg.MetadataValue.int(len(years)),
        "hires": dg.MetadataValue.int(sum(years.values())),
    }
    if years:
        metadata["latest_year"] = dg.MetadataValue.int(max(years))
    return dg.MaterializeResult(metadata=metadata)


# What both metrics of a hiring year share: their partitions, their inputs and when they refresh.
_yearly_metric = {
    **_metric_asset,
    "partitions_def": hiring_year_partitions,
    "kinds": {"sql", "csv"},
    "tags": asset_tags("metrics", pii=False),
    "code_version": source_version(*METRICS_LOGIC),
    "deps": [*table_assets, hiring_years],
    "automation_condition": metric_refresh,
    "freshness_policy": metrics_freshness,
}


@dg.asset(
    **_yearly_metric,
    check_specs=[quarter_totals_spec],
    description="For each department and job with at least one hire in the year, the employees hired in Q1, Q2, Q3 "
    "and Q4 (UTC), ordered by department, then job. Stored in `metric_quarterly_hires` and `reports/quarterly_hires_<year>.csv`.",
    metadata={
        "dagster/table_name": metrics.metric_quarterly_hires.name,
        "dagster/column_schema": metric_column_schema(metrics.metric_quarterly_hires),
    },
)
def quarterly_hires(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, data_folder: DataFolderResource
) -> dg.MaterializeResult:
    year = year_of_run(context)
    with retried_only_when_transient():
        engine = warehouse.engine()
        metrics.ensure_metric_tables(engine)
        frame = metrics.quarterly_hires_by_id(engine, year)
        metrics.store_quarterly_hires(engine, year, frame, datetime.now(UTC))
        published = frame[metrics.QUARTERLY_COLUMNS]
        csv_path = metrics.write_csv_report(published, metrics.quarterly_hires_csv_path(data_folder.folders().reports, year))
        by_department = metrics.ranked_by_hires(metrics.hires_by_department(frame))
        totals = {q.lower(): dg.MetadataValue.int(int(frame[q].sum())) for q in metrics.QUARTERS}
        return dg.MaterializeResult(
            metadata={
                "year": dg.MetadataValue.int(year),
                "dagster/row_count": dg.MetadataValue.int(len(frame)),
                "hires": dg.MetadataValue.int(sum(t.value for t in totals.values())),
                **totals,
                "departments_hiring": dg.MetadataValue.int(len(by_department)),
                "jobs_hiring": dg.MetadataValue.int(frame["job_id"].nunique()),
                "by_department": _markdown(by_department.drop(columns="id"), f"_no hires in {year}_"),
                "chart": _chart(metric_charts.quarterly_chart_png(by_department, year), f"hires per quarter by department, {year}"),
                "preview": _markdown(published.head(PREVIEW_ROWS), f"_no hires in {year}_"),
                "csv": dg.MetadataValue.path(str(csv_path)),
                **_sources(engine),
            },
            check_results=[check_quarter_totals(engine, year)],
        )


@dg.asset(
    **_yearly_metric,
    check_specs=[above_mean_spec],
    description="Id, name and hires of every department that hired more than the year's mean hires per department "
    "(the mean taken over departments with at least one hire that year), most hires first, ties by name. Stored in "
    "`metric_departments_above_mean` and `reports/departments_above_mean_hires_<year>.csv`.",
    metadata={
        "dagster/table_name": metrics.metric_departments_above_mean.name,
        "dagster/column_schema": metric_column_schema(metrics.metric_departments_above_mean),
    },
)
def departments_above_mean_hires(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, data_folder: DataFolderResource
) -> dg.MaterializeResult:
    year = year_of_run(context)
    with retried_only_when_transient():
        engine = warehouse.engine()
        metrics.ensure_metric_tables(engine)
        frame, mean = metrics.departments_above_mean(engine, year)
        metrics.store_departments_above_mean(engine, year, frame, mean, datetime.now(UTC))
        csv_path = metrics.write_csv_report(frame, metrics.departments_above_mean_csv_path(data_folder.folders().reports, year))
        by_department = metrics.hires_per_department(engine, year)
        metadata: dict[str, object] = {
            "year": dg.MetadataValue.int(year),
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            "departments_above_mean": dg.MetadataValue.int(len(frame)),
            "departments_hiring": dg.MetadataValue.int(len(by_department)),
            "hires": dg.MetadataValue.int(int(by_department["hired"].sum())),
        }
        if mean is not None:  # no hires, no mean: the Plots tab shows a gap rather than a made-up 0
            metadata["mean_hired"] = dg.MetadataValue.float(round(mean, 4))
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "table": _markdown(frame, f"_no hires in {year}_" if mean is None else "_no department above the mean_"),
                "chart": _chart(metric_charts.above_mean_chart_png(by_department, mean, year), f"departments against the mean, {year}"),
                "csv": dg.MetadataValue.path(str(csv_path)),
                **_sources(engine),
            },
            check_results=[check_above_mean(engine, year)],
        )


@dg.asset(
    **_metric_asset,
    kinds={"html"},
    tags=asset_tags("report", pii=False),
    code_version=source_version(*DASHBOARD_LOGIC),
    deps=[quarterly_hires, departments_above_mean_hires, "rejected_rows"],
    automation_condition=dashboard_refresh,
    freshness_policy=metrics_freshness,
    description="`reports/hiring_dashboard.html`: one self-contained HTML file that opens offline, with every hiring year "
    "behind a year menu: hires per quarter across years, each year beside the year before, departments ranked by hires "
    "against the mean, both metrics as sortable tables, the rows rejected at load (all loads), and the files and API "
    "batches that fed the warehouse.",
)
def hiring_dashboard(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, data_folder: DataFolderResource
) -> dg.MaterializeResult:
    with retried_only_when_transient():
        data = dashboard.collect_dashboard_data(warehouse.engine())
    path = dashboard.dashboard_path(data_folder.folders().reports)
    metrics.write_text_atomically(path, dashboard.render_dashboard(data))
    context.log.info(f"dashboard of {len(data.years)} year(s) written to {path}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "url": dg.MetadataValue.url(path.as_uri()),
            "size_bytes": dg.MetadataValue.int(path.stat().st_size),
            "years": dg.MetadataValue.json(list(data.years)),
            "year_count": dg.MetadataValue.int(len(data.years)),
            "hires": dg.MetadataValue.int(sum(m.hires for m in data.years.values())),
            "rows_rejected_all_loads": dg.MetadataValue.int(data.rejected),
            **provenance_metadata(data.provenance),
        }
    )


metrics_assets = [hiring_years, quarterly_hires, departments_above_mean_hires, hiring_dashboard]
