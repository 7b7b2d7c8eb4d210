"""Reject files: the raw rejected lines of one landing file, ready to fix and drop back into
landing (as pgloader does), published just before the file's transaction commits."""

from __future__ import annotations

import os
from pathlib import Path

from gdx_pipeline.core.csv_source import FileChangedError, LongLine
from gdx_pipeline.core.folders import derived_file_name
from gdx_pipeline.core.validation import RejectedRow

COPY_CHUNK_BYTES = 1024 * 1024


class RejectFileWriter:
    """Raw rejected lines of one file, ready to fix and drop back into landing.

    `<stem>.<sha8>.rejects.csv` holds the lines exactly as they arrived, every one whole (a line
    too long to hold is copied from the source file), and `<stem>.<sha8>.rejects.log` the line
    numbers and reasons; a stem too long for a file name is shortened (`derived_file_name`).
    Both are written under a hidden temporary name and renamed into place just before the
    database commit; a re-run after a crash rewrites the same names with the same content.
    """

    def __init__(self, folder: Path, source: Path, sha256: str):
        csv_name = derived_file_name(source.stem, f".{sha256[:8]}.rejects.csv", reserve=len(".") + len(".part"))
        self.final_csv = folder / csv_name
        self.final_log = self.final_csv.with_suffix(".log")
        self.part_csv, self.part_log = folder / f".{self.final_csv.name}.part", folder / f".{self.final_log.name}.part"
        self.source = source
        self._csv = self._log = None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[RejectedRow]) -> None:
        if not rows:
            return
        if self._csv is None:
            self._csv = self.part_csv.open("wb")
            self._log = self.part_log.open("w", encoding="utf-8", newline="")
        for row in rows:
            if row.long_line is None:
                self._csv.write(row.raw.encode("utf-8"))
            else:
                self._copy_from_source(row.long_line)
            self._csv.write(b"\n")
            self._log.write(f"line {row.line}: {'; '.join(row.reasons)}\n")

    def _copy_from_source(self, line: LongLine) -> None:
        """Stream a line too long to hold from the source file, a chunk at a time."""
        with self.source.open("rb") as source:
            source.seek(line.start)
            left = line.end - line.start
            while left:
                chunk = source.read(min(left, COPY_CHUNK_BYTES))
                if not chunk:
                    raise FileChangedError("it got shorter while being read")
                self._csv.write(chunk)
                left -= len(chunk)

    def publish(self) -> str | None:
        if self._csv is None:
            return None
        self._csv.close()
        self._log.close()
        os.replace(self.part_log, self.final_log)
        os.replace(self.part_csv, self.final_csv)
        return self.final_csv.name

    def discard_partial(self) -> None:
        for handle in (self._csv, self._log):
            if handle is not None and not handle.closed:
                handle.close()
        for part in (self.part_csv, self.part_log):
            part.unlink(missing_ok=True)
