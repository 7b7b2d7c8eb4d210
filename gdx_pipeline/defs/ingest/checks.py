"""Asset checks on the loaded tables: the dictionary still holds, ids are unique, no employee
points at a missing department or job, and row counts agree with the ingestion ledger.

`matches_dictionary` and `no_orphans` are blocking: when one fails, nothing downstream of the
table runs in that run, and automation computes no metric from it until it passes again. They
run with every load of the table (their asset's run), and by automation after a write made
outside a run (an API batch), so the metrics never wait on a check nobody will run.
"""


import dagster as dg
import sqlalchemy as sa

from gdx_pipeline.core.ledger import ledger_totals
from gdx_pipeline.core.rule_failures import CHECK_CHUNK_ROWS, read_table_frames, stored_rows_failures  # noqa: F401  (older imports)
from gdx_pipeline.core.warehouse import data_tables
from gdx_pipeline.defs.resources import WarehouseResource
from gdx_pipeline.dictionary import TABLES, TableSpec

MATCHES_DICTIONARY = "matches_dictionary"
NO_ORPHANS = "no_orphans"
# Evaluated by metrics_automation_sensor: once after each materialization the check has not seen
# (a runless one, from the API; a load's run has run it already), never while the table is written.
check_after_unchecked_writes = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after a write it has not checked")


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
        failures = stored_rows_failures(warehouse.engine(), spec)
        return dg.AssetCheckResult(
            passed=failures.passed,
            metadata={
                "rows_checked": failures.rows_checked,
                "failing_rows": failures.failing_rows,
                "failures_by_rule": dg.MetadataValue.json(failures.by_rule),
            },
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
            inserted, deleted = ledger_totals(conn, spec.name)
        expected = inserted - deleted
        return dg.AssetCheckResult(
            passed=rows == expected,
            metadata={"rows": rows, "ledger_inserted": inserted, "ledger_deleted": deleted, "difference": rows - expected},
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
