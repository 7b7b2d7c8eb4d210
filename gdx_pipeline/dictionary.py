"""The data dictionary: one Pandera model per table, written once.

Everything else derives from these models: the SQL DDL (`core.warehouse`), the CSV column
order and parsing (`core.validation`), the Avro schemas, the API models and the asset checks.
A column's Python/pandas dtype says how its text is parsed; `Field` checks say what a valid
value is; `metadata` carries the relational facts Pandera has no words for (primary and
foreign keys).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

# Ids are stored in a 32-bit signed INTEGER column; they are positive like every surrogate key.
ID_MIN = 1
ID_MAX = 2**31 - 1
NAME_MAX_LENGTH = 255

# Bounds that catch typos (year 0021, 20021) while admitting any plausible hire.
HIRED_FROM = pd.Timestamp("1900-01-01T00:00:00Z")
HIRED_UNTIL = pd.Timestamp("2999-12-31T23:59:59.999999Z")

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "us", "UTC"]

# What a name may not hold, by Unicode category. A line break or tab in a name is a broken quote
# far more often than a real name, and an invisible or direction-changing character makes a
# name look like another one, or like nothing. Refused: Cc (controls: tab, line feed, NEL
# U+0085), Cf (format: soft hyphen, zero-width space U+200B, direction marks and overrides such
# as U+202E, BOM), Zl (U+2028) and Zp (U+2029). The zero-width joiners U+200C and U+200D are Cf
# but Persian, Indic scripts and emoji need them to spell words, so they may stand inside a
# name, not make all of it. Allowed: Co (private use: legacy and custom glyphs) and Cn
# (unassigned: a character Unicode assigns later must not be refused by an older Python).
# Cs (surrogates) cannot occur in UTF-8 text; the JSON API refuses an escaped one as malformed.
REFUSED_NAME_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")
NAME_JOINERS = "\u200c\u200d"
# Unicode has put every Cc, Cf, Zl and Zp character in planes 0, 1 and 14; a test holds the
# whole code space to that, so the scan at import covers only those planes, not all 17.
_PLANES_WITH_FORMAT_CHARACTERS = (range(0x0000, 0x20000), range(0xE0000, 0xF0000))


def character_class(code_points: Iterable[int]) -> str:
    """Code points as the body of a regex class, runs written `a-z` in literal characters:
    Python's `re` (Pandera) and RE2 (Arrow) read literal characters alike, while their escapes
    for characters past U+00FF differ (`\\u2028` against `\\x{2028}`)."""
    runs: list[list[int]] = []
    for point in sorted(code_points):
        if runs and point == runs[-1][1] + 1:
            runs[-1][1] = point
        else:
            runs.append([point, point])
    return "".join(chr(low) if low == high else f"{chr(low)}-{chr(high)}" for low, high in runs)


def refused_name_characters() -> set[int]:
    """Every code point of the refused categories, joiners excepted (see above)."""
    return {
        point
        for plane in _PLANES_WITH_FORMAT_CHARACTERS
        for point in plane
        if unicodedata.category(chr(point)) in REFUSED_NAME_CATEGORIES and chr(point) not in NAME_JOINERS
    }


_REFUSED_CLASS = character_class(refused_name_characters())
# Leading joiners, then one character that is neither refused nor a joiner, then anything not
# refused. Each character has one place to go, so Python's backtracking `re` stays linear too.
NAME_CHARACTERS_PATTERN = f"^[{NAME_JOINERS}]*[^{_REFUSED_CLASS}{NAME_JOINERS}][^{_REFUSED_CLASS}]*$"
NAME_CHARACTERS_RULE = (
    "must not contain control or invisible format characters (Unicode Cc, Cf, Zl, Zp: tabs, line breaks, "
    "zero-width spaces, direction marks), nor be only zero-width joiners"
)


def _id_field(description: str, references: str | None = None) -> object:
    metadata: dict[str, object] = {"primary_key": True} if references is None else {"references": references}
    return pa.Field(ge=ID_MIN, le=ID_MAX, nullable=False, description=description, metadata=metadata)


def _name_field(description: str) -> object:
    return pa.Field(
        nullable=False,
        str_length={"min_value": 1, "max_value": NAME_MAX_LENGTH},
        str_matches=NAME_CHARACTERS_PATTERN,  # judged after trimming, like every rule
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
    """A table name that is none of the tables in question (the dictionary's, unless `known`
    says otherwise); the message lists them. The one "unknown table" error of every layer."""

    def __init__(self, name: str, known: Iterable[str] = (), *, listing: str = "expected one of"):
        super().__init__(f"unknown table {excerpt(name)}: {listing} {', '.join(known or TABLES)}")
        self.name = name


EXCERPT_CHARACTERS = 80


def excerpt(text: str, *, quoted: bool = True) -> str:
    """A value as a message quotes it: `repr` (invisible characters shown as escapes), cut to its
    first 80 characters plus its length when longer, so one 50 MB field never makes a 50 MB
    reason or log line. `quoted=False` for text that is safe bare (digits, JSON)."""
    shown = repr if quoted else str
    if len(text) <= EXCERPT_CHARACTERS:
        return shown(text)
    return f"{shown(text[:EXCERPT_CHARACTERS])}… ({len(text):,} characters)"
