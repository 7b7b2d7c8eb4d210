"""A landing file's identity: the sha256 of its bytes, and proof that what was parsed is what
was hashed.

`FileSnapshot` is taken before reading; `HashingReader` hashes every byte it hands to the parser;
at the end the two must agree and the file must still be the same inode, size and mtime, or the
read raises `FileChangedError` and nothing read is applied.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from gdx_pipeline.core.csv_source.errors import FileChangedError


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class FileSnapshot:
    """A landing file as it was before reading: where it lives on disk, its size and mtime,
    and the sha256 of its bytes. The ledger key of a file is this hash, so reading must prove
    it parsed exactly these bytes (`read_record_blocks`) and the move must see the same file."""

    sha256: str
    size: int
    identity: tuple[int, int, int, int]  # device, inode, size, mtime in ns

    @classmethod
    def take(cls, path: Path) -> FileSnapshot:
        with path.open("rb") as handle:
            before = os.fstat(handle.fileno())
            digest, size = hashlib.sha256(), 0
            for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(chunk)
                size += len(chunk)
            after = os.fstat(handle.fileno())
        snapshot = cls(digest.hexdigest(), size, _identity(before))
        if _identity(after) != snapshot.identity or size != before.st_size:
            raise FileChangedError("it changed while it was being hashed")
        snapshot.raise_if_changed(path)
        return snapshot

    def raise_if_changed(self, path: Path) -> None:
        """FileChangedError unless `path` is still this file: same inode, size and mtime."""
        try:
            now = path.stat()
        except FileNotFoundError:
            raise FileChangedError("it was removed or renamed while being read") from None
        if _identity(now) != self.identity:
            size = self.identity[2]
            grown = f" (size {size:,} -> {now.st_size:,} bytes)" if now.st_size != size else ""
            raise FileChangedError(f"it changed while being read{grown}")

    def verify_read(self, path: Path, sha256: str, size: int) -> None:
        """The bytes parsed were the bytes hashed first, and the file is still untouched."""
        if sha256 != self.sha256 or size != self.size:
            raise FileChangedError(f"it changed while being read (read {size:,} bytes that differ from the {self.size:,} hashed first)")
        self.raise_if_changed(path)


class HashingReader:
    """A binary file's `read`, hashing and counting every byte it hands out."""

    def __init__(self, handle: io.BufferedReader):
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int) -> bytes:
        data = self._handle.read(size)
        self._digest.update(data)
        self.size += len(data)
        return data

    def sha256(self) -> str:
        return self._digest.hexdigest()
