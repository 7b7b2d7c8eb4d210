"""Which loads fed an asset, as materialization metadata: the ingestion ledger's account of the
tables it was made from, up to the moment it was made (see `core.provenance`)."""

import dagster as dg

from gdx_pipeline.core.provenance import Provenance

SOURCES_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("kind", "text", description="file, api (batches summed per table) or restore."),
        dg.TableColumn("table", "text", description="The table the load wrote to."),
        dg.TableColumn("source", "text", description="File name, the API, or the backup restored."),
        dg.TableColumn("sha256", "text", description="First 12 hex digits of the file's sha256; empty for API batches and restores."),
        dg.TableColumn("loads", "integer", description="1 for a file or a restore; the number of API batches."),
        dg.TableColumn("rows_read", "integer", description="Rows the load read."),
        dg.TableColumn("rows_loaded", "integer", description="Rows it inserted or updated (a restore: the rows restored)."),
        dg.TableColumn("rows_rejected", "integer", description="Rows it rejected into rejected_rows."),
        dg.TableColumn("at", "timestamp", description="When it committed (UTC); for API batches, the latest."),
    ]
)


def provenance_metadata(provenance: Provenance) -> dict[str, object]:
    """Counts the Plots tab can draw, when the data last changed, and the loads themselves."""
    records = [
        dg.TableRecord(
            {
                "kind": "file",
                "table": f.table,
                "source": f.file,
                "sha256": f.sha256_prefix,
                "loads": 1,
                "rows_read": f.rows_read,
                "rows_loaded": f.rows_inserted + f.rows_updated,
                "rows_rejected": f.rows_rejected,
                "at": f.loaded_at.isoformat(),
            }
        )
        for f in provenance.files
    ]
    if provenance.older_files:
        records.append(
            dg.TableRecord(
                {
                    "kind": "file",
                    "table": None,
                    "source": f"{provenance.older_files:,} older file(s)",
                    "sha256": None,
                    "loads": provenance.older_files,
                    "rows_read": provenance.older_file_rows,
                    "rows_loaded": None,
                    "rows_rejected": None,
                    "at": None,
                }
            )
        )
    records += [
        dg.TableRecord(
            {
                "kind": b.source,
                "table": b.table,
                "source": f"{b.batches:,} batch(es) since {b.first_at.isoformat()}",
                "sha256": "",
                "loads": b.batches,
                "rows_read": b.rows_read,
                "rows_loaded": b.rows_inserted + b.rows_updated,
                "rows_rejected": b.rows_rejected,
                "at": b.last_at.isoformat(),
            }
        )
        for b in provenance.batches
    ]
    records += [
        dg.TableRecord(
            {
                "kind": "restore",
                "table": r.table,
                "source": r.backup,
                "sha256": "",
                "loads": 1,
                "rows_read": 0,
                "rows_loaded": r.rows,
                "rows_rejected": 0,
                "at": r.restored_at.isoformat(),
            }
        )
        for r in provenance.restores
    ]
    metadata: dict[str, object] = {
        "source_files": dg.MetadataValue.int(provenance.file_count),
        "source_api_batches": dg.MetadataValue.int(provenance.batch_count),
        "source_restores": dg.MetadataValue.int(len(provenance.restores)),
        "sources": dg.MetadataValue.table(records=records, schema=SOURCES_SCHEMA),
    }
    if provenance.loaded_at is not None:
        metadata["data_loaded_at"] = dg.MetadataValue.timestamp(provenance.loaded_at)
    return metadata
