"""Backups on SQLite and PostgreSQL: files, manifests, schema, snapshot consistency, retention,
and a backup killed half-way."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import fastavro
import psutil
import pytest
import sqlalchemy as sa

from gdx_pipeline.core.backups import (
    AVRO_SUFFIX,
    BACKUP_TABLES,
    BackupError,
    BackupNotFoundError,
    InvalidBackupNameError,
    backup_table,
    backup_tables,
    list_backups,
    list_snapshots,
    manifest_path,
    missing_tables,
    prune_backups,
    resolve_backup,
    restore_snapshot,
    restore_table,
    schema_fingerprint,
    take,
)
from gdx_pipeline.core.csv_source import file_sha256
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine, data_tables, rejected_rows
from gdx_pipeline.dictionary import TABLES
from gdx_pipeline_tests.core.conftest import UNICODE_EMPLOYEES
from gdx_pipeline_tests.paths import REPO_ROOT
from gdx_pipeline_tests.warehouse_contents import all_tables, ledger_balances, table_count, table_rows


def test_backup_files_manifests_and_header(loaded):
    engine, folders = loaded
    results = backup_tables(engine, folders)
    assert [r.table for r in results] == list(BACKUP_TABLES)
    assert len({r.snapshot_id for r in results}) == 1, "one run, one snapshot id"
    for result in results:
        assert result.rows == result.snapshot_rows == table_count(engine, result.table)
        assert result.path.parent == folders.backups / result.table
        assert result.file == f"{result.table}__{result.snapshot_id}{AVRO_SUFFIX}"
        manifest = json.loads(manifest_path(result.path).read_text())
        assert manifest["rows"] == result.rows
        assert manifest["sha256"] == file_sha256(result.path) == result.sha256
        assert manifest["bytes"] == result.path.stat().st_size
        assert manifest["snapshot_id"] == result.snapshot_id
        assert manifest["schema_fingerprint"] == schema_fingerprint(BACKUP_TABLES[result.table].avro_schema)
        assert manifest["codec"] == "deflate"
        with result.path.open("rb") as handle:
            reader = fastavro.reader(handle)
            assert reader.codec == "deflate"
            assert reader.metadata["gdx.snapshot_id"] == result.snapshot_id
            assert reader.metadata["gdx.table"] == result.table
            assert sum(1 for _ in reader) == result.rows
    assert not [p for p in folders.backups.rglob("*") if p.name.startswith(".")], "no temporary files left"
    assert set(list_snapshots(folders)[results[0].snapshot_id]) == set(BACKUP_TABLES)


def test_avro_schema_is_derived_from_the_dictionary():
    for name, spec in TABLES.items():
        schema = BACKUP_TABLES[name].avro_schema
        assert schema["doc"] == spec.description
        assert [f["name"] for f in schema["fields"]] == spec.columns
        for field in schema["fields"]:
            assert field["doc"] == spec.schema.columns[field["name"]].description
            expected = {"integer": "int", "text": "string", "timestamp": {"type": "long", "logicalType": "timestamp-micros"}}
            assert field["type"] == expected[spec.column_kind(field["name"])]
    rejects = BACKUP_TABLES["rejected_rows"].avro_schema
    assert [f["name"] for f in rejects["fields"]] == [c.name for c in rejected_rows.columns]
    nullable = {c.name for c in rejected_rows.columns if c.nullable}
    assert {f["name"] for f in rejects["fields"] if isinstance(f["type"], list)} == nullable


def test_file_contents_equal_the_database_to_the_microsecond(loaded):
    """Read the Avro files with plain fastavro: every row and column, UTC times, unicode intact."""
    engine, folders = loaded
    results = {r.table: r for r in backup_tables(engine, folders)}
    for table in BACKUP_TABLES:
        columns = BACKUP_TABLES[table].column_names
        with results[table].path.open("rb") as handle:
            from_file = [tuple(record[c] for c in columns) for record in fastavro.reader(handle)]
        expected = table_rows(engine, table)
        if table == "rejected_rows":  # JSON travels as its text
            reasons = columns.index("reasons")
            from_file = [row[:reasons] + (json.loads(row[reasons]),) + row[reasons + 1 :] for row in from_file]
        assert from_file == expected
    employees = {row[0]: row for row in table_rows(engine, "hired_employees")}
    assert employees[900001][1] == "Zoë Ñandú-Søren 😀"
    assert employees[900001][2] == datetime(2021, 7, 1, 12, 34, 56, 123456, tzinfo=UTC)
    assert employees[900003][2] == datetime(2022, 3, 4, 8, 6, 7, 1, tzinfo=UTC)


def test_backup_round_trip_restores_every_row(loaded):
    engine, folders = loaded
    before = all_tables(engine)
    backup_tables(engine, folders)
    with engine.begin() as conn:  # damage every table
        conn.execute(data_tables["hired_employees"].delete().where(data_tables["hired_employees"].c.id % 3 == 0))
        conn.execute(data_tables["hired_employees"].update().values(name="overwritten"))
        conn.execute(data_tables["jobs"].update().values(job="renamed"))
        conn.execute(rejected_rows.delete().where(rejected_rows.c.id > 10))
    for table in BACKUP_TABLES:
        restore_table(engine, folders, table)
    assert all_tables(engine) == before
    assert all(rows == ledger for rows, ledger in ledger_balances(engine).values())


class _ConcurrentWriter:
    """A log that, while the backup streams its first table, commits new rows elsewhere."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.done = False

    def info(self, msg: str) -> None:
        if not self.done and msg.startswith("departments:"):
            self.done = True
            with self.engine.begin() as conn:
                conn.execute(data_tables["departments"].insert().values(id=99, department="Written during the backup"))
                conn.execute(
                    data_tables["hired_employees"].insert().values(
                        id=999999, name="Late Hire", datetime=datetime(2021, 1, 1, tzinfo=UTC), department_id=99, job_id=1
                    )
                )

    def warning(self, msg: str) -> None:
        pass


