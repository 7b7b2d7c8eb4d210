"""The fast paths of a load hold the same promises as the general one: a first big load into an
empty table (bare table, indexes built after, on both engines), PostgreSQL's binary COPY,
blocks parsed in threads and handed over in order, the reject log written in one go."""

import random
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from gdx_pipeline.core import file_transaction, postgres_copy, staged_writes
from gdx_pipeline.core.backups import backup_tables, restore_snapshot
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.ordered_threads import LOAD_SWITCH_INTERVAL_SECONDS, map_in_order, short_gil_turns
from gdx_pipeline.core.sample_data import generate_globant_files
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine, data_tables, is_postgres, rejected_rows
from gdx_pipeline_tests.warehouse_contents import table_count


@contextmanager
def warehouse(url: str):
    engine = create_warehouse_engine(url)
    create_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def schema_of(engine: sa.Engine, table: str = "hired_employees") -> list[tuple]:
    """The table's indexes and constraints, as the database itself describes them."""
    with engine.connect() as conn:
        if is_postgres(engine):
            indexes = conn.execute(
                sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = :t"), {"t": table}
            ).all()
            constraints = conn.execute(
                sa.text("SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)"),
                {"t": table},
            ).all()
            return sorted(map(tuple, indexes)) + sorted(map(tuple, constraints))
        found = conn.execute(sa.text("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = :t"), {"t": table}).all()
        return sorted(map(tuple, found))


def contents(engine: sa.Engine) -> tuple[list, list]:
    with engine.connect() as conn:
        loaded = "SELECT id, name, datetime, department_id, job_id FROM hired_employees WHERE id < 1000000000 ORDER BY id"
        rows = conn.execute(sa.text(loaded)).all()
        rejects = conn.execute(
            sa.select(rejected_rows.c.source, rejected_rows.c.line_number, rejected_rows.c.raw_line, rejected_rows.c.reasons).order_by(
                rejected_rows.c.source, rejected_rows.c.line_number
            )
        ).all()
    return [tuple(r) for r in rows], [tuple(r) for r in rejects]


def land(folders: DataFolders, source: Path, names: list[str]) -> None:
    for name in names:
        shutil.copy(source / name, folders.landing / name)


@contextmanager
def ready_to_load(database_url: str, tmp_path: Path, employees: int, *, seed: int, dirty_share: float):
    """A warehouse with departments and jobs loaded and a generated employees file in landing:
    (engine, folders, the table's indexes and keys as the schema makes them)."""
    generate_globant_files(tmp_path / "src", employees, dirty_share=dirty_share, seed=seed)
    with warehouse(database_url) as engine:
        before = schema_of(engine)
        folders = DataFolders(tmp_path / "data").ensure()
        land(folders, tmp_path / "src", ["departments.csv", "jobs.csv"])
        ingest_landing(engine, folders)
        land(folders, tmp_path / "src", ["hired_employees.csv"])
        yield engine, folders, before


def test_a_first_big_load_stores_exactly_what_the_staged_text_path_stores(database_url, tmp_path, monkeypatch):
    monkeypatch.setattr(staged_writes, "BULK_ROWS", 50)
    with ready_to_load(database_url, tmp_path, 3_000, seed=11, dirty_share=0.05) as (engine, folders, before):
        outcome = ingest_landing(engine, folders)[-1]  # empty table: the bare-table path (binary COPY on PostgreSQL)
        assert outcome.status == "applied" and outcome.counts.inserted > 2_800
        assert schema_of(engine) == before  # every index, key and foreign key back, validated
        fast = contents(engine)

        # The same file through the general path: the table holds a row already (so it is staged
        # and upserted), and PostgreSQL gets CSV text, as every load did before binary COPY.
        monkeypatch.setattr(postgres_copy, "binary_schema", lambda table, columns: None)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM hired_employees"))
            conn.execute(sa.text("DELETE FROM rejected_rows"))
            conn.execute(sa.text("DELETE FROM ingestion_ledger WHERE table_name = 'hired_employees'"))
            conn.execute(sa.text("INSERT INTO hired_employees VALUES (1000000001, 'Already Here', '2021-01-01 00:00:00', 1, 1)"))
        land(folders, tmp_path / "src", ["hired_employees.csv"])
        assert ingest_landing(engine, folders)[-1].counts.inserted == outcome.counts.inserted
        assert contents(engine) == fast


def test_a_first_big_load_that_fails_rolls_back_and_keeps_every_index(database_url, tmp_path, monkeypatch):
    monkeypatch.setattr(staged_writes, "BULK_ROWS", 50)
    switch_interval = sys.getswitchinterval()
    with ready_to_load(database_url, tmp_path, 2_000, seed=12, dirty_share=0.02) as (engine, folders, before):

        def fail(*_args, **_kwargs):
            raise RuntimeError("the ledger write failed")

        with monkeypatch.context() as patch:
            patch.setattr(file_transaction, "record_ledger_entry", fail)
            with pytest.raises(RuntimeError, match="ledger write failed"):
                ingest_landing(engine, folders)
        assert table_count(engine, "hired_employees") == 0
        assert table_count(engine, "rejected_rows") == 0
        assert schema_of(engine) == before  # the dropped indexes came back with the rollback
        assert sys.getswitchinterval() == switch_interval  # the load's shorter GIL turns ended with it

        (outcome,) = ingest_landing(engine, folders)  # and the file loads on the next run
        assert outcome.status == "applied" and table_count(engine, "hired_employees") == outcome.counts.inserted
        assert schema_of(engine) == before


