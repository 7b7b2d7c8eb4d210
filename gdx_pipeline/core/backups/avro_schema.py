"""Which tables are backed up, and their Avro schemas, derived — never written by hand.

The three data tables take their columns, types and docs from the data dictionary; the
rejected-row log, which has no Pandera model, takes them from its SQLAlchemy table. Both end
up as one `BackupTable`: the column facts the backup writer, the restore verifier and the
loaders need, plus the Avro schema (ints as `int`, 64-bit integers as `long`, times as
`timestamp-micros` in UTC, text and JSON as `string`, nullable columns as a union with null).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from gdx_pipeline.core.backups.errors import UnknownBackupTableError
from gdx_pipeline.core.warehouse import data_tables, rejected_rows
from gdx_pipeline.dictionary import TABLES, ForeignKey, TableSpec

# Avro namespace of every record schema we write; part of the schema fingerprint.
AVRO_NAMESPACE = "gdx_pipeline.backup"

# Column kinds, and the Avro type each one is written as.
_AVRO_TYPES: dict[str, object] = {
    "integer": "int",
    "long": "long",
    "text": "string",
    "json": "string",
    "timestamp": {"type": "long", "logicalType": "timestamp-micros"},
}


@dataclass(frozen=True)
class BackupColumn:
    name: str
    kind: str  # 'integer' (32-bit), 'long', 'text', 'json' or 'timestamp' (UTC)
    nullable: bool
    doc: str
    max_length: int | None = None  # characters, for bounded text columns


@dataclass(frozen=True)
class BackupTable:
    """A table as the backups see it: columns in order, keys, and where it came from."""

    name: str
    doc: str
    columns: tuple[BackupColumn, ...]
    primary_key: str
    foreign_keys: tuple[ForeignKey, ...] = ()
    spec: TableSpec | None = None  # the dictionary model, for the data tables
    sql_table: sa.Table = field(default=None, compare=False, repr=False)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> BackupColumn:
        return next(c for c in self.columns if c.name == name)

    @property
    def avro_schema(self) -> dict:
        return avro_schema(self)

    @property
    def schema_fingerprint(self) -> str:
        return schema_fingerprint(self.avro_schema)


def avro_schema(table: BackupTable) -> dict:
    fields = []
    for column in table.columns:
        avro_type = _AVRO_TYPES[column.kind]
        entry: dict[str, object] = {"name": column.name, "doc": column.doc}
        if column.nullable:
            entry |= {"type": ["null", avro_type], "default": None}
        else:
            entry["type"] = avro_type
        fields.append(entry)
    return {"type": "record", "name": table.name, "namespace": AVRO_NAMESPACE, "doc": table.doc, "fields": fields}


def schema_fingerprint(schema: dict | str) -> str:
    """sha256 of what makes two schemas read alike: names, types and logical types, not docs.

    Avro's Parsing Canonical Form would drop `logicalType`, and with it the difference between a
    hire time and a plain number, so we normalise by hand.
    """
    return hashlib.sha256(schema_signature(schema).encode()).hexdigest()


def schema_signature(schema: dict | str) -> str:
    if isinstance(schema, str):
        schema = json.loads(schema)
    return json.dumps(_without_docs(schema), sort_keys=True, separators=(",", ":"))


def _without_docs(node: object) -> object:
    if isinstance(node, dict):
        return {k: _without_docs(v) for k, v in node.items() if k not in {"doc", "default", "aliases"} and not k.startswith("__")}
    if isinstance(node, list):
        return [_without_docs(v) for v in node]
    return node


def _from_spec(spec: TableSpec) -> BackupTable:
    columns = []
    for name, column in spec.schema.columns.items():
        kind = spec.column_kind(name)
        max_length = data_tables[spec.name].c[name].type.length if kind == "text" else None
        columns.append(BackupColumn(name, kind, bool(column.nullable), column.description or "", max_length))
    return BackupTable(
        name=spec.name,
        doc=spec.description,
        columns=tuple(columns),
        primary_key=spec.primary_key,
        foreign_keys=tuple(spec.foreign_keys),
        spec=spec,
        sql_table=data_tables[spec.name],
    )


def _sql_kind(column: sa.Column) -> str:
    column_type = column.type
    if isinstance(column_type, sa.JSON):
        return "json"
    if isinstance(column_type, sa.DateTime):
        return "timestamp"
    if isinstance(column_type, sa.BigInteger):
        return "long"
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, sa.String):  # Text is a String
        return "text"
    raise TypeError(f"no Avro mapping for column {column.table.name}.{column.name} of type {column_type}")


def _from_sql_table(table: sa.Table) -> BackupTable:
    columns = []
    for column in table.columns:
        kind = _sql_kind(column)
        doc = column.comment or ("JSON text." if kind == "json" else "")
        max_length = getattr(column.type, "length", None) if kind == "text" else None
        columns.append(BackupColumn(column.name, kind, bool(column.nullable), doc, max_length))
    (key,) = [c.name for c in table.primary_key.columns]
    return BackupTable(name=table.name, doc=table.comment or "", columns=tuple(columns), primary_key=key, sql_table=table)


# Dependency order: a table comes after every table it references.
BACKUP_TABLES: dict[str, BackupTable] = {
    **{name: _from_spec(spec) for name, spec in TABLES.items()},
    rejected_rows.name: _from_sql_table(rejected_rows),
}


def backup_table_named(name: str) -> BackupTable:
    try:
        return BACKUP_TABLES[name]
    except KeyError:
        raise UnknownBackupTableError(name, BACKUP_TABLES) from None


def referencing_tables(name: str) -> list[tuple[BackupTable, ForeignKey]]:
    """Tables (and their foreign keys) that point at `name`."""
    return [(table, fk) for table in BACKUP_TABLES.values() for fk in table.foreign_keys if fk.table == name]
