"""Writing one Avro file from Arrow batches: here, or in a helper process for large tables.

fastavro encodes record by record in Python and holds the GIL while it does, so a thread that
reads the database in the same process mostly waits for it. A large backup therefore streams
its Arrow batches (Arrow IPC over a pipe) to a helper process running this file, and reading
and encoding run on two cores. The module imports only pyarrow and fastavro, and the helper
runs it by its path (`python -P .../avro_writer.py`), not as part of its package, so it starts
in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import fastavro
import pyarrow as pa
import pyarrow.ipc as ipc

# Bigger Avro blocks than fastavro's 16 kB default: faster to write and read, better compression.
SYNC_INTERVAL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AvroFileSpec:
    """Everything the writer needs besides the rows; travels to the helper as JSON."""

    schema: dict
    codec: str
    metadata: dict[str, str]
    timestamp_columns: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {"schema": self.schema, "codec": self.codec, "metadata": self.metadata, "timestamp_columns": list(self.timestamp_columns)}
        )

    @classmethod
    def from_json(cls, text: str) -> AvroFileSpec:
        data = json.loads(text)
        return cls(data["schema"], data["codec"], data["metadata"], tuple(data["timestamp_columns"]))


@dataclass(frozen=True)
class WrittenFile:
    rows: int
    bytes: int
    sha256: str


class HashingWriter(io.RawIOBase):
    """Passes writes to a file while hashing and counting them: no second read for the sha256."""

    def __init__(self, handle):  # noqa: ANN001
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001
        self.sha256.update(data)
        self.bytes += len(data)
        return self._handle.write(data)


def records_of(batch: pa.RecordBatch, timestamp_columns: Iterable[str] = ()) -> list[dict[str, object]]:
    """The batch as fastavro records; times as epoch microseconds (fastavro passes ints through)."""
    stamps = set(timestamp_columns)
    names = batch.schema.names
    columns = [
        (batch.column(i).cast(pa.int64()) if name in stamps else batch.column(i)).to_pylist() for i, name in enumerate(names)
    ]
    return [dict(zip(names, values)) for values in zip(*columns)]


def write_avro(
    handle,  # noqa: ANN001 - a binary file opened for writing
    spec: AvroFileSpec,
    batches: Iterable[pa.RecordBatch],
    on_batch: Callable[[int], None] = lambda rows: None,
) -> WrittenFile:
    """Encode the batches into one Avro file; `on_batch` hears the running row count."""
    hashing = HashingWriter(handle)
    rows = 0

    def records() -> Iterator[dict[str, object]]:
        nonlocal rows
        for batch in batches:
            yield from records_of(batch, spec.timestamp_columns)
            rows += batch.num_rows
            on_batch(rows)

    fastavro.writer(hashing, spec.schema, records(), codec=spec.codec, sync_interval=SYNC_INTERVAL_BYTES, metadata=spec.metadata)
    return WrittenFile(rows=rows, bytes=hashing.bytes, sha256=hashing.sha256.hexdigest())


def main(argv: list[str]) -> int:
    """Helper process: argv = [path, spec JSON]; Arrow IPC stream on stdin; result JSON on stdout."""
    path, spec = argv[0], AvroFileSpec.from_json(argv[1])
    with ipc.open_stream(sys.stdin.buffer) as reader, open(path, "wb") as handle:
        written = write_avro(handle, spec, reader)
        handle.flush()
    sys.stdout.write(json.dumps({"rows": written.rows, "bytes": written.bytes, "sha256": written.sha256}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