def test_a_big_load_whose_rows_lack_their_referenced_rows_rolls_back_whole(database_url, tmp_path, monkeypatch):
    """The database checks a big load's foreign keys once at the end (PostgreSQL: the keys added
    back; SQLite: through the keys' indexes before the commit): with validation fooled into
    taking an unknown department, the whole file rolls back and the next transaction on the same
    connection checks foreign keys row by row again."""
    monkeypatch.setattr(staged_writes, "BULK_ROWS", 50)
    with ready_to_load(database_url, tmp_path, 1_000, seed=13, dirty_share=0.0) as (engine, folders, before):
        with (folders.landing / "hired_employees.csv").open("a", encoding="utf-8") as handle:
            handle.write("5000,Orphan Row,2021-01-01T00:00:00Z,99,1\n")
        real_known_keys = file_transaction.known_keys
        fooled = {"department_id": [*range(1, 13), 99]}  # 99 exists nowhere
        monkeypatch.setattr(file_transaction, "known_keys", lambda conn, spec: {**real_known_keys(conn, spec), **fooled})
        with pytest.raises(sa.exc.IntegrityError) as refused:
            ingest_landing(engine, folders)
        if engine.dialect.name == "sqlite":
            assert "department_id 99 has no row in departments" in str(refused.value)
        assert table_count(engine, "hired_employees") == 0
        assert schema_of(engine) == before
        with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.text("INSERT INTO hired_employees VALUES (1, 'Orphan', '2021-01-01 00:00:00', 99, 1)"))


