"""Files that readers see whole or not at all, and that survive a crash once written.

Written under a hidden temporary name (`.<name>.<random>.part`, which backup retention sweeps
if a crash leaves one behind) in the target's folder, flushed to disk, renamed over the target,
and the rename made durable by syncing the folder where the platform allows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PART_SUFFIX = ".part"


def write_text_atomically(path: Path, text: str) -> Path:
    """Write `text` (UTF-8, line endings as given) to `path` atomically and durably; readable by all (0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PART_SUFFIX)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; reports and manifests are for readers
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)
    return path


def sync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable, where the platform allows it."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
