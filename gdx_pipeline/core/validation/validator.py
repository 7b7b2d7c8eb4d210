"""What a row's validity depends on beyond the row: the ids its foreign keys may point to, and
the ids earlier rows of the same file (or API batch) already took. A block checked on its own
(`check_rows`) is settled here into the rows to load and the rows rejected with their reasons.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gdx_pipeline.core.csv_source import LongLine, RecordBlock, raw_texts
from gdx_pipeline.core.validation.row_checks import CheckedRows, check_rows
from gdx_pipeline.core.validation.seen_ids import SeenIds
from gdx_pipeline.dictionary import TableSpec


@dataclass(frozen=True)
class RejectedRow:
    line: int
    raw: str  # the raw line, or only its start when `long_line` says where the whole line is
    reasons: list[str]
    long_line: LongLine | None = None


@dataclass
class ValidatedBlock:
    valid: pa.Table  # the valid rows, typed, in dictionary column order
    rejected: list[RejectedRow]


class RowValidator:
    """Validates blocks of one file (or one API batch) against a table's dictionary model.

    `known_keys` are the ids each foreign key may point to; `seen_ids` spans blocks so a later
    duplicate of an id is rejected wherever in the file it appears. `source_kind` names what the
    rows came in ("file", "request", "backup") in the duplicate's reason.
    """

    def __init__(self, spec: TableSpec, known_keys: Mapping[str, Collection[int]] | None = None, *, source_kind: str = "file"):
        self.spec = spec
        self.source_kind = source_kind
        known_keys = known_keys or {}
        self.allowed_keys = {fk.column: pa.array(sorted(known_keys.get(fk.column, ())), type=pa.int64()) for fk in spec.foreign_keys}
        self.seen_ids = SeenIds()

    def validate(self, block: RecordBlock) -> ValidatedBlock:
        return self.settle(check_rows(self.spec, block))

    def settle(self, checked: CheckedRows) -> ValidatedBlock:
        """Add what depends on the database and earlier blocks: foreign keys, then duplicates."""
        block, typed = checked.block, checked.typed
        rejected = [RejectedRow(line, raw, [reason], block.long_lines.get(line)) for line, raw, reason in block.malformed]
        if typed.num_rows:
            reasons = dict(checked.reasons)  # its lists are the checked block's: only ever replaced here
            self._foreign_key_reasons(typed, reasons)  # blank lines have no values to look up
            key = self.spec.primary_key
            candidate = np.ones(typed.num_rows, dtype=bool)
            candidate[list(reasons)] = False
            ids = typed.column(key).fill_null(0).to_numpy()
            duplicates = self.seen_ids.mark(ids, candidate)
            for row in np.flatnonzero(duplicates):
                reasons[int(row)] = [f"{key}: duplicate of an earlier row in this {self.source_kind} (got {ids[row]})"]
            order = {column: i for i, column in enumerate(self.spec.columns)}
            rows = sorted(reasons)
            lines = block.lines[rows].tolist()
            for row, line, raw in zip(rows, lines, raw_texts(block.raw_lines, lines)):
                row_reasons = reasons[row]
                if len(row_reasons) > 1:
                    row_reasons = sorted(row_reasons, key=lambda r: order.get(r.split(":")[0], -1))
                rejected.append(RejectedRow(line, raw, row_reasons))
            if reasons:
                keep = np.ones(typed.num_rows, dtype=bool)
                keep[list(reasons)] = False
                typed = typed.filter(pa.array(keep))
        rejected.sort(key=lambda r: r.line)
        return ValidatedBlock(typed, rejected)

    def _foreign_key_reasons(self, typed: pa.Table, reasons: dict[int, list[str]]) -> None:
        """Relational rules Pandera has no words for, checked set-wise against the referenced ids;
        a row's reasons are a new list with them added (the old one may be a checked block's).

        Kept out of the Pandera schema so the schema is built once, not once per batch."""
        for fk in self.spec.foreign_keys:
            values = typed.column(fk.column)
            unknown = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=self.allowed_keys[fk.column])))
            rows = np.flatnonzero(unknown.to_numpy(zero_copy_only=False))
            if not rows.size:
                continue
            prefix = f"{fk.column}: no such id in {fk.table} (got "
            for row, value in zip(rows.tolist(), values.take(pa.array(rows)).to_pylist()):
                reasons[row] = [*reasons.get(row, ()), f"{prefix}{value})"]
