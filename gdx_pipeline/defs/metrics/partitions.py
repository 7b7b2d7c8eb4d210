"""The `hiring_year` partitions (one per year with hires, added by `hiring_years`) and the one-line
failure of a metrics step run without a hiring year, saying what to pass and which years exist.

Dagster runs a partitioned asset job launched without a partition (`dg launch --job metrics_job`)
and only the step finds out; it offers no hook that refuses such a run before its steps start
(dagster-io/dagster#8354). So the metric assets ask here first.
"""

import dagster as dg

from gdx_pipeline.core import metrics

hiring_year_partitions = dg.DynamicPartitionsDefinition(name="hiring_year")


def known_hiring_years(instance: dg.DagsterInstance) -> list[str]:
    return sorted(instance.get_dynamic_partitions(hiring_year_partitions.name))


def years_phrase(years: list[str]) -> str:
    """`hiring_year partitions: 2021, 2022`, or how to get the first one."""
    if not years:
        return "no hiring_year partition yet: load hired_employees, then materialize hiring_years"
    return f"hiring_year partitions: {', '.join(years)}"


def missing_year_message(years: list[str]) -> str:
    example = years[-1] if years else "2021"
    return (
        f"this metric is computed per hiring year and the run has none: launch it with a partition, "
        f"e.g. `dg launch --job metrics_job --partition {example}` or `gdx metrics {example}` ({years_phrase(years)})"
    )


def year_of_run(context: dg.AssetExecutionContext) -> int:
    """The run's hiring year; a run without a partition, or with a key that is no year (added by
    hand), fails the step with a `dg.Failure` that says what to pass."""
    if not context.has_partition_key:
        raise dg.Failure(description=missing_year_message(known_hiring_years(context.instance)), allow_retries=False)
    try:
        return metrics.hiring_year(context.partition_key)
    except metrics.InvalidYearError as error:
        raise dg.Failure(description=f"hiring_year partition {context.partition_key!r}: {error}", allow_retries=False) from None