def test_all_tables_come_from_one_snapshot(loaded):
    engine, folders = loaded
    writer = _ConcurrentWriter(engine)
    results = {r.table: r for r in backup_tables(engine, folders, log=writer)}
    assert writer.done
    assert table_count(engine, "departments") == 13
    assert results["departments"].rows == 12
    assert results["hired_employees"].rows == results["hired_employees"].snapshot_rows == 1929 + len(UNICODE_EMPLOYEES)


def test_codecs(loaded):
    engine, folders = loaded
    plain = backup_table(engine, folders, "jobs", codec="null")
    with plain.path.open("rb") as handle:
        assert fastavro.reader(handle).codec == "null"
    with pytest.raises(BackupError, match="codec 'brotli' is not available here; use one of null, deflate"):
        backup_table(engine, folders, "jobs", codec="brotli")
    assert [b.name for b in list_backups(folders, "jobs")] == [plain.file]


def test_unknown_table_is_refused(loaded):
    engine, folders = loaded
    with pytest.raises(BackupNotFoundError, match="unknown table 'employees'"):
        backup_table(engine, folders, "employees")
    with pytest.raises(BackupNotFoundError, match="unknown table 'employees'"):
        list_backups(folders, "employees")


def test_retention_keeps_the_newest(sqlite_url, folders):
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    made = [backup_table(engine, folders, "departments").file for _ in range(5)]
    removed = prune_backups(folders, keep=2)
    assert removed.keys() == {"departments"}
    assert sorted(removed["departments"]) == sorted(made[:3])
    assert [b.name for b in list_backups(folders, "departments")] == made[:2:-1]
    for name in removed:
        assert not (folders.backups / "departments" / name).exists()
        assert not manifest_path(folders.backups / "departments" / name).exists()
    with pytest.raises(BackupError, match="at least 1"):
        prune_backups(folders, keep=0)


def test_retention_never_deletes_the_last_intact_backup(sqlite_url, folders):
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    made = [backup_table(engine, folders, "jobs").path for _ in range(4)]
    for path in made[2:]:  # the two newest are damaged on disk
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    removed = prune_backups(folders, keep=2)
    assert removed == {"jobs": [made[0].name]}, "the newest intact backup (made[1]) is kept beyond the retention"
    assert [b.path for b in list_backups(folders, "jobs")] == [made[3], made[2], made[1]]


def test_backup_job_applies_retention(loaded):
    engine, folders = loaded
    for _ in range(3):
        backup_tables(engine, folders, retention=2)
    for table in BACKUP_TABLES:
        assert len(list_backups(folders, table)) == 2


def test_retention_keeps_a_snapshot_whole_while_any_table_keeps_it(engine, folders):
    """The defect: one table backed up on its own until retention took its part of an older
    full snapshot, which then restored without it. Now the older snapshot stays whole (the
    table keeps more than `keep`), until no table keeps it; then it goes as a whole."""
    whole = backup_tables(engine, folders, retention=2)[0].snapshot_id
    alone = [backup_table(engine, folders, "jobs", retention=2) for _ in range(3)]
    assert alone[-1].pruned == [alone[0].file], "a one-table snapshot nobody keeps goes"
    assert set(list_snapshots(folders)[whole]) == set(BACKUP_TABLES), "the full snapshot kept all its tables"
    assert [b.name for b in list_backups(folders, "jobs")] == [alone[2].file, alone[1].file, f"jobs__{whole}{AVRO_SUFFIX}"], (
        "jobs keeps its newest 2, and its part of the full snapshot the other tables keep"
    )
    assert [r.snapshot_id for r in restore_snapshot(engine, folders, whole)] == [whole] * len(BACKUP_TABLES)

    later = [backup_tables(engine, folders, retention=2) for _ in range(2)]
    snapshots = list_snapshots(folders)
    assert whole not in snapshots, "no table keeps the first full snapshot any more: all of it went"
    assert set(snapshots) == {later[0][0].snapshot_id, later[1][0].snapshot_id}
    assert [b.name for b in list_backups(folders, "jobs")] == [r.file for r in (later[1][1], later[0][1])]
    pruned_jobs = sorted(later[0][1].pruned + later[1][1].pruned)
    assert pruned_jobs == sorted([f"jobs__{whole}{AVRO_SUFFIX}", alone[1].file, alone[2].file])


