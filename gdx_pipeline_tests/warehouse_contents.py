"""What a warehouse holds, read back the same way on SQLite and PostgreSQL: row counts, every row
of a table in key order, and the ledger's balance per table."""

from datetime import UTC, datetime

import sqlalchemy as sa

from gdx_pipeline.core.backups import BACKUP_TABLES
from gdx_pipeline.core.warehouse import data_tables
from gdx_pipeline.dictionary import TABLES


def table_count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def _utc(value: object) -> object:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def table_rows(engine: sa.Engine, table: str) -> list[tuple]:
    """Every row of a table in key order, times as aware UTC datetimes whatever the engine."""
    sql_table = BACKUP_TABLES[table].sql_table
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sql_table).order_by(sql_table.c[BACKUP_TABLES[table].primary_key])).all()
    return [tuple(_utc(v) for v in row) for row in rows]


def all_tables(engine: sa.Engine) -> dict[str, list[tuple]]:
    return {table: table_rows(engine, table) for table in BACKUP_TABLES}


def ledger_balances(engine: sa.Engine) -> dict[str, tuple[int, int]]:
    """(rows in the table, rows the ledger accounts for) per data table: counts_match_ledger's equation."""
    balances = {}
    with engine.connect() as conn:
        for table in TABLES:
            inserted, deleted = conn.execute(
                sa.text(
                    "SELECT coalesce(sum(rows_inserted), 0), coalesce(sum(rows_deleted), 0) FROM ingestion_ledger WHERE table_name = :t"
                ),
                {"t": table},
            ).one()
            rows = conn.execute(sa.select(sa.func.count()).select_from(data_tables[table])).scalar_one()
            balances[table] = (rows, int(inserted) - int(deleted))
    return balances
