"""Ingestion assets: landing files → the three dictionary tables → the reject log.

Each table asset applies the landing files of its table (one transaction per file) and reports
what each file did. Files that cannot be read are quarantined without stopping the others; the
`quarantined_files` asset, last in the run, then fails the run so somebody looks.
"""


from collections import Counter

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from gdx_pipeline.core.csv_source import UnreadableFileError, table_for_file
from gdx_pipeline.core.ingestion import FileOutcome, ingest_file, ingest_landing, pending_files
from gdx_pipeline.core.provenance import read_provenance
from gdx_pipeline.core.warehouse import data_tables, quarantined_files as quarantined_files_table, rejected_rows as rejected_rows_table
from gdx_pipeline.defs.catalog import DATA_ENGINEERING, INGEST_LOGIC, PERSONAL_DATA_TABLES, asset_tags, source_version
from gdx_pipeline.defs.provenance import provenance_metadata
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource
from gdx_pipeline.dictionary import TABLES, TableSpec, excerpt

INGEST_GROUP = "ingest"
PREVIEW_ROWS = 10
INGEST_CODE_VERSION = source_version(*INGEST_LOGIC)


def table_column_schema(spec: TableSpec) -> dg.TableSchema:
    """The dictionary as Dagster's column schema, shown on the asset page."""
    columns = []
    for name, column in spec.schema.columns.items():
        columns.append(
            dg.TableColumn(
                name=name,
                type=spec.column_kind(name),
                description=column.description,
                constraints=dg.TableColumnConstraints(nullable=bool(column.nullable), unique=name == spec.primary_key),
            )
        )
    return dg.TableSchema(columns=columns)


def _markdown_table(frame: pd.DataFrame) -> dg.MetadataValue:
    if frame.empty:
        return dg.MetadataValue.md("_no rows_")
    return dg.MetadataValue.md(frame.to_markdown(index=False))


def _files_table(outcomes: list[FileOutcome]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "file": o.file,
                "status": o.status,
                "rows read": o.rows_read,
                "inserted": o.counts.inserted,
                "updated": o.counts.updated,
                "unchanged": o.counts.unchanged,
                "rejected": o.rows_rejected,
                "reject file": o.reject_file or "",
                "reason": o.reason or "",
                "seconds": round(o.seconds, 2),
            }
            for o in outcomes
        ]
    )


def _table_preview(engine: sa.Engine, spec: TableSpec) -> tuple[int, pd.DataFrame]:
    table = data_tables[spec.name]
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        preview = pd.DataFrame(conn.execute(sa.select(table).order_by(table.c[spec.primary_key]).limit(PREVIEW_ROWS)).mappings().all())
    return count, preview


def ingestion_metadata(engine: sa.Engine, spec: TableSpec, outcomes: list[FileOutcome]) -> dict[str, object]:
    applied = [o for o in outcomes if o.status == "applied"]
    reasons: Counter = Counter()
    for outcome in applied:
        reasons.update(outcome.rejects_by_reason)
    row_count, preview = _table_preview(engine, spec)
    return {
        "files": _markdown_table(_files_table(outcomes)),
        "files_applied": len(applied),
        "files_skipped": sum(o.status == "skipped" for o in outcomes),
        "files_quarantined": sum(o.status == "quarantined" for o in outcomes),
        "files_changed_while_read": sum(o.status == "changed" for o in outcomes),
        "rows_read": sum(o.rows_read for o in applied),
        "rows_inserted": sum(o.counts.inserted for o in applied),
        "rows_updated": sum(o.counts.updated for o in applied),
        "rows_unchanged": sum(o.counts.unchanged for o in applied),
        "rows_rejected": sum(o.rows_rejected for o in applied),
        "rejects_by_reason": dg.MetadataValue.json(dict(reasons.most_common())),
        "dagster/row_count": row_count,
        "preview": _markdown_table(preview),
        **provenance_metadata(read_provenance(engine, [spec.name])),
    }


def build_table_asset(spec: TableSpec) -> dg.AssetsDefinition:
    @dg.asset(
        name=spec.name,
        group_name=INGEST_GROUP,
        owners=[DATA_ENGINEERING],
        tags=asset_tags("warehouse", pii=spec.name in PERSONAL_DATA_TABLES),
        code_version=INGEST_CODE_VERSION,
        kinds={"csv", "pandera", "sql"},
        description=f"{spec.description}\n\nLoaded from landing files `{spec.name}*.csv`: every row validated against the data "
        "dictionary; valid rows upserted by id, invalid rows kept in `rejected_rows` with their reasons.",
        deps=["landing_files", *{fk.table for fk in spec.foreign_keys}],
        metadata={"dagster/column_schema": table_column_schema(spec), "dagster/table_name": spec.name},
        check_specs=[
            dg.AssetCheckSpec(
                "landing_files_readable",
                asset=spec.name,
                description="Every landing file of this table could be read; unreadable ones were quarantined.",
            )
        ],
    )
    def _table_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource, data_folder: DataFolderResource):
        engine = warehouse.engine()
        outcomes = ingest_landing(engine, data_folder.folders(), tables=[spec.name], run_id=context.run_id, log=context.log)
        quarantined = [o for o in outcomes if o.status == "quarantined"]
        for outcome in quarantined:
            context.log.error(f"{outcome.file} quarantined: {outcome.reason}")
        return dg.MaterializeResult(
            metadata=ingestion_metadata(engine, spec, outcomes),
            check_results=[
                dg.AssetCheckResult(
                    check_name="landing_files_readable",
                    passed=not quarantined,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        "quarantined": dg.MetadataValue.json({o.file: o.reason for o in quarantined}),
                        "quarantined_count": len(quarantined),
                    },
                )
            ],
        )

    return _table_asset


