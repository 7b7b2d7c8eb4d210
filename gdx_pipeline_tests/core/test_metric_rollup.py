"""`hires_by_quarter`, the rollup both metrics read, held to the full queries over
`hired_employees` (`full_scan=True`) and to hires counted in Python: on the real data, on
generated data, after random sequences of file loads, API batches, restores and resets that move
employees between quarters, under concurrent batches, and in a warehouse made before it existed."""

from __future__ import annotations

import logging
import random
import tempfile
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings, strategies as st

from gdx_pipeline.core import hire_rollup, metrics, staged_writes
from gdx_pipeline.core.backups import backup_table, restore_snapshot, restore_table, take as backup_take
from gdx_pipeline.core.batches import apply_batch, block_from_mappings
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.reset import empty_warehouse
from gdx_pipeline.core.sample_data import generate_globant_files
from gdx_pipeline.core.utc import as_utc
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine, data_tables, hires_by_quarter, hires_by_quarter_changes
from gdx_pipeline.dictionary import table_spec

EMPLOYEES = table_spec("hired_employees")
YEARS = range(2019, 2024)


def counted_in_python(engine: sa.Engine) -> dict[tuple[int, int, int, int], int]:
    """The oracle of the rollup's rows: every employee read back and counted by its UTC quarter."""
    hired = data_tables["hired_employees"]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(hired.c.datetime, hired.c.department_id, hired.c.job_id)).all()
    return dict(Counter((as_utc(when).year, (as_utc(when).month - 1) // 3 + 1, department, job) for when, department, job in rows))


def _cells(table: sa.Table, engine: sa.Engine) -> list[tuple[int, int, int, int, int]]:
    """The (year, quarter, department_id, job_id, hires) rows of the rollup or its change log,
    a PostgreSQL change row's arrays taken apart."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.year, table.c.quarter, table.c.department_id, table.c.job_id, table.c.hires)).all()
    return [cell for row in rows for cell in (zip(*row) if isinstance(row[0], list) else [tuple(row)])]


def stored_rollup(engine: sa.Engine) -> dict[tuple[int, int, int, int], int]:
    """The rollup's cells plus the changes not folded into them yet, cells at 0 left out; checks on the way that
    no stored cell of the rollup is 0 or below."""
    rollup = _cells(hires_by_quarter, engine)
    assert all(hires > 0 for *_, hires in rollup)
    stored: Counter = Counter()
    for year, quarter, department, job, hires in rollup + _cells(hires_by_quarter_changes, engine):
        stored[(year, quarter, department, job)] += hires
    return {cell: hires for cell, hires in stored.items() if hires}


def pending_changes(engine: sa.Engine) -> int:
    """Changed cells not folded into the rollup yet."""
    return len(_cells(hires_by_quarter_changes, engine))


def assert_rollup_exact(engine: sa.Engine, years: range | list[int] = YEARS) -> None:
    """The rollup holds exactly the hires of the table, and every metric read from it is the full query's."""
    assert stored_rollup(engine) == counted_in_python(engine)
    assert metrics.years_with_hires(engine) == metrics.years_with_hires(engine, full_scan=True)
    for year in years:
        assert metrics.quarterly_hires_by_id(engine, year).equals(metrics.quarterly_hires_by_id(engine, year, full_scan=True)), year
        frame, mean = metrics.departments_above_mean(engine, year)
        full_frame, full_mean = metrics.departments_above_mean(engine, year, full_scan=True)
        assert frame.equals(full_frame) and mean == full_mean, year
        assert metrics.hires_per_department(engine, year).equals(metrics.hires_per_department(engine, year, full_scan=True)), year


def seed(engine: sa.Engine, departments: int = 3, jobs: int = 3) -> None:
    for name, column, count in (("departments", "department", departments), ("jobs", "job", jobs)):
        spec = table_spec(name)
        rows = [{"id": i, column: f"{name} {i}"} for i in range(1, count + 1)]
        apply_batch(engine, spec, block_from_mappings(spec, rows), request_id="seed")


def test_the_real_data(engine, globant_landing):
    ingest_landing(engine, globant_landing, run_id="rollup")
    assert metrics.years_with_hires(engine) == {2021: 1643, 2022: 286}  # the published load: 1,929 rows
    assert_rollup_exact(engine, [2020, 2021, 2022])


def test_generated_data_through_every_write_path(engine, folders, monkeypatch):
    """Small thresholds put a few thousand rows through the bulk and staged paths a big file takes."""
    monkeypatch.setattr(staged_writes, "BULK_ROWS", 500)
    monkeypatch.setattr(staged_writes, "SQLITE_STAGING_ROWS", 300)
    generate_globant_files(folders.landing, 3_000, dirty_share=0.03)
    ingest_landing(engine, folders, run_id="first load")  # into the empty table
    assert_rollup_exact(engine, [2020, 2021, 2022])
    generate_globant_files(folders.landing, 2_000, dirty_share=0.03, seed=7, prefix="again_", year_range=(2021, 2023))
    for path in folders.landing.glob("again_*"):
        path.rename(path.with_name(path.name.removeprefix("again_").replace(".csv", "_again.csv")))
    ingest_landing(engine, folders, run_id="upsert")  # the same ids again, mostly moved elsewhere
    assert_rollup_exact(engine)


# Instants at and beside every quarter edge, written with a Z or with an offset that puts the
# local date in the neighbouring quarter.
_EDGES = [
    datetime(year, month, 1, tzinfo=UTC) + delta
    for year in (2020, 2021, 2022, 2023)
    for month in (1, 4, 7, 10)
    for delta in (timedelta(microseconds=-1), timedelta(0), timedelta(days=40))
]
_ZONES = [UTC, timezone(timedelta(hours=-3)), timezone(timedelta(hours=5, minutes=30))]
_when = st.builds(lambda instant, zone: instant.astimezone(zone).isoformat(), st.sampled_from(_EDGES), st.sampled_from(_ZONES))
# Twelve employees, so writes keep landing on ones already there; department 4 does not exist:
# those rows are rejected and must count nowhere.
_row = st.fixed_dictionaries({"id": st.integers(1, 12), "datetime": _when, "department_id": st.integers(1, 4), "job_id": st.integers(1, 3)})
_rows = st.lists(_row, min_size=1, max_size=10, unique_by=lambda row: row["id"])
# Writes of rows come up three times as often as each of the others.
_operation = st.sampled_from(["file", "batch"] * 3 + ["backup", "restore", "restore snapshot", "reset"]).flatmap(
    lambda kind: st.tuples(st.just(kind), _rows if kind in ("file", "batch") else st.integers(0, 3))
)
EXAMPLES = 20


def test_random_writes_keep_the_rollup_exact(engine, monkeypatch):
    monkeypatch.setattr(staged_writes, "BULK_ROWS", 8)  # bulk paths on PostgreSQL, from 8 rows
    monkeypatch.setattr(staged_writes, "SQLITE_STAGING_ROWS", 6)  # SQLite's staged upsert, from 6 rows
    monkeypatch.setattr(hire_rollup, "FOLD_CELLS", 4)  # changes folded into the rollup every few writes, between them pending

    @given(operations=st.lists(_operation, min_size=3, max_size=8))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def exact_after_each(operations: list) -> None:
        empty_warehouse(engine)
        seed(engine)
        with tempfile.TemporaryDirectory() as scratch:
            folders = DataFolders(Path(scratch)).ensure()
            backups: list[str] = []
            for step, (kind, argument) in enumerate(operations):
                if kind == "file":
                    text = "".join(f"{r['id']},Person {r['id']},{r['datetime']},{r['department_id']},{r['job_id']}\n" for r in argument)
                    (folders.landing / f"hired_employees_{step}.csv").write_text(text)
                    ingest_landing(engine, folders, run_id=f"step {step}")
                elif kind == "batch":
                    rows = [r | {"name": f"Person {r['id']}"} for r in argument]
                    apply_batch(engine, EMPLOYEES, block_from_mappings(EMPLOYEES, rows), request_id=f"step {step}")
                elif kind == "backup":
                    backups.append(backup_table(engine, folders, "hired_employees").file)
                    backup_take.backup_tables(engine, folders)  # a whole snapshot too
                elif kind == "restore" and backups:
                    restore_table(engine, folders, "hired_employees", backups[argument % len(backups)])
                elif kind == "restore snapshot" and backups:
                    restore_snapshot(engine, folders)
                elif kind == "reset":
                    empty_warehouse(engine)
                    seed(engine)
                assert_rollup_exact(engine, [2020, 2021, 2022, 2023])

    exact_after_each()


QUARTER_INSTANTS = [datetime(2021, month, 15, tzinfo=UTC).isoformat() for month in (2, 5, 8, 11)]  # one per quarter


@pytest.fixture
def seeded_postgres(postgres_url, monkeypatch):
    """A PostgreSQL warehouse with 3 departments and 3 jobs: where API batches run side by side,
    folding their changes into the rollup every few batches, while others append theirs."""
    monkeypatch.setattr(hire_rollup, "FOLD_CELLS", 10)
    engine = create_warehouse_engine(postgres_url)
    create_schema(engine)
    seed(engine)
    yield engine
    engine.dispose()


def write_concurrently(engine: sa.Engine, writers: int, batches, *, barrier: threading.Barrier | None = None) -> None:
    """`writers` threads, writer k applying each batch of `batches(k)` (lists of employee rows) as
    an API batch; fails with what any writer raised. A writer that fails aborts `barrier`, so the
    others, waiting on it between batches, stop too."""
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            for n, rows in enumerate(batches(offset)):
                apply_batch(engine, EMPLOYEES, block_from_mappings(EMPLOYEES, rows), request_id=f"{offset}-{n}")
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            if barrier is not None:
                barrier.abort()

    threads = [threading.Thread(target=write, args=(offset,)) for offset in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


@pytest.mark.postgres
@pytest.mark.parametrize("spacing", [1, 1_000], ids=["consecutive ids", "spread ids"])
def test_concurrent_batches_moving_the_same_employees(seeded_postgres, spacing):
    """API batches share the table's lock on PostgreSQL; reading the rows it replaces FOR UPDATE
    makes each one's count of them right even when another batch moved them a moment before,
    whether it finds them by one range of the key (consecutive ids) or one by one (spread ids)."""

    def moving(offset: int):
        for n in range(40):
            moved = (n + offset) % 4
            department = moved % 3 + 1
            yield [
                {
                    "id": i * spacing,
                    "name": f"P{i}",
                    "datetime": QUARTER_INSTANTS[(i + moved) % 4],
                    "department_id": department,
                    "job_id": i % 3 + 1,
                }
                for i in range(1, 31)
            ]

    write_concurrently(seeded_postgres, 3, moving)
    assert sum(stored_rollup(seeded_postgres).values()) == 30
    assert_rollup_exact(seeded_postgres, [2021])


@pytest.mark.postgres
def test_concurrent_batches_inserting_the_same_new_employees(seeded_postgres, caplog):
    """Batches racing to insert the same new ids: each one but the first waits, at its insert, for
    the commit of the one inserting them, then reads them as rows it replaces and updates them,
    so every hire is counted once, in the quarter its last writer gave it, and none is tried again."""
    start = threading.Barrier(4)

    def racing(offset: int):
        for n in range(12):
            start.wait()  # every round, all four send the same fresh ids at once
            yield [
                {"id": n * 20 + i, "name": f"P{i}", "datetime": QUARTER_INSTANTS[offset], "department_id": offset % 3 + 1, "job_id": 1}
                for i in range(1, 21)
            ]

    with caplog.at_level(logging.WARNING, logger="gdx_pipeline.core.batches"):
        write_concurrently(seeded_postgres, 4, racing, barrier=start)
    assert [r.message for r in caplog.records if "trying again" in r.message] == []
    assert sum(stored_rollup(seeded_postgres).values()) == 12 * 20
    assert_rollup_exact(seeded_postgres, [2021])


def test_a_write_that_leaves_fold_cells_or_more_unfolded_folds_every_change(engine, monkeypatch):
    """Every batch appends its cells; one that leaves FOLD_CELLS or more unfolded moves every change
    into the rollup, so the metrics never read more than FOLD_CELLS of them plus a write's."""
    monkeypatch.setattr(hire_rollup, "FOLD_CELLS", 10)
    seed(engine)
    pending = []
    for n in range(12):  # 4 cells a batch: one hire in each quarter of 2021
        rows = [{"id": n * 4 + q + 1, "name": f"P{q}", "datetime": QUARTER_INSTANTS[q], "department_id": 1, "job_id": 1} for q in range(4)]
        apply_batch(engine, EMPLOYEES, block_from_mappings(EMPLOYEES, rows), request_id=str(n))
        pending.append(pending_changes(engine))
        assert_rollup_exact(engine, [2021])
    # 48 cells appended, 4 at a time: every third batch leaves 12 (10 or more) and folds them all
    assert pending == [4, 8, 0] * 4
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(hires_by_quarter.c.hires))).scalar_one() == 48 - pending[-1]


@pytest.mark.parametrize("largest_id", [1, 12, 30, 1_000, 2**25 - 1, 2**25, 2**31 - 1])
def test_count_hires_against_a_count_in_python(largest_id):
    """Random hires counted by cell as Python's Counter counts them, in key order, whether the
    keys span few cells (counted in one pass: ids up to 30 here), the ids fit the packed key
    (under 2**25) or take Arrow's grouping."""
    rng = random.Random(largest_id)
    instants = [datetime(2019, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(5 * 365 * 86_400)) for _ in range(3_000)]
    ids = [rng.choice([1, 2, largest_id, rng.randint(1, largest_id)]) for _ in range(2 * len(instants))]
    rows = pa.table(
        {
            "datetime": pa.array(instants, pa.timestamp("us", tz="UTC")),
            "department_id": pa.array(ids[::2], pa.int32()),
            "job_id": pa.array(ids[1::2], pa.int32()),
        }
    )
    counted = hire_rollup.count_hires(rows).to_pylist()
    cells = {(c["year"], c["quarter"], c["department_id"], c["job_id"]): c["hires"] for c in counted}
    expected = Counter((when.year, (when.month - 1) // 3 + 1, d, j) for when, d, j in zip(instants, ids[::2], ids[1::2]))
    assert cells == dict(expected) and len(cells) == len(counted)
    assert list(cells) == sorted(cells) or largest_id >= 2**25  # Arrow's grouping keeps no order


def test_reset_empties_the_rollup(engine, globant_landing):
    ingest_landing(engine, globant_landing, run_id="rollup")
    empty_warehouse(engine)
    assert stored_rollup(engine) == {}
    assert metrics.years_with_hires(engine) == {}


def test_a_warehouse_made_before_the_rollup_counts_its_hires_once(engine, globant_landing):
    ingest_landing(engine, globant_landing, run_id="rollup")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {hires_by_quarter.name}")
    create_schema(engine)  # what every start does
    assert_rollup_exact(engine, [2021])
    create_schema(engine)  # again: nothing counted twice
    assert_rollup_exact(engine, [2021])


def test_a_postgresql_rollup_made_at_full_pages_gets_half_empty_ones_at_the_next_start(postgres_url):
    """Folds update most of the rollup's rows at once; at fillfactor 50 those updates stay on their
    pages (HOT). A warehouse made while the rollup was created without it gets it when it starts."""
    engine = create_warehouse_engine(postgres_url)

    def options() -> list[str] | None:
        with engine.connect() as conn:
            return conn.exec_driver_sql(f"SELECT reloptions FROM pg_class WHERE oid = '{hires_by_quarter.name}'::regclass").scalar_one()

    try:
        create_schema(engine)
        assert options() == ["fillfactor=50"]
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {hires_by_quarter.name} RESET (fillfactor)")
        assert options() is None
        create_schema(engine)  # what every start does
        assert options() == ["fillfactor=50"]
    finally:
        engine.dispose()
