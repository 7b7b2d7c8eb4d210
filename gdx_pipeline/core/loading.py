"""Older import path of the load's pieces, kept so existing imports keep working.

The rows themselves are written by `staged_writes` (stage-to-target SQL for every writer), the
rejected ones by `reject_log`; `known_keys` reads the ids foreign keys may point at.
"""

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



def estimated_rows(size_bytes: int) -> int:
    """A cautious row estimate from a file's size (Globant rows are ~45 bytes)."""
    return size_bytes // 64


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
