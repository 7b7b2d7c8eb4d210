"""What happened to one landing file: the record every step of applying it fills in."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gdx_pipeline.core.staged_writes import LoadCounts


@dataclass
class FileOutcome:
    """What happened to one landing file."""

    file: str
    status: str  # "applied", "skipped" (already in the ledger), "changed" (while being read: left in landing) or "quarantined"
    table: str | None
    sha256: str
    size_bytes: int
    rows_read: int = 0
    counts: LoadCounts = field(default_factory=LoadCounts)
    rows_rejected: int = 0
    rejects_by_reason: Counter = field(default_factory=Counter)
    reject_file: str | None = None
    reason: str | None = None
    seconds: float = 0.0