table_assets = [build_table_asset(spec) for spec in TABLES.values()]


@dg.asset(
    group_name=INGEST_GROUP,
    owners=[DATA_ENGINEERING],
    tags=asset_tags("landing", pii=True),
    kinds={"csv"},
    description="The raw CSV files waiting in the landing folder. Files whose name matches no table are quarantined here.",
)
def landing_files(context: dg.AssetExecutionContext, warehouse: WarehouseResource, data_folder: DataFolderResource) -> dg.MaterializeResult:
    folders = data_folder.folders()
    waiting: Counter = Counter()
    unknown = []
    for path in pending_files(folders):
        try:
            waiting[table_for_file(path).name] += 1
        except UnreadableFileError:
            unknown.append(ingest_file(warehouse.engine(), folders, path, run_id=context.run_id, log=context.log))
    for outcome in unknown:
        context.log.error(f"{outcome.file} quarantined: {outcome.reason}")
    return dg.MaterializeResult(
        metadata={
            "landing_folder": dg.MetadataValue.path(str(folders.landing)),
            "files_waiting": dg.MetadataValue.json(dict(waiting)),
            "files_quarantined": dg.MetadataValue.json({o.file: o.reason for o in unknown}),
        }
    )


@dg.asset(
    group_name=INGEST_GROUP,
    owners=[DATA_ENGINEERING],
    tags=asset_tags("warehouse", pii="rejected_rows" in PERSONAL_DATA_TABLES),
    code_version=INGEST_CODE_VERSION,
    kinds={"sql"},
    deps=list(TABLES),
    description="The rejected-row log: every row that did not land in its table, with the raw line and the reasons.",
    metadata={"dagster/table_name": "rejected_rows"},
)
def rejected_rows(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    table = rejected_rows_table
    with warehouse.engine().connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        by_table = dict(conn.execute(sa.select(table.c.table_name, sa.func.count()).group_by(table.c.table_name)).all())
        this_run = pd.DataFrame(
            conn.execute(
                sa.select(table.c.table_name, table.c.source, table.c.line_number, table.c.raw_line, table.c.reasons)
                .where(table.c.run_id == context.run_id)
                .order_by(table.c.id)
                .limit(PREVIEW_ROWS)
            ).mappings().all()
        )
        run_count = conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.run_id == context.run_id)).scalar_one()
    if not this_run.empty:  # a stored raw line may hold thousands of characters; the preview shows an excerpt
        this_run["raw_line"] = this_run["raw_line"].map(lambda raw: excerpt(raw, quoted=False))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "rejected_by_table": dg.MetadataValue.json(by_table),
            "rejected_this_run": run_count,
            "preview_this_run": _markdown_table(this_run),
        }
    )


@dg.asset(
    group_name=INGEST_GROUP,
    owners=[DATA_ENGINEERING],
    tags=asset_tags("landing", pii=True),
    code_version=INGEST_CODE_VERSION,
    kinds={"csv"},
    deps=["landing_files", *TABLES],
    description="Files moved to quarantine/ because they could not be read at all. "
    "Fails the run that quarantined one, after every other file was applied.",
)
def quarantined_files(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, data_folder: DataFolderResource
) -> dg.MaterializeResult:
    table = quarantined_files_table
    with warehouse.engine().connect() as conn:
        this_run = conn.execute(sa.select(table.c.file_name, table.c.reason).where(table.c.run_id == context.run_id)).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    if this_run:
        listing = "\n".join(f"- {name}: {reason}" for name, reason in this_run)
        raise dg.Failure(
            description=f"{len(this_run)} file(s) quarantined in this run; every other file was applied. "
            f"Fix them and drop them into landing/ again (reasons beside them in {data_folder.folders().quarantine}):\n{listing}",
            metadata={"quarantined": dg.MetadataValue.json(dict(this_run))},
            allow_retries=False,
        )
    return dg.MaterializeResult(
        metadata={"dagster/row_count": total, "quarantine_folder": dg.MetadataValue.path(str(data_folder.folders().quarantine))}
    )
