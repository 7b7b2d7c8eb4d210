"""The data folder and its fixed sub-folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataFolders:
    """`landing/` is watched; files move to `processed/` or `quarantine/`; rejected lines go
    to `rejects/`; Avro backups to `backups/`; metric CSVs and the dashboard to `reports/`."""

    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def ensure(self) -> DataFolders:
        for folder in (self.landing, self.processed, self.quarantine, self.rejects, self.backups, self.reports):
            folder.mkdir(parents=True, exist_ok=True)
        return self