def test_retention_never_breaks_a_snapshot_whatever_the_runs(sqlite_url, folders):
    """Random runs of random table subsets and retention settings (a fixed seed): after each,
    every snapshot on disk is whole and each table keeps at least its newest `keep` backups."""
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    rng = random.Random(20240612)
    taken: dict[str, list[str]] = {table: [] for table in BACKUP_TABLES}  # file names, oldest first
    taken_of: dict[str, set[str]] = {}  # snapshot id -> the tables that run backed up
    for _ in range(40):
        tables = rng.sample(list(BACKUP_TABLES), rng.randint(1, len(BACKUP_TABLES)))
        keep = rng.randint(1, 3)
        on_disk = {table: [b.name for b in list_backups(folders, table)] for table in BACKUP_TABLES}
        for result in backup_tables(engine, folders, tables, retention=keep):
            taken[result.table].append(result.file)
            taken_of.setdefault(result.snapshot_id, set()).add(result.table)
            on_disk[result.table].insert(0, result.file)
        for snapshot_id, members in list_snapshots(folders).items():
            assert set(members) == taken_of[snapshot_id], f"snapshot {snapshot_id} was broken"
            assert missing_tables(members) == []
        for table in BACKUP_TABLES:
            listed = [b.name for b in list_backups(folders, table)]
            assert listed[:keep] == on_disk[table][:keep], "a table keeps its newest backups"
            assert set(listed) <= set(taken[table])
            assert len(listed) <= keep * len(BACKUP_TABLES), "at most the snapshots some table keeps"


KILLED_BACKUP = """
import sys, time
from pathlib import Path
from gdx_pipeline.core import backups
from gdx_pipeline.core.backups import take
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.warehouse import create_warehouse_engine

class StallAfterFirstChunk:
    def info(self, msg):
        print("CHUNK " + msg, flush=True)
        time.sleep(600)
    def warning(self, msg):
        pass

if sys.argv[3] == "helper":
    take.HELPER_PROCESS_ROWS = 0
engine, folders = create_warehouse_engine(sys.argv[1]), DataFolders(Path(sys.argv[2]))
backups.backup_tables(engine, folders, ["hired_employees"], chunk_rows=500, log=StallAfterFirstChunk())
"""


def _wait_for(condition, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while not (found := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


@pytest.mark.parametrize("writer", ["in-process", "helper"])
def test_backup_killed_half_way_leaves_nothing_to_restore(loaded, database_url, writer):
    engine, folders = loaded
    folder = folders.backups / "hired_employees"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_BACKUP, database_url, str(folders.root), writer], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline()
        assert line.startswith("CHUNK hired_employees: 500 of"), line
        parts = _wait_for(lambda: list(folder.glob(".*.part")))
        assert len(parts) == 1, "the half-written backup exists only under its hidden temporary name"
        helpers = psutil.Process(child.pid).children()
        assert len(helpers) == (writer == "helper")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    _, alive = psutil.wait_procs(helpers, timeout=30)
    assert not alive, "the Avro helper process ends when the backup that fed it dies"
    assert [p.name for p in folder.iterdir()] == [parts[0].name]
    assert list_backups(folders, "hired_employees") == []
    with pytest.raises(BackupNotFoundError, match="no backup of hired_employees yet"):
        restore_table(engine, folders, "hired_employees", "latest")
    with pytest.raises(InvalidBackupNameError):
        resolve_backup(folders, "hired_employees", parts[0].name)
    # Retention clears the dead part file once it is old enough to be sure nothing writes it.
    old = time.time() - 2 * 24 * 3600
    os.utime(parts[0], (old, old))
    assert prune_backups(folders, keep=14) == {"hired_employees": [parts[0].name]}


def test_helper_process_writes_the_same_backup(loaded, monkeypatch):
    """Large tables are encoded by a helper process; small ones here: the files must read alike."""
    engine, folders = loaded
    in_process = backup_table(engine, folders, "hired_employees")
    monkeypatch.setattr(take, "HELPER_PROCESS_ROWS", 0)
    helped = backup_table(engine, folders, "hired_employees")
    readers = []
    for result in (in_process, helped):
        with result.path.open("rb") as handle:
            reader = fastavro.reader(handle)
            readers.append((reader.writer_schema, list(reader)))
        assert json.loads(manifest_path(result.path).read_text())["sha256"] == file_sha256(result.path)
    assert readers[0] == readers[1]
    assert helped.rows == in_process.rows == table_count(engine, "hired_employees")
    restore_table(engine, folders, "hired_employees", helped.file)
    assert table_count(engine, "hired_employees") == helped.rows
