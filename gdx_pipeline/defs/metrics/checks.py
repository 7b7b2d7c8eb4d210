"""The metrics' asset checks. They run inside the metric assets (as `check_specs`), so every
materialization of a year is checked whichever way it was launched: metrics_job, the UI, or
declarative automation. Both read back what the asset published in the warehouse."""


import dagster as dg
import sqlalchemy as sa

from gdx_pipeline.core import metrics

QUARTER_TOTALS_CHECK = "quarter_totals_match_hires"
ABOVE_MEAN_CHECK = "listed_departments_are_above_the_mean"

quarter_totals_spec = dg.AssetCheckSpec(
    QUARTER_TOTALS_CHECK,
    asset="quarterly_hires",
    description="Q1 + Q2 + Q3 + Q4 stored for the year equals the year's hires in `hired_employees`.",
)

above_mean_spec = dg.AssetCheckSpec(
    ABOVE_MEAN_CHECK,
    asset="departments_above_mean_hires",
    description="Every department stored for the year hired more than the mean it is stored with, and the year has one mean.",
)


def check_quarter_totals(engine: sa.Engine, year: int) -> dg.AssetCheckResult:
    totals = metrics.stored_quarter_totals(engine, year)
    hires = metrics.hires_in_year(engine, year)
    stored = sum(totals.values())
    return dg.AssetCheckResult(
        check_name=QUARTER_TOTALS_CHECK,
        passed=stored == hires,
        metadata={
            "year": year,
            "hires_in_year": hires,
            "quarter_total": stored,
            "difference": stored - hires,
            **{q.lower(): total for q, total in totals.items()},
        },
    )


def check_above_mean(engine: sa.Engine, year: int) -> dg.AssetCheckResult:
    stored = metrics.stored_departments_above_mean(engine, year)
    not_above = stored[stored["hired"] <= stored["mean_hired"]]
    means = sorted(set(stored["mean_hired"].round(9)))
    return dg.AssetCheckResult(
        check_name=ABOVE_MEAN_CHECK,
        passed=not_above.empty and len(means) <= 1,
        metadata={
            "year": year,
            "departments_listed": len(stored),
            "not_above_mean_count": len(not_above),
            "distinct_means": len(means),
            "mean_hired": float(means[0]) if len(means) == 1 else None,
            "not_above_mean": dg.MetadataValue.json(not_above[["id", "department", "hired", "mean_hired"]].to_dict("records")),
        },
    )
