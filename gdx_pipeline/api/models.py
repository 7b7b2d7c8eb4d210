"""Every request and response body of the API, in one module. The rows' models are derived
from the data dictionary, never listed by hand.

An incoming row's schema says exactly what `core` accepts of a value: its JSON type, bounds,
lengths and patterns. A row that breaks it is rejected on its own with reasons (and kept in
the reject log) instead of failing the whole request with a blanket 422, so the row model lets
any value through to `core`, which judges it. Rules no schema can state (an id that must
exist, a date that must be real and 1900 to 2999, no duplicate id) reject rows the schema
admits. Outgoing rows are typed exactly, from the same dictionary columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model
from typing_extensions import TypedDict

from gdx_pipeline.api.settings import MAX_ROWS_PER_REQUEST
from gdx_pipeline.core.metrics import QUARTERS
from gdx_pipeline.core.validation import ISO_DATETIME_PATTERN
from gdx_pipeline.dictionary import TABLES, TableSpec

TableName = Literal[tuple(TABLES)]  # type: ignore[valid-type]

_EXAMPLE_VALUES = {"integer": 1, "text": "Example", "timestamp": "2021-07-27T16:02:08Z"}
_PYTHON_TYPES = {"integer": int, "text": str, "timestamp": datetime}


def class_name(spec: TableSpec, suffix: str) -> str:
    return "".join(part.capitalize() for part in spec.name.split("_")) + suffix


def _plain(value: object) -> object:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, pd.Timestamp) else value


def column_json_schema(spec: TableSpec, column: str) -> dict[str, object]:
    """JSON Schema for one column's valid values, read off its Pandera checks.

    A datetime gets the pattern it is parsed by rather than `format: date-time`: it takes forms
    RFC 3339 does not (no seconds, `+0100`), and a schema must not refuse what is accepted."""
    kind = spec.column_kind(column)
    schema: dict[str, object] = {"type": "integer"} if kind == "integer" else {"type": "string"}
    if kind == "timestamp":
        schema["pattern"] = ISO_DATETIME_PATTERN
    bounds = []
    for check in spec.schema.columns[column].checks:
        stats = check.statistics or {}
        if check.name == "greater_than_or_equal_to":
            bounds.append(f">= {_plain(stats['min_value'])}")
            if kind == "integer":
                schema["minimum"] = stats["min_value"]
        elif check.name == "less_than_or_equal_to":
            bounds.append(f"<= {_plain(stats['max_value'])}")
            if kind == "integer":
                schema["maximum"] = stats["max_value"]
        elif check.name == "str_length":
            schema["minLength"], schema["maxLength"] = stats["min_value"], stats["max_value"]
        elif check.name == "str_matches":
            schema["pattern"] = stats["pattern"]
    description = spec.schema.columns[column].description or column
    references = (spec.schema.columns[column].metadata or {}).get("references")
    if references:
        description += f" Must exist in {references}."
    if kind == "timestamp" and bounds:
        description += f" Between {bounds[0][3:]} and {bounds[1][3:]}."
    if kind == "text":
        description += " No control or invisible format characters (Unicode Cc, Cf but joiners, Zl, Zp)."
    schema["description"] = description
    schema["examples"] = [_EXAMPLE_VALUES[kind]]
    return schema


def row_in_model(spec: TableSpec) -> type:
    """One incoming row: documented strictly, passed on whole (core judges each value, and
    rejects the row when one breaks the schema).

    A TypedDict rather than a model: it validates to a plain dict, far faster for 1,000 rows.
    """
    description = (
        f"One row for `{spec.name}`: {spec.description} Strings are trimmed of surrounding whitespace "
        "before they are judged, and a blank one counts as missing. A row with a missing, unknown or "
        "invalid field is rejected on its own and reported with its reasons."
    )

    def document(schema: dict[str, Any]) -> None:
        schema["required"] = list(spec.columns)
        schema["additionalProperties"] = False  # an unknown field rejects its row
        schema["description"] = description

    fields = {column: NotRequired[Annotated[Any, WithJsonSchema(column_json_schema(spec, column))]] for column in spec.columns}
    row = TypedDict(class_name(spec, "RowIn"), fields)  # type: ignore[misc]
    row.__pydantic_config__ = ConfigDict(extra="allow", json_schema_extra=document)  # type: ignore[attr-defined]
    return row


def rows_in_model(spec: TableSpec) -> type[BaseModel]:
    row = row_in_model(spec)
    return create_model(
        class_name(spec, "RowsIn"),
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"A batch of 1 to {MAX_ROWS_PER_REQUEST:,} rows for `{spec.name}`, applied in one transaction.",
        rows=(
            Annotated[list[row], Field(min_length=1, json_schema_extra={"maxItems": MAX_ROWS_PER_REQUEST})],  # type: ignore[valid-type]
            ...,
        ),
    )


def row_out_model(spec: TableSpec) -> type[BaseModel]:
    """One stored row, typed exactly (timestamps in UTC)."""
    fields = {}
    for column in spec.columns:
        schema = column_json_schema(spec, column)
        limits = {k: schema[k] for k in ("minimum", "maximum") if k in schema}
        fields[column] = (
            _PYTHON_TYPES[spec.column_kind(column)],
            Field(description=str(schema["description"]), ge=limits.get("minimum"), le=limits.get("maximum")),
        )
    return create_model(class_name(spec, "Row"), __doc__=spec.description, **fields)


def page_model(spec: TableSpec, row: type[BaseModel]) -> type[BaseModel]:
    return create_model(
        class_name(spec, "Page"),
        __doc__=f"Rows of `{spec.name}` in id order; pass `next_after_id` as `after_id` for the next page.",
        rows=(list[row], ...),  # type: ignore[valid-type]
        next_after_id=(int | None, Field(description="The last id on this page; null when this is the last page.")),
    )


class TableModels:
    """The API models of one table."""

    def __init__(self, spec: TableSpec):
        self.spec = spec
        self.rows_in = rows_in_model(spec)
        self.row_out = row_out_model(spec)
        self.page = page_model(spec, self.row_out)


TABLE_MODELS: dict[str, TableModels] = {name: TableModels(spec) for name, spec in TABLES.items()}


class RejectedInBatch(BaseModel):
    index: int = Field(
        ge=0,
        description="0-based position of the row in the request: its index in `rows` for JSON; for CSV the 0-based line "
        "where the record starts (its position, unless a quoted value spans lines).",
    )
    reasons: list[str] = Field(description="One reason per broken rule, `<column>: <problem> (got <value>)`.")


class BatchResult(BaseModel):
    """What one batch did. It committed as a whole: valid rows upserted, the rest in the reject log."""

    request_id: str = Field(description="Stored with each rejected row in the reject log; from `X-Request-ID` if sent.")
    rows_received: int
    inserted: int
    updated: int
    unchanged: int = Field(description="Rows identical to what was already stored.")
    rejected: list[RejectedInBatch]


class RejectedRowRecord(BaseModel):
    """One entry of the reject log."""

    id: int
    table: str
    source: str = Field(description="File name, or 'api'.")
    line_number: int | None = Field(description="1-based line in the file, or 1-based row position in an API batch.")
    raw_line: str = Field(description="The row exactly as it arrived (JSON for API rows).")
    reasons: list[str]
    run_id: str | None
    request_id: str | None
    rejected_at: datetime


class RejectedRowsPage(BaseModel):
    rows: list[RejectedRowRecord]
    next_after_id: int | None = Field(description="Pass as `after_id` for the next page; null when this is the last page.")


# --- backups -------------------------------------------------------------------------------------

LATEST = "latest"


class Backup(BaseModel):
    """One complete backup file (its manifest says so)."""

    table: str
    file: str = Field(description="The backup's file name; pass it as `backup` to restore it.")
    rows: int
    bytes: int
    sha256: str
    snapshot_id: str = Field(description="Backups taken in one run share it: they are consistent with each other.")
    created: datetime
    codec: str


class BackupTaken(Backup):
    run_id: str = Field(description="The Dagster run that took the backup.")


class RestoreRequest(BaseModel):
    """What to restore; no body at all means the defaults."""

    backup: str = Field(default=LATEST, max_length=255, description="'latest', or a file name from GET /tables/{table}/backups.")


class Restored(BaseModel):
    table: str
    backup: str
    rows_restored: int
    rows_replaced: int = Field(description="Rows the table held before the restore.")
    run_id: str = Field(description="The Dagster run that restored the table.")


# --- metrics -------------------------------------------------------------------------------------

QuarterlyHiresRow = create_model(
    "QuarterlyHiresRow",
    __doc__="Hires of one department and job in each quarter (UTC).",
    department=(str, ...),
    job=(str, ...),
    **{quarter: (int, Field(ge=0)) for quarter in QUARTERS},
)


class QuarterlyHires(BaseModel):
    """Hires per department and job in each quarter of the year, ordered by department, then job."""

    year: int
    rows: list[QuarterlyHiresRow]  # type: ignore[valid-type]


class DepartmentHires(BaseModel):
    id: int
    department: str
    hired: int = Field(ge=0)


class DepartmentsAboveMean(BaseModel):
    """Departments that hired more than the mean per hiring department, most hires first."""

    year: int
    mean_hired: float | None = Field(description="Mean hires over the departments that hired that year; null when nobody was.")
    rows: list[DepartmentHires]


# --- errors and health ---------------------------------------------------------------------------

class ErrorResponse(BaseModel):
    """Every error: a short machine-readable code and a message for a person."""

    error: str = Field(examples=["not_found"])
    message: str = Field(examples=["unknown table 'employees': expected one of departments, jobs, hired_employees"])


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: str = Field(description="'reachable', or why not.")
    dialect: str
    version: str
