"""The data folder, its fixed sub-folders, and names derived from a landing file's name."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

# The longest file name Linux and macOS file systems take, in bytes (of UTF-8), not characters.
NAME_MAX_BYTES = 255


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


def derived_file_name(stem: str, tail: str, *, reserve: int = 0) -> str:
    """`stem + tail` (say `<file stem>` + `.<sha8>.rejects.csv`), short enough to be a file name
    with `reserve` bytes to spare (for a `.part` or `.reason.txt` added later).

    A landing file's name may already use all 255 bytes. When the whole does not fit, the stem
    keeps its longest readable start that does, then `~` and 8 hex digits of the full stem's
    sha256, so two long names that start alike still get different derived names.
    """
    budget = NAME_MAX_BYTES - reserve
    if len(os.fsencode(stem + tail)) <= budget:
        return stem + tail
    mark = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:8]
    room = budget - len(os.fsencode(mark + tail))
    prefix = stem[:room]
    while len(os.fsencode(prefix)) > room:  # multibyte characters: drop whole ones until it fits
        prefix = prefix[:-1]
    return prefix + mark + tail