def frozen_pages(engine: sa.Engine, table: str) -> tuple[int, int]:
    """(pages marked all-visible, pages), as an ANALYZE counts them: COPY FREEZE marks every page
    it fills (PostgreSQL 14+), rows written any other way leave that to a later vacuum."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE {table}")
        return tuple(conn.exec_driver_sql(f"SELECT relallvisible, relpages FROM pg_class WHERE oid = '{table}'::regclass").one())


def test_a_first_big_load_and_a_restore_write_their_rows_frozen_on_postgresql(postgres_url, tmp_path, monkeypatch):
    """COPY FREEZE into the table the load truncated (empty, unreferenced), and into the tables a
    restore truncated, referenced ones included; rows written any other way are not frozen."""
    monkeypatch.setattr(staged_writes, "BULK_ROWS", 50)
    with ready_to_load(postgres_url, tmp_path, 500, seed=14, dirty_share=0.0) as (engine, folders, before):
        (outcome,) = ingest_landing(engine, folders)
        assert outcome.counts.inserted == 500
        visible, pages = frozen_pages(engine, "hired_employees")
        assert visible == pages > 0
        assert frozen_pages(engine, "departments") == (0, 1)  # a small load: plain rows
        assert schema_of(engine) == before
        loaded = contents(engine)

        backup_tables(engine, folders)
        restore_snapshot(engine, folders)
        assert frozen_pages(engine, "departments") == (1, 1)
        assert frozen_pages(engine, "hired_employees") == (pages, pages)
        assert contents(engine) == loaded and schema_of(engine) == before


def test_a_bulk_load_that_finds_its_empty_table_holding_a_row_keeps_the_row(postgres_url):
    """A row written by something that bypassed the writers' locks, between the emptiness check
    and the bulk load: the table is not truncated, the rows go in unfrozen beside it."""
    with warehouse(postgres_url) as engine:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO departments VALUES (1, 'Sales'); INSERT INTO jobs VALUES (1, 'Clerk')")
            conn.exec_driver_sql("INSERT INTO hired_employees VALUES (5, 'Already Here', '2021-01-01 00:00:00+00', 1, 1)")
        table = data_tables["hired_employees"]
        new_row = pa.table(
            {"id": [6], "name": ["New Row"], "datetime": pa.array([datetime(2021, 2, 1, tzinfo=UTC)]), "department_id": [1], "job_id": [1]}
        )
        with engine.begin() as conn:
            load = staged_writes.EmptyTableLoad(conn, table, list(table.c.keys()), bulk=True)
            assert not load.freeze
            load.add([new_row])
            load.finish()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT id, name FROM hired_employees ORDER BY id").all() == [(5, "Already Here"), (6, "New Row")]
        assert frozen_pages(engine, "hired_employees") == (0, 1)


def test_ids_out_of_order_load_sorted_and_the_later_duplicate_is_the_one_rejected(engine, folders, monkeypatch):
    monkeypatch.setattr(staged_writes, "BULK_ROWS", 0)  # the bare-table path even for a few rows
    (folders.landing / "departments.csv").write_text("1,Sales\n", encoding="utf-8")
    (folders.landing / "jobs.csv").write_text("1,Clerk\n", encoding="utf-8")
    ingest_landing(engine, folders)
    lines = ["9,Nine,2021-01-01T00:00:00Z,1,1", "3,Three,2021-01-02T00:00:00Z,1,1", "7,Seven,2021-01-03T00:00:00Z,1,1",
             "3,Three Again,2021-01-04T00:00:00Z,1,1", "1,One,2021-01-05T00:00:00Z,1,1"]  # fmt: skip
    (folders.landing / "hired_employees.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (outcome,) = ingest_landing(engine, folders)
    assert outcome.counts.inserted == 4 and outcome.rows_rejected == 1
    with engine.connect() as conn:
        loaded = conn.execute(sa.text("SELECT id, name FROM hired_employees ORDER BY id")).all()
        assert loaded == [(1, "One"), (3, "Three"), (7, "Seven"), (9, "Nine")]
        assert conn.execute(sa.select(rejected_rows.c.line_number, rejected_rows.c.reasons)).all() == [
            (4, ["id: duplicate of an earlier row in this file (got 3)"])
        ]


def test_rejected_lines_are_logged_byte_for_byte_whatever_copy_would_make_of_them(engine, folders):
    """Backslashes, `\\N`, tabs, quotes and commas mean something to COPY's text formats; the
    reject log (binary COPY on PostgreSQL) keeps each line exactly as it arrived."""
    (folders.landing / "departments.csv").write_text("1,Sales\n", encoding="utf-8")
    (folders.landing / "jobs.csv").write_text("1,Clerk\n", encoding="utf-8")
    ingest_landing(engine, folders)
    lines = [
        "5,Back\\slash,2021-01-01T00:00:00Z,1,1",
        "\\N,\\N,2021-01-01T00:00:00Z,1,1",
        'x1,"Quoted, ""comma""",2021-01-01T00:00:00Z,1,1',
        "2,Tab\there,2021-01-01T00:00:00Z,1,1",
        "3,Ünïcödé …,not a time,1,1",
        "4,\\.,2021-01-01T00:00:00Z,1,1,extra",
    ]
    (folders.landing / "hired_employees.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (outcome,) = ingest_landing(engine, folders)
    assert outcome.rows_rejected == 5  # the first row is valid: a backslash is text in a name
    with engine.connect() as conn:
        logged = conn.execute(sa.select(rejected_rows.c.line_number, rejected_rows.c.raw_line).order_by(rejected_rows.c.line_number)).all()
        assert conn.execute(sa.text("SELECT name FROM hired_employees")).scalar_one() == "Back\\slash"
    assert logged == [(number, line) for number, line in enumerate(lines, start=1)][1:]


# --- blocks handed over in order ------------------------------------------------------------------


def test_work_in_threads_comes_back_in_order():
    rng = random.Random(3)
    delays = [rng.random() / 500 for _ in range(60)]

    def work(i: int) -> int:
        time.sleep(delays[i])
        return i * i

    assert list(map_in_order(work, iter(range(60)), workers=3, ahead=2)) == [i * i for i in range(60)]


def test_a_failure_reaches_the_consumer_at_its_item_after_every_earlier_result():
    def work(i: int) -> int:
        if i == 5:
            raise ValueError("item 5")
        return i

    got = []
    with pytest.raises(ValueError, match="item 5"):
        for value in map_in_order(work, iter(range(20)), workers=2, ahead=2):
            got.append(value)
    assert got == [0, 1, 2, 3, 4]

    def items():
        yield from range(4)
        raise OSError("the source failed after 4 items")

    got = []
    with pytest.raises(OSError, match="after 4 items"):
        for value in map_in_order(lambda i: i, items(), workers=2, ahead=2):
            got.append(value)
    assert got == [0, 1, 2, 3]


def test_a_consumer_that_stops_early_stops_the_source_with_few_items_drawn():
    drawn = []
    lock = threading.Lock()

    def items():
        for i in range(10_000):
            with lock:
                drawn.append(i)
            yield i

    results = map_in_order(lambda i: i, items(), workers=2, ahead=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    results.close()
    time.sleep(0.05)
    with lock:
        assert len(drawn) < 10  # bounded: a few ahead, never the whole source


def test_short_gil_turns_last_while_any_holder_runs_and_end_with_the_last():
    """Overlapping loads (threads of one process) share the process's switch interval: the
    first shortens it, the last to finish, in whatever order, puts back what was there."""
    before = sys.getswitchinterval()
    assert before > LOAD_SWITCH_INTERVAL_SECONDS  # Python's default: the test would prove nothing otherwise
    first, second = short_gil_turns(), short_gil_turns()
    first.__enter__()
    assert sys.getswitchinterval() == pytest.approx(LOAD_SWITCH_INTERVAL_SECONDS)
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(LOAD_SWITCH_INTERVAL_SECONDS)  # the second still loads
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(before)
    with pytest.raises(RuntimeError), short_gil_turns():
        raise RuntimeError("the load failed")
    assert sys.getswitchinterval() == pytest.approx(before)
