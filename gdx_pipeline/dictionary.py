"""The data dictionary: one Pandera model per table, written once.

Everything else derives from these models: the SQL DDL (`core.warehouse`), the CSV column
order and parsing (`core.validation`), the Avro schemas, the API models and the asset checks.
A column's Python/pandas dtype says how its text is parsed; `Field` checks say what a valid
value is; `metadata` carries the relational facts Pandera has no words for (primary and
foreign keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

# Ids are stored in a 32-bit signed INTEGER column; they are positive like every surrogate key.
ID_MIN = 1
ID_MAX = 2**31 - 1
NAME_MAX_LENGTH = 255
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"

# Bounds that catch typos (year 0021, 20021) while admitting any plausible hire.
HIRED_FROM = pd.Timestamp("1900-01-01T00:00:00Z")
HIRED_UNTIL = pd.Timestamp("2999-12-31T23:59:59.999999Z")

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "us", "UTC"]


def _id_field(description: str, references: str | None = None) -> object:
    metadata: dict[str, object] = {"primary_key": True} if references is None else {"references": references}
    return pa.Field(ge=ID_MIN, le=ID_MAX, nullable=False, description=description, metadata=metadata)


def _name_field(description: str) -> object:
    return pa.Field(
        nullable=False,
        str_length={"min_value": 1, "max_value": NAME_MAX_LENGTH},
        # A line break or tab in a name is a broken quote far more often than a real name.
        str_matches=NO_CONTROL_CHARACTERS,
        description=description,
    )


class Departments(pa.DataFrameModel):
    """Company departments; employees belong to exactly one."""

    id: Series[pd.Int64Dtype] = _id_field("Department id.")
    department: Series[pd.StringDtype] = _name_field("Name of the department.")

    class Config:
        name = "departments"
        strict = True
        ordered = True


class Jobs(pa.DataFrameModel):
    """Job titles an employee can be hired into."""

    id: Series[pd.Int64Dtype] = _id_field("Job id.")
    job: Series[pd.StringDtype] = _name_field("Name of the job.")

    class Config:
        name = "jobs"
        strict = True
        ordered = True


class HiredEmployees(pa.DataFrameModel):
    """One row per hire: who, when (UTC), into which department and job."""

    id: Series[pd.Int64Dtype] = _id_field("Employee id.")
    name: Series[pd.StringDtype] = _name_field("Employee's full name.")
    datetime: Series[UtcTimestamp] = pa.Field(
        nullable=False,
        ge=HIRED_FROM,
        le=HIRED_UNTIL,
        description="Hire date and time, ISO-8601 with a Z or an offset, stored in UTC.",
    )
    department_id: Series[pd.Int64Dtype] = _id_field(
        "Id of the department the employee was hired into.", references="departments.id"
    )
    job_id: Series[pd.Int64Dtype] = _id_field("Id of the job the employee was hired for.", references="jobs.id")

    class Config:
        name = "hired_employees"
        strict = True
        ordered = True


@dataclass(frozen=True)
class ForeignKey:
    column: str
    table: str
    target_column: str


@dataclass(frozen=True)
class TableSpec:
    """What the rest of the code needs to know about one table, read off its Pandera model."""

    name: str
    model: type[pa.DataFrameModel]

    @property
    def schema(self) -> pa.DataFrameSchema:
        return self.model.to_schema()

    @property
    def description(self) -> str:
        return (self.model.__doc__ or "").strip()

    @property
    def columns(self) -> list[str]:
        return list(self.schema.columns)

    @property
    def primary_key(self) -> str:
        (key,) = [name for name, col in self.schema.columns.items() if (col.metadata or {}).get("primary_key")]
        return key

    @property
    def foreign_keys(self) -> list[ForeignKey]:
        keys = []
        for name, col in self.schema.columns.items():
            reference = (col.metadata or {}).get("references")
            if reference:
                table, target = reference.split(".")
                keys.append(ForeignKey(column=name, table=table, target_column=target))
        return keys

    def column_kind(self, column: str) -> str:
        """'integer', 'text' or 'timestamp': how the column's CSV text is parsed."""
        dtype = str(self.schema.columns[column].dtype)
        if dtype.startswith("datetime64"):
            return "timestamp"
        if dtype.lower().startswith("int"):
            return "integer"
        return "text"


# Dependency order: a table comes after every table it references.
TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("departments", Departments),
        TableSpec("jobs", Jobs),
        TableSpec("hired_employees", HiredEmployees),
    )
}


def table_spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise UnknownTableError(name) from None


class UnknownTableError(LookupError):
    def __init__(self, name: str):
        super().__init__(f"unknown table {name!r}: expected one of {', '.join(TABLES)}")
        self.name = name
