"""Older import path of the load's pieces, kept so existing imports keep working.

The rows themselves are written by `staged_writes` (stage-to-target SQL for every writer), the
rejected ones by `reject_log`; `known_keys` reads the ids foreign keys may point at, and
`file_transaction.estimated_rows` guesses a file's rows from its size.
"""

from gdx_pipeline.core.file_transaction import estimated_rows
from gdx_pipeline.core.known_keys import known_keys
from gdx_pipeline.core.reject_log import record_rejects, stored_raw_line
from gdx_pipeline.core.staged_writes import (
    BULK_ROWS as BULK_THRESHOLD,
    SQLITE_STAGING_ROWS,
    LoadCounts,
    StagedUpsert,
    create_secondary_structures,
    drop_secondary_structures,
)
from gdx_pipeline.core.warehouse import quote_identifier

__all__ = [
    "BULK_THRESHOLD",
    "SQLITE_STAGING_ROWS",
    "LoadCounts",
    "StagedUpsert",
    "create_secondary_structures",
    "drop_secondary_structures",
    "estimated_rows",
    "known_keys",
    "quote_identifier",
    "record_rejects",
    "stored_raw_line",
]
