"""Why a restore is refused: everything it checks before, and as, it writes.

Before the database is touched, each backup file is checked against its manifest (size,
sha256), its Avro schema against the data dictionary, and every row by ingestion's own rules
(into a local spool); a snapshot must still hold every table it was taken of. Inside the
restore's transaction, foreign keys are checked with counts before anything is replaced. Each
refusal is a RestoreRefusedError whose message says what was wrong and that nothing changed,
with counts in `.details`. (One more can come from the database itself, should another writer
change a related table between these checks and the swap: see `restore._swap_in`.)
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import sqlalchemy as sa

from gdx_pipeline.core.backups.avro_schema import (
    BACKUP_TABLES,
    BackupTable,
    backup_table_named,
    referencing_tables,
    schema_fingerprint,
    schema_signature,
)
from gdx_pipeline.core.backups.errors import RestoreRefusedError
from gdx_pipeline.core.backups.snapshot import CHUNK_ROWS, arrow_schema, arrow_type
from gdx_pipeline.core.csv_source import RecordBlock, file_sha256
from gdx_pipeline.core.logger import Logger
from gdx_pipeline.core.rule_failures import RuleFailures, reason_kind
from gdx_pipeline.core.validation import SeenIds, check_rows
from gdx_pipeline.core.warehouse import quote_identifier

if TYPE_CHECKING:
    from gdx_pipeline.core.backups.catalog import BackupInfo

_default_log = logging.getLogger("gdx_pipeline.backups")


def missing_tables(snapshot: Mapping[str, BackupInfo]) -> list[str]:
    """Tables a snapshot was taken of whose backup is no longer there (deleted, or its manifest lost)."""
    taken = set().union(*(info.snapshot_tables for info in snapshot.values()))
    return [table for table in BACKUP_TABLES if table in taken and table not in snapshot]


def check_snapshot_whole(snapshot_id: str, backups: Mapping[str, BackupInfo], snapshots: Mapping[str, Mapping[str, BackupInfo]]) -> None:
    """Refuse a snapshot that lost a table it was taken of: it is restored whole or not at all."""
    missing = missing_tables(backups)
    if not missing:
        return
    newest_whole = next((sid for sid, members in snapshots.items() if set(members) == set(BACKUP_TABLES)), None)
    instead = f"Restore a whole snapshot instead ('latest' is {newest_whole})" if newest_whole else "No snapshot of every table is whole"
    raise RestoreRefusedError(
        f"snapshot {snapshot_id} is incomplete: it was taken of {', '.join(t for t in BACKUP_TABLES if t in backups or t in missing)} "
        f"but the backup of {', '.join(missing)} is gone (deleted, or its manifest is missing). Nothing was restored. "
        f"{instead}, or restore this snapshot's remaining tables one at a time with restore_table_job.",
        {"missing_tables": missing, "present_tables": list(backups)},
    )


@dataclass
class VerifiedBackup:
    """A backup that passed every check, its rows spooled to a local Arrow stream."""

    info: BackupInfo
    table: BackupTable
    spool: Path
    rows: int
    ids: np.ndarray  # sorted distinct primary keys, kept only for tables that others reference
    foreign_values: dict[str, tuple[np.ndarray, np.ndarray]]  # fk column -> (distinct values, row counts)

    def spooled_batches(self) -> Iterator[pa.RecordBatch]:
        """The spooled rows, batch by batch, read into memory one batch at a time.

        Not memory-mapped (what `ipc.open_stream` does with a path): every mapped page the load
        reads stays in the process's resident set until the file is closed, so a restore's
        peak RSS grew with the size of the table (docs/backups.md).
        """
        with pa.OSFile(str(self.spool)) as source, ipc.open_stream(source) as reader:
            yield from reader


def _refuse(info: BackupInfo, problem: str, details: dict[str, object] | None = None) -> RestoreRefusedError:
    return RestoreRefusedError(f"{info.name}: {problem}. Nothing was restored; the table is unchanged.", details)


def verify_backup(info: BackupInfo, spool_dir: Path, *, chunk_rows: int = CHUNK_ROWS, log: Logger = _default_log) -> VerifiedBackup:
    """Check file, schema and every row; spool the typed rows for the load. Raises RestoreRefusedError."""
    table = backup_table_named(info.table)
    size = info.path.stat().st_size
    if size != info.bytes:
        raise _refuse(
            info,
            f"the file has {size:,} bytes but its manifest says {info.bytes:,} (truncated or changed)",
            {"bytes": size, "expected_bytes": info.bytes},
        )
    actual = file_sha256(info.path)
    if actual != info.sha256:
        raise _refuse(
            info,
            f"sha256 {actual[:12]}… does not match the manifest's {info.sha256[:12]}… (the file is corrupt or was changed)",
            {"sha256": actual, "expected_sha256": info.sha256},
        )
    spool = spool_dir / f"{info.name}.arrows"
    checker = _RowChecker(table)
    try:
        with info.path.open("rb") as handle:
            try:
                reader = fastavro.reader(handle)
                writer_schema = reader.metadata.get("avro.schema", "")
            except Exception as error:
                raise _refuse(info, f"not a readable Avro file ({error})") from None
            _check_schema(info, table, writer_schema)
            target = arrow_schema(table)
            with ipc.new_stream(spool, target) as sink:
                while True:
                    try:
                        records = list(itertools.islice(reader, chunk_rows))
                    except Exception as error:
                        raise _refuse(
                            info, f"the Avro data cannot be read after row {checker.rows:,} ({type(error).__name__}: {error})"
                        ) from None
                    if not records:
                        break
                    try:
                        batch = pa.RecordBatch.from_arrays(
                            [pa.array([r[c.name] for r in records], arrow_type(c.kind)) for c in table.columns], schema=target
                        )
                    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
                        raise _refuse(info, f"a value does not fit its column ({error})") from None
                    checker.check(batch)
                    sink.write_batch(batch)
                    if checker.rows % 1_000_000 < batch.num_rows:
                        log.info(f"{info.name}: {checker.rows:,} of {info.rows:,} rows verified")
    except BaseException:
        spool.unlink(missing_ok=True)
        raise
    failures = checker.failures
    if failures.by_rule:
        spool.unlink(missing_ok=True)
        raise _refuse(
            info,
            f"{failures.failing_rows:,} row(s) break the data dictionary ({failures.listing()})",
            {"failing_rows": failures.failing_rows, "failures_by_rule": dict(failures.by_rule), "examples": list(failures.examples)},
        )
    if checker.rows != info.rows:
        spool.unlink(missing_ok=True)
        raise _refuse(
            info,
            f"the file holds {checker.rows:,} rows but its manifest says {info.rows:,}",
            {"rows": checker.rows, "expected_rows": info.rows},
        )
    log.info(f"{info.name}: verified {checker.rows:,} rows (sha256, schema, data dictionary)")
    return VerifiedBackup(info, table, spool, checker.rows, checker.distinct_ids(), checker.foreign_value_counts())


def _as_landing_text(values: pa.Array) -> pa.Array:
    """A column as a landing file would write it. Times: naive UTC text plus `Z` (Arrow turns
    naive times into text many times faster than zoned ones)."""
    if pa.types.is_timestamp(values.type):
        naive = values.cast(pa.timestamp(values.type.unit)).cast(pa.string())
        return pc.binary_join_element_wise(naive, pa.scalar("Z"), "")
    return values.cast(pa.string())


def _excerpt(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(str(value)):,} characters)"


def _check_schema(info: BackupInfo, table: BackupTable, writer_schema: str) -> None:
    expected = table.avro_schema
    try:
        found = json.loads(writer_schema)
    except ValueError:
        raise _refuse(info, "the Avro header carries no readable schema") from None
    if schema_signature(found) == schema_signature(expected):
        if info.schema_fingerprint != schema_fingerprint(expected):
            raise _refuse(info, "the manifest's schema fingerprint does not match the file")
        return
    differences = _schema_differences(found, expected)
    raise _refuse(
        info,
        f"its Avro schema does not match the data dictionary for {table.name} ({'; '.join(differences)})",
        {"schema_differences": differences},
    )


def _schema_differences(found: object, expected: dict) -> list[str]:
    if not isinstance(found, dict) or found.get("type") != "record":
        return ["not a record schema"]
    problems = []
    if found.get("name") != expected["name"]:
        problems.append(f"record is named {found.get('name')!r}, expected {expected['name']!r}")
    found_fields = {f.get("name"): f.get("type") for f in found.get("fields", []) if isinstance(f, dict)}
    expected_fields = {f["name"]: f["type"] for f in expected["fields"]}
    for name, avro_type in expected_fields.items():
        if name not in found_fields:
            problems.append(f"column {name} is missing")
        elif schema_signature({"t": found_fields[name]}) != schema_signature({"t": avro_type}):
            problems.append(f"column {name} is {json.dumps(found_fields[name])}, expected {json.dumps(avro_type)}")
    problems += [f"unexpected column {name}" for name in found_fields if name not in expected_fields]
    if not problems and list(found_fields) != list(expected_fields):
        problems.append("columns are in a different order")
    return problems or ["namespace or attributes differ"]


class _RowChecker:
    """Every row against the dictionary, and primary keys unique across the whole file.

    Data tables are judged by ingestion's own rule code (`check_rows`): each value is given to
    it as text, so a backup passes exactly when its rows would load unchanged from a landing
    file. A value ingestion would store differently — untrimmed text, whitespace-only (that is
    missing) — is refused, not normalised: a restore puts back what the verified file holds or
    nothing, and the table never held such values unless someone wrote them behind the
    pipeline's back. The reject log has no dictionary model: its text lengths are checked.
    """

    def __init__(self, table: BackupTable):
        self.table = table
        self.failures = RuleFailures()  # examples: the reasons quoted in a refusal's details
        self._seen = SeenIds()
        self._keep_ids = bool(referencing_tables(table.name))
        self._ids: list[np.ndarray] = []
        self._foreign: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {fk.column: [] for fk in table.foreign_keys}

    @property
    def rows(self) -> int:
        return self.failures.rows_checked

    def check(self, batch: pa.RecordBatch) -> None:
        self.failures.rows_checked += batch.num_rows
        bad = np.zeros(batch.num_rows, dtype=bool)
        if self.table.spec is not None:
            bad |= self._check_dictionary(batch)
        else:
            bad |= self._check_lengths(batch)
        key = batch.column(self.table.primary_key).to_numpy(zero_copy_only=False).astype(np.int64)
        in_range = (key >= 0) & (key <= np.iinfo(np.int32).max)
        if not in_range.all():
            self.failures.count("primary key out of range", int((~in_range).sum()))
            bad |= ~in_range
        duplicates = self._seen.mark(np.where(in_range, key, 0), in_range)
        if duplicates.any():
            self.failures.count(f"{self.table.primary_key}: duplicate", int(duplicates.sum()))
            for row in np.flatnonzero(duplicates)[: self.failures.examples_wanted()]:
                self.failures.example(f"{self.table.primary_key} {key[row]}: {self.table.primary_key}: duplicate of an earlier row")
            bad |= duplicates
        self.failures.failing_rows += int(bad.sum())
        if self._keep_ids:
            self._ids.append(np.unique(key))
        for fk in self.table.foreign_keys:
            values, counts = np.unique(batch.column(fk.column).to_numpy(zero_copy_only=False).astype(np.int64), return_counts=True)
            self._foreign[fk.column].append((values, counts))

    def _check_dictionary(self, batch: pa.RecordBatch) -> np.ndarray:
        spec = self.table.spec
        as_text = pa.table({column: _as_landing_text(batch.column(column)) for column in spec.columns})
        checked = check_rows(spec, RecordBlock(as_text, np.arange(batch.num_rows), [], {}))
        reasons = {row: list(found) for row, found in checked.reasons.items()}
        for column in spec.columns:
            original = batch.column(column)
            stored = checked.typed.column(column).combine_chunks().cast(original.type)
            differs = pc.and_(pc.is_valid(original), pc.fill_null(pc.not_equal(stored, original), True))
            for row in np.flatnonzero(differs.to_numpy(zero_copy_only=False)):
                row_reasons = reasons.setdefault(int(row), [])
                if not any(reason.startswith(f"{column}:") for reason in row_reasons):
                    value, kept = original[int(row)].as_py(), stored[int(row)].as_py()
                    row_reasons.append(f"{column}: not as ingestion stores it (got {_excerpt(value)}, stored as {_excerpt(kept)})")
        bad = np.zeros(batch.num_rows, dtype=bool)
        keys = batch.column(self.table.primary_key)
        for row, row_reasons in sorted(reasons.items()):
            bad[row] = True
            for reason in row_reasons:
                self.failures.count(reason_kind(reason))
                self.failures.example(f"{self.table.primary_key} {keys[row].as_py()}: {reason}")
        return bad

    def _check_lengths(self, batch: pa.RecordBatch) -> np.ndarray:
        bad = np.zeros(batch.num_rows, dtype=bool)
        for column in self.table.columns:
            if column.max_length is None:
                continue
            too_long = pc.fill_null(pc.greater(pc.utf8_length(batch.column(column.name)), column.max_length), False).to_numpy(
                zero_copy_only=False
            )
            if too_long.any():
                self.failures.count(f"{column.name}: longer than {column.max_length} characters", int(too_long.sum()))
                bad |= too_long
        return bad

    def distinct_ids(self) -> np.ndarray:
        return np.unique(np.concatenate(self._ids)) if self._ids else np.array([], dtype=np.int64)

    def foreign_value_counts(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        merged = {}
        for column, parts in self._foreign.items():
            if not parts:
                merged[column] = (np.array([], dtype=np.int64), np.array([], dtype=np.int64))
                continue
            values = np.concatenate([v for v, _ in parts])
            counts = np.concatenate([c for _, c in parts])
            distinct, inverse = np.unique(values, return_inverse=True)
            merged[column] = (distinct, np.bincount(inverse, weights=counts).astype(np.int64))
        return merged


def check_foreign_keys(conn: sa.Connection, by_table: dict[str, VerifiedBackup]) -> None:
    """Refuse, with counts, a restore after which some row would point at nothing."""
    broken: dict[str, int] = {}
    for name, item in by_table.items():
        # Rows of the backup whose references would not exist.
        for fk in item.table.foreign_keys:
            parent_ids = by_table[fk.table].ids if fk.table in by_table else _distinct_ids(conn, fk.table, fk.target_column)
            values, counts = item.foreign_values[fk.column]
            missing = int(counts[~np.isin(values, parent_ids)].sum())
            if missing:
                broken[f"{name}.{fk.column} -> {fk.table}.{fk.target_column}"] = missing
        # Rows of other tables that point at ids this backup does not have.
        for child, fk in referencing_tables(name):
            if child.name in by_table:
                continue
            values, counts = _value_counts(conn, child.name, fk.column)
            missing = int(counts[~np.isin(values, item.ids)].sum())
            if missing:
                broken[f"{child.name}.{fk.column} -> {name}.{fk.target_column}"] = missing
    if broken:
        listing = "; ".join(
            f"{count:,} row(s) of {reference.split(' -> ')[0].split('.')[0]} via {reference}" for reference, count in broken.items()
        )
        files = ", ".join(item.info.name for item in by_table.values())
        raise RestoreRefusedError(
            f"{files}: restoring would break foreign keys: {listing}. Nothing was restored; the tables are unchanged. "
            "Restore a whole snapshot (restore_snapshot_job) to restore related tables together.",
            {"orphans": broken, "orphan_count": sum(broken.values())},
        )


def _distinct_ids(conn: sa.Connection, table: str, column: str) -> np.ndarray:
    values = conn.exec_driver_sql(f"SELECT {quote_identifier(conn, column)} FROM {quote_identifier(conn, table)}").scalars().all()
    return np.unique(np.asarray(values, dtype=np.int64))


def _value_counts(conn: sa.Connection, table: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    rows = conn.exec_driver_sql(
        f"SELECT {quote_identifier(conn, column)}, count(*) FROM {quote_identifier(conn, table)} GROUP BY {quote_identifier(conn, column)}"
    ).all()
    if not rows:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    values, counts = zip(*rows)
    return np.asarray(values, dtype=np.int64), np.asarray(counts, dtype=np.int64)
