"""Asset checks on the loaded tables: the dictionary still holds, ids are unique, no employee
points at a missing department or job, and row counts agree with the ingestion ledger.

`matches_dictionary` and `no_orphans` are blocking: when one fails, nothing downstream of the
table runs in that run, and automation computes no metric from it until it passes again. They
run with every load of the table (their asset's run), and by automation after a write made
outside a run (an API batch), so the metrics never wait on a check nobody will run.
"""


import dagster as dg
import numpy as np
import pandas as pd
import pandera.pandas as pa
import sqlalchemy as sa

from gdx_pipeline.core.warehouse import data_tables, ingestion_ledger
from gdx_pipeline.defs.resources import WarehouseResource
from gdx_pipeline.dictionary import TABLES, TableSpec

CHECK_CHUNK_ROWS = 200_000
MATCHES_DICTIONARY = "matches_dictionary"
NO_ORPHANS = "no_orphans"
# Evaluated by metrics_automation_sensor: once after each materialization the check has not seen
# (a runless one, from the API; a load's run has run it already), never while the table is written.
check_after_unchecked_writes = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after a write it has not checked")


def read_table_frames(engine: sa.Engine, spec: TableSpec, chunk_rows: int = CHECK_CHUNK_ROWS):
    """The table in typed chunks (bounded memory), with timestamps as UTC whatever the engine."""
    table = data_tables[spec.name]
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            sa.select(table).order_by(table.c[spec.primary_key])
        )
        for rows in result.partitions(chunk_rows):
            frame = pd.DataFrame(rows, columns=spec.columns)
            for column in spec.columns:
                kind = spec.column_kind(column)
                if kind == "integer":
                    frame[column] = frame[column].astype("Int64")
                elif kind == "timestamp":
                    values = pd.to_datetime(frame[column], utc=True).dt.as_unit("us")
                    frame[column] = values
                else:
                    frame[column] = frame[column].astype("string")
            yield frame


def blocking_check(spec: TableSpec, name: str, description: str):  # noqa: ANN201 - a decorator
    """A check the metrics wait on: blocking, and run by automation after an unchecked write."""
    return dg.asset_check(
        asset=spec.name,
        name=name,
        blocking=True,
        automation_condition=check_after_unchecked_writes,
        description=f"{description} Blocking: nothing downstream runs, and no metric is computed, until it passes.",
    )


def build_table_checks(spec: TableSpec) -> list[dg.AssetChecksDefinition]:
    table = data_tables[spec.name]
    key = table.c[spec.primary_key]

    @blocking_check(spec, MATCHES_DICTIONARY, "Every stored row passes the data dictionary's Pandera model.")
    def matches_dictionary(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        failing_rows = 0
        rows = 0
        examples: dict[str, int] = {}
        for frame in read_table_frames(warehouse.engine(), spec):
            rows += len(frame)
            try:
                spec.schema.validate(frame, lazy=True)
            except pa.errors.SchemaErrors as errors:
                cases = errors.failure_cases
                failing_rows += cases["index"].dropna().nunique()
                for (column, check), count in cases.groupby(["column", "check"]).size().items():
                    examples[f"{column}: {check}"] = examples.get(f"{column}: {check}", 0) + int(count)
        return dg.AssetCheckResult(
            passed=failing_rows == 0,
            metadata={"rows_checked": rows, "failing_rows": failing_rows, "failures_by_rule": dg.MetadataValue.json(examples)},
        )

    @dg.asset_check(asset=spec.name, name="ids_unique", description=f"No two rows share an `{spec.primary_key}`.")
    def ids_unique(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.engine().connect() as conn:
            total, distinct = conn.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(key)))).one()
        return dg.AssetCheckResult(passed=total == distinct, metadata={"rows": total, "duplicate_count": total - distinct})

    @dg.asset_check(
        asset=spec.name,
        name="counts_match_ledger",
        description="The row count equals what the ingestion ledger says was inserted minus deleted.",
    )
    def counts_match_ledger(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.engine().connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            inserted, deleted = conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(ingestion_ledger.c.rows_inserted), 0),
                    sa.func.coalesce(sa.func.sum(ingestion_ledger.c.rows_deleted), 0),
                ).where(ingestion_ledger.c.table_name == spec.name)
            ).one()
        expected = int(inserted) - int(deleted)
        return dg.AssetCheckResult(
            passed=rows == expected, metadata={"rows": rows, "ledger_inserted": int(inserted), "ledger_deleted": int(deleted), "difference": rows - expected}
        )

    checks = [matches_dictionary, ids_unique, counts_match_ledger]
    if spec.foreign_keys:

        @blocking_check(spec, NO_ORPHANS, "Every foreign key points at an existing row.")
        def no_orphans(warehouse: WarehouseResource) -> dg.AssetCheckResult:
            orphans = {}
            with warehouse.engine().connect() as conn:
                for fk in spec.foreign_keys:
                    target = data_tables[fk.table]
                    missing = ~sa.exists().where(target.c[fk.target_column] == table.c[fk.column])
                    orphans[fk.column] = conn.execute(sa.select(sa.func.count()).select_from(table).where(missing)).scalar_one()
            return dg.AssetCheckResult(
                passed=not any(orphans.values()),
                metadata={"orphan_count": sum(orphans.values()), "orphans_by_column": dg.MetadataValue.json(orphans)},
            )

        checks.append(no_orphans)
    return checks


table_checks = [check for spec in TABLES.values() for check in build_table_checks(spec)]
blocking_check_keys = [key for check in table_checks for key in check.check_keys if key.name in (MATCHES_DICTIONARY, NO_ORPHANS)]
