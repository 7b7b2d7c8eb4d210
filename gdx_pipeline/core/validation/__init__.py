"""Row validation: parse text columns vectorised, then judge them by the dictionary's Pandera
schema; every broken rule of a row becomes one human-readable reason, `"<column>: <problem>"`.

One idea per module:

- `parsing`: text columns to typed Arrow columns, null where blank or unparsable, and why.
- `judges`: the dictionary's checks over typed rows, by Arrow compute or by Pandera itself.
- `row_checks`: a block judged by the rules a row can break on its own, in words.
- `validator`: foreign keys and duplicates of earlier rows, settling a block into loaded and rejected rows.
- `seen_ids`: the ids a file already produced, across its blocks.

The names below are the package's public interface; import them from here.
"""

from gdx_pipeline.core.validation.judges import NOT_NULLABLE, ArrowRules, Failure, frame_failures, pandera_failures
from gdx_pipeline.core.validation.parsing import INTEGER_PATTERN, ISO_DATETIME_PATTERN, ParsedColumn, parse_columns
from gdx_pipeline.core.validation.row_checks import CheckedRows, check_rows, reasons_by_row
from gdx_pipeline.core.validation.seen_ids import SeenIds
from gdx_pipeline.core.validation.validator import RejectedRow, RowValidator, ValidatedBlock

__all__ = [
    "INTEGER_PATTERN",
    "ISO_DATETIME_PATTERN",
    "NOT_NULLABLE",
    "ArrowRules",
    "CheckedRows",
    "Failure",
    "ParsedColumn",
    "RejectedRow",
    "RowValidator",
    "SeenIds",
    "ValidatedBlock",
    "check_rows",
    "frame_failures",
    "pandera_failures",
    "parse_columns",
    "reasons_by_row",
]
