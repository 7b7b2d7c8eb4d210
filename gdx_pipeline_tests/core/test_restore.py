"""Restores on SQLite and PostgreSQL: latest and named backups, whole snapshots, and every
refusal (corrupt, truncated, foreign or wrong-schema files, bad rows, bad names, orphans),
each of which must leave every table exactly as it was."""

import csv
import io
import json
import os
import shutil
from datetime import UTC, datetime

import fastavro
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings, strategies as st

from gdx_pipeline.core.backups import (
    BACKUP_TABLES,
    MANIFEST_FORMAT,
    BackupNotFoundError,
    InvalidBackupNameError,
    RestoreRefusedError,
    backup_table,
    backup_tables,
    list_backups,
    manifest_path,
    resolve_backup,
    restore_snapshot,
    restore_table,
    schema_fingerprint,
    verify_backup,
)
from gdx_pipeline.core.batches import block_from_csv_text
from gdx_pipeline.core.csv_source import file_sha256
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.validation import RowValidator, ValidatedBlock
from gdx_pipeline.core.warehouse import data_tables, rejected_rows
from gdx_pipeline.dictionary import TABLES
from gdx_pipeline_tests.paths import GLOBANT_DATA
from gdx_pipeline_tests.warehouse_contents import all_tables, ledger_balances, table_count, table_rows

STAMP = "20200101T000000.000000Z"


def _employees_of_department(engine: sa.Engine, department: int) -> int:
    table = data_tables["hired_employees"]
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.department_id == department)).scalar_one()


def test_restore_latest_and_a_named_backup(loaded):
    engine, folders = loaded
    first = backup_table(engine, folders, "hired_employees")
    at_first = table_rows(engine, "hired_employees")
    employees = data_tables["hired_employees"]
    with engine.begin() as conn:
        conn.execute(employees.delete().where(employees.c.id <= 100))
        conn.execute(employees.update().where(employees.c.id > 1000).values(job_id=7))
    second = backup_table(engine, folders, "hired_employees")
    at_second = table_rows(engine, "hired_employees")
    assert at_second != at_first

    accounted = ledger_balances(engine)["hired_employees"][1]
    assert accounted != len(at_second), "the deletes above bypassed the ledger"
    result = restore_table(engine, folders, "hired_employees", first.file)
    assert (result.backup, result.rows_restored, result.rows_replaced) == (first.file, len(at_first), len(at_second))
    assert table_rows(engine, "hired_employees") == at_first

    result = restore_table(engine, folders, "hired_employees", "latest")
    assert result.backup == second.file
    assert table_rows(engine, "hired_employees") == at_second
    # Each restore nets out what the ledger accounted for, so counts_match_ledger holds again.
    assert all(rows == ledger for rows, ledger in ledger_balances(engine).values())
    with engine.connect() as conn:
        sources = conn.execute(
            sa.text("SELECT source, sha256, rows_inserted, rows_deleted FROM ingestion_ledger WHERE source LIKE 'restore:%' ORDER BY id")
        ).all()
    assert [tuple(s) for s in sources] == [
        (f"restore:{first.file}", None, len(at_first), accounted),
        (f"restore:{second.file}", None, len(at_second), len(at_first)),
    ]


def test_restoring_the_reject_log_keeps_new_rejects_numbered_after_it(loaded):
    engine, folders = loaded
    before = table_rows(engine, "rejected_rows")
    backup_table(engine, folders, "rejected_rows")
    with engine.begin() as conn:
        conn.execute(rejected_rows.delete())
    restore_table(engine, folders, "rejected_rows")
    assert table_rows(engine, "rejected_rows") == before
    # New rejected rows still get fresh ids (PostgreSQL's sequence was moved past the restored ones).
    (folders.landing / "hired_employees_more.csv").write_text("5000,Bad Row,not a date,1,1\n", encoding="utf-8")
    ingest_landing(engine, folders, run_id="after-restore")
    assert table_count(engine, "rejected_rows") == len(before) + 1


def test_restore_snapshot_restores_related_tables_together(loaded):
    engine, folders = loaded
    before = all_tables(engine)
    backup_tables(engine, folders)
    employees, departments = data_tables["hired_employees"], data_tables["departments"]
    with engine.begin() as conn:
        conn.execute(employees.delete().where(employees.c.department_id == 12))
        conn.execute(departments.delete().where(departments.c.id == 12))
        conn.execute(departments.insert().values(id=13, department="New"))
        conn.execute(
            employees.insert().values(id=777777, name="New Hire", datetime=datetime(2022, 1, 1, tzinfo=UTC), department_id=13, job_id=1)
        )
    results = restore_snapshot(engine, folders, "latest")
    assert [r.table for r in results] == list(BACKUP_TABLES)
    assert len({r.snapshot_id for r in results}) == 1
    assert all_tables(engine) == before
    assert all(rows == ledger for rows, ledger in ledger_balances(engine).values())


# --- refusals: each leaves every table exactly as it was -------------------------------------


@pytest.fixture
def backed_up(loaded):
    """The real data, backed up once; returns (engine, folders, the tables' rows, results by table)."""
    engine, folders = loaded
    results = {r.table: r for r in backup_tables(engine, folders)}
    return engine, folders, all_tables(engine), results


def _assert_refused(engine, folders, before, table, backup, error, match):
    with pytest.raises(error, match=match) as raised:
        restore_table(engine, folders, table, backup)
    assert all_tables(engine) == before, "a refused restore changed the database"
    assert not list(folders.backups.glob(".restore-*")), "the restore spool was not cleaned up"
    return raised.value


def test_corrupt_byte_is_refused(backed_up):
    engine, folders, before, results = backed_up
    path = results["hired_employees"].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    _assert_refused(engine, folders, before, "hired_employees", "latest", RestoreRefusedError, "does not match the manifest's .*corrupt")


def test_corrupt_block_is_refused_even_when_the_manifest_agrees(backed_up):
    """The Avro layer catches damage by itself: a flipped byte inside the compressed data."""
    engine, folders, before, results = backed_up
    path = results["hired_employees"].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    _rewrite_manifest(path)
    _assert_refused(
        engine, folders, before, "hired_employees", "latest", RestoreRefusedError, "cannot be read|break the data dictionary|does not fit"
    )


def test_truncated_file_is_refused(backed_up):
    engine, folders, before, results = backed_up
    path = results["hired_employees"].path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _assert_refused(engine, folders, before, "hired_employees", "latest", RestoreRefusedError, "truncated")
    _rewrite_manifest(path, rows=results["hired_employees"].rows)  # a manifest that agrees on bytes and sha256
    _assert_refused(engine, folders, before, "hired_employees", "latest", RestoreRefusedError, "cannot be read after row")


def _rewrite_manifest(path, **changes):
    """Make the manifest agree with the file as it is now (what a careless copy might produce)."""
    sidecar = manifest_path(path)
    manifest = json.loads(sidecar.read_text())
    manifest |= {"sha256": file_sha256(path), "bytes": path.stat().st_size} | changes
    sidecar.write_text(json.dumps(manifest))


def _forge_backup(folders, table: str, schema: dict, records: list[dict], raw: bytes | None = None) -> str:
    """A file that looks like one of ours from the outside: right name, a manifest that agrees."""
    name = f"{table}__{STAMP}.avro"
    path = folders.backups / table / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is None:
        with path.open("wb") as handle:
            fastavro.writer(handle, schema, records)
    else:
        path.write_bytes(raw)
    manifest = {
        "format": MANIFEST_FORMAT, "table": table, "file": name, "rows": len(records), "bytes": path.stat().st_size,
        "sha256": file_sha256(path), "schema_fingerprint": schema_fingerprint(schema), "snapshot_id": STAMP,
        "created": "2020-01-01T00:00:00+00:00", "codec": "null",
    }
    manifest_path(path).write_text(json.dumps(manifest))
    return name


def test_wrong_schema_is_refused(backed_up):
    engine, folders, before, _ = backed_up
    schema = json.loads(json.dumps(BACKUP_TABLES["hired_employees"].avro_schema))
    schema["fields"][2]["type"] = "string"  # hire time as text
    records = [{"id": 1, "name": "A", "datetime": "2021-01-01T00:00:00Z", "department_id": 1, "job_id": 1}]
    name = _forge_backup(folders, "hired_employees", schema, records)
    error = _assert_refused(
        engine,
        folders,
        before,
        "hired_employees",
        name,
        RestoreRefusedError,
        'does not match the data dictionary.*column datetime is "string"',
    )
    assert error.details["schema_differences"]


def test_foreign_file_is_refused(backed_up):
    engine, folders, before, _ = backed_up
    raw = (GLOBANT_DATA / "hired_employees.csv").read_bytes()
    name = _forge_backup(folders, "hired_employees", BACKUP_TABLES["hired_employees"].avro_schema, [], raw=raw)
    _assert_refused(engine, folders, before, "hired_employees", name, RestoreRefusedError, "not a readable Avro file")


def test_another_tables_file_under_this_name_is_refused(backed_up):
    engine, folders, before, results = backed_up
    target = folders.backups / "hired_employees" / f"hired_employees__{STAMP}.avro"
    shutil.copy(results["jobs"].path, target)
    _rewrite_manifest_for(target, "hired_employees")
    _assert_refused(engine, folders, before, "hired_employees", target.name, RestoreRefusedError, "record is named 'jobs'")


def _rewrite_manifest_for(path, table):
    _forge_manifest = {
        "format": MANIFEST_FORMAT, "table": table, "file": path.name, "rows": 0, "bytes": path.stat().st_size, "sha256": file_sha256(path),
        "schema_fingerprint": schema_fingerprint(BACKUP_TABLES[table].avro_schema), "snapshot_id": STAMP,
        "created": "2020-01-01T00:00:00+00:00", "codec": "deflate",
    }
    manifest_path(path).write_text(json.dumps(_forge_manifest))


def test_rows_that_break_the_dictionary_are_refused(backed_up):
    engine, folders, before, _ = backed_up
    good = {"id": 1, "name": "Fine", "datetime": datetime(2021, 1, 1, tzinfo=UTC), "department_id": 1, "job_id": 1}
    records = [
        good,
        good | {"id": 2, "department_id": 0},  # ids start at 1
        good | {"id": 3, "name": "x" * 300},  # names are at most 255 characters
        good | {"id": 4, "datetime": datetime(1850, 1, 1, tzinfo=UTC)},  # before any plausible hire
        good,  # a duplicate id
    ]
    name = _forge_backup(folders, "hired_employees", BACKUP_TABLES["hired_employees"].avro_schema, records)
    error = _assert_refused(engine, folders, before, "hired_employees", name, RestoreRefusedError, "4 row\\(s\\) break the data dictionary")
    rules = error.details["failures_by_rule"]
    assert rules.pop("id: duplicate") == 1
    # The other three in ingestion's own words, as a landing file with these rows would be told.
    assert rules == dict.fromkeys(_ingestion_rules("hired_employees", records[1:4]), 1)
    examples = error.details["examples"]
    assert (
        len(examples) == 4 and examples[0].startswith("id 2: department_id: ") and examples[-1] == "id 1: id: duplicate of an earlier row"
    )


def test_names_are_judged_as_ingestion_judges_them(backed_up):
    """A restore applies ingestion's rules (trim; blank is missing; no control characters) and
    refuses a backup whose values ingestion would reject or store differently, on both tables
    with names."""
    engine, folders, before, _ = backed_up
    departments = [
        {"id": 1, "department": "Supply Chain"},
        {"id": 2, "department": "   "},  # blank: missing
        {"id": 3, "department": "  Maintenance "},  # ingestion would store 'Maintenance'
        {"id": 4, "department": "Sales\tEMEA"},  # a control character
        {"id": 5, "department": "Staff\n"},  # a trailing line break is trimmed whitespace
        {"id": 6, "department": "\u00a0Legal\u2003"},  # Unicode spaces are whitespace too
    ]
    name = _forge_backup(folders, "departments", BACKUP_TABLES["departments"].avro_schema, departments)
    error = _assert_refused(engine, folders, before, "departments", name, RestoreRefusedError, "5 row\\(s\\) break the data dictionary")
    rules = error.details["failures_by_rule"]
    assert rules.pop("department: missing") == 1
    assert rules.pop("department: not as ingestion stores it") == 3
    assert list(rules) == [rule for rule in _ingestion_rules("departments", [departments[3]])]
    assert "id 3: department: not as ingestion stores it (got '  Maintenance ', stored as 'Maintenance')" in error.details["examples"]

    hire = {"datetime": datetime(2021, 1, 1, tzinfo=UTC), "department_id": 1, "job_id": 1}
    employees = [
        hire | {"id": 1, "name": " "},
        hire | {"id": 2, "name": "Ada Lovelace "},
        hire | {"id": 3, "name": "Grace\x07Hopper"},
        hire | {"id": 4, "name": "Fine"},
    ]
    name = _forge_backup(folders, "hired_employees", BACKUP_TABLES["hired_employees"].avro_schema, employees)
    error = _assert_refused(engine, folders, before, "hired_employees", name, RestoreRefusedError, "3 row\\(s\\) break the data dictionary")
    assert {"name: missing", "name: not as ingestion stores it"} < set(error.details["failures_by_rule"])


def _csv_text(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _ingestion(table: str, records: list[dict]) -> ValidatedBlock:
    """The records as a landing file holds them (written by Python's csv module), judged by
    ingestion; every id a foreign key names exists."""
    spec = TABLES[table]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([[_csv_text(record[c]) for c in spec.columns] for record in records])
    known = {fk.column: {record[fk.column] for record in records} for fk in spec.foreign_keys}
    return RowValidator(spec, known).validate(block_from_csv_text(spec, text.getvalue()))


def _ingestion_rules(table: str, records: list[dict]) -> list[str]:
    return [reason.split(" (got ", 1)[0] for row in _ingestion(table, records).rejected for reason in row.reasons]


def _mostly(usual: st.SearchStrategy, edge: st.SearchStrategy) -> st.SearchStrategy:
    """Three draws in four from `usual`, so whole backups pass as often as they fail."""
    return st.integers(0, 3).flatmap(lambda pick: edge if pick == 0 else usual)


def _records(table: str) -> st.SearchStrategy[list[dict]]:
    """Rows with unique ids and values around every rule's edges: text with inner, leading and
    trailing spaces, Unicode spaces, tabs, line breaks, other control characters, long runs."""
    pieces = [*"ab Zé😀 \t\n\x07\x1f\x7f", "\u00a0", "\u2003", "x" * 60]
    text = _mostly(
        st.sampled_from(["Sales", "Zoë Ñandú-Søren", "李小龍", "a  b"]), st.lists(st.sampled_from(pieces), max_size=8).map("".join)
    )
    ids = _mostly(st.integers(1, 2**31 - 1), st.sampled_from([-3, 0, 2**31 - 1]))
    row = {"departments": st.fixed_dictionaries({"department": text}), "jobs": st.fixed_dictionaries({"job": text})}.get(table)
    if table == "hired_employees":
        when = st.datetimes(min_value=datetime(1850, 1, 1), max_value=datetime(3100, 1, 1), timezones=st.just(UTC))
        row = st.fixed_dictionaries(
            {"name": text, "datetime": when, "department_id": _mostly(st.integers(1, 3), st.just(0)), "job_id": st.integers(1, 3)}
        )
    return st.lists(st.tuples(ids, row), min_size=1, max_size=6, unique_by=lambda pair: pair[0]).map(
        lambda pairs: [{"id": key} | values for key, values in pairs]
    )


# A fixed, modest budget in CI; GDX_RESTORE_FUZZ_EXAMPLES=2000 for a longer run.
FUZZ_EXAMPLES = int(os.environ.get("GDX_RESTORE_FUZZ_EXAMPLES", "60"))


@pytest.mark.parametrize("table", ["departments", "hired_employees"])
def test_a_backup_restores_exactly_when_ingestion_would_load_it_unchanged(folders, tmp_path, table):
    """The oracle is ingestion itself: the rows written as a CSV file by Python's csv module and
    judged as a landing file. A backup passes verification exactly when ingestion rejects none of
    its rows and would store every value as the backup holds it; otherwise the refusal counts
    those rows."""

    @given(records=_records(table))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def judged_alike(records: list[dict]) -> None:
        ingested = _ingestion(table, records)
        stored = {row["id"]: row for row in ingested.valid.to_pylist()}
        differ = sum(1 for record in records if record["id"] in stored and stored[record["id"]] != record)
        expected_failing = len(ingested.rejected) + differ
        info = resolve_backup(folders, table, _forge_backup(folders, table, BACKUP_TABLES[table].avro_schema, records))
        try:
            verify_backup(info, tmp_path).spool.unlink()
        except RestoreRefusedError as refused:
            assert refused.details["failing_rows"] == expected_failing, (refused, ingested.rejected)
        else:
            assert expected_failing == 0, ingested.rejected

    judged_alike()


@pytest.mark.parametrize(
    "backup, error, match",
    [
        ("hired_employees__20991231T000000.000000Z.avro", BackupNotFoundError, "no backup named"),
        ("../departments/departments__20991231T000000.000000Z.avro", InvalidBackupNameError, "not a plain backup file name"),
        ("/etc/passwd", InvalidBackupNameError, "not a plain backup file name"),
        ("..", InvalidBackupNameError, "not a plain backup file name"),
        ("hired_employees.csv", InvalidBackupNameError, "not a backup file name"),
        ("jobs__20991231T000000.000000Z.avro", InvalidBackupNameError, "is a backup of jobs, not of hired_employees"),
        ("", InvalidBackupNameError, "not a plain backup file name"),
    ],
)
def test_bad_backup_names_are_refused(backed_up, backup, error, match):
    engine, folders, before, _ = backed_up
    _assert_refused(engine, folders, before, "hired_employees", backup, error, match)


def test_a_file_without_manifest_is_not_a_backup(backed_up):
    engine, folders, before, results = backed_up
    manifest_path(results["jobs"].path).unlink()
    _assert_refused(engine, folders, before, "jobs", results["jobs"].file, BackupNotFoundError, "has no valid manifest")
    assert list_backups(folders, "jobs") == []


def test_unknown_table_is_refused(backed_up):
    engine, folders, before, _ = backed_up
    _assert_refused(engine, folders, before, "employees", "latest", BackupNotFoundError, "unknown table 'employees'")


def test_restoring_departments_that_would_orphan_employees_is_refused(backed_up):
    engine, folders, _, _ = backed_up
    with engine.begin() as conn:
        conn.execute(data_tables["departments"].insert().values(id=13, department="Added after the backup"))
        conn.execute(
            data_tables["hired_employees"].insert(),
            [
                {"id": 800000 + i, "name": "Hire", "datetime": datetime(2022, 1, 1, tzinfo=UTC), "department_id": 13, "job_id": 1}
                for i in range(3)
            ],
        )
    before = all_tables(engine)
    error = _assert_refused(
        engine,
        folders,
        before,
        "departments",
        "latest",
        RestoreRefusedError,
        "3 row\\(s\\) of hired_employees via hired_employees.department_id -> departments.id",
    )
    assert error.details["orphan_count"] == 3


def test_restoring_employees_whose_departments_are_gone_is_refused(backed_up):
    engine, folders, _, _ = backed_up
    lost = _employees_of_department(engine, 12)
    assert lost > 0
    employees, departments = data_tables["hired_employees"], data_tables["departments"]
    with engine.begin() as conn:
        conn.execute(employees.delete().where(employees.c.department_id == 12))
        conn.execute(departments.delete().where(departments.c.id == 12))
    before = all_tables(engine)
    error = _assert_refused(
        engine,
        folders,
        before,
        "hired_employees",
        "latest",
        RestoreRefusedError,
        f"{lost:,} row\\(s\\) of hired_employees via hired_employees.department_id -> departments.id",
    )
    assert error.details["orphans"] == {"hired_employees.department_id -> departments.id": lost}


def test_restoring_departments_alone_keeps_referenced_rows(backed_up):
    """Departments restored alone are merged: renamed ones come back, none referenced is ever deleted."""
    engine, folders, before, _ = backed_up
    with engine.begin() as conn:
        conn.execute(data_tables["departments"].update().values(department="renamed"))
        conn.execute(data_tables["departments"].insert().values(id=14, department="Unreferenced, added later"))
    restore_table(engine, folders, "departments", "latest")
    assert all_tables(engine) == before
    assert all(rows == ledger for rows, ledger in ledger_balances(engine).values())


def test_no_snapshot_yet(loaded):
    engine, folders = loaded
    backup_table(engine, folders, "jobs")  # a partial snapshot is not `latest`
    with pytest.raises(BackupNotFoundError, match="no snapshot that covers every table"):
        restore_snapshot(engine, folders, "latest")
    with pytest.raises(BackupNotFoundError, match="no snapshot 'nope'"):
        restore_snapshot(engine, folders, "nope")


# --- whole snapshots -------------------------------------------------------------------------


def test_an_incomplete_snapshot_is_refused_naming_the_missing_tables(backed_up):
    """A snapshot that lost a table's backup (deleted by hand, or by retention before it kept
    snapshots whole) is refused as a whole; the tables it still has are not restored."""
    engine, folders, _, results = backed_up
    snapshot_id = results["jobs"].snapshot_id
    for table in ("jobs", "rejected_rows"):
        results[table].path.unlink()
    with engine.begin() as conn:
        conn.execute(data_tables["departments"].update().values(department="renamed"))
    before = all_tables(engine)
    with pytest.raises(
        RestoreRefusedError, match=f"snapshot {snapshot_id} is incomplete: .*the backup of jobs, rejected_rows is gone"
    ) as raised:
        restore_snapshot(engine, folders, snapshot_id)
    assert raised.value.details["missing_tables"] == ["jobs", "rejected_rows"]
    assert all_tables(engine) == before, "no table of the incomplete snapshot was restored"
    with pytest.raises(BackupNotFoundError, match="no snapshot that covers every table"):
        restore_snapshot(engine, folders, "latest")


def test_a_snapshot_of_some_tables_is_whole_and_restores_them(backed_up):
    """Backing up some tables together makes a snapshot of those tables: restoring it restores
    exactly them, together."""
    engine, folders, before, _ = backed_up
    pair = backup_tables(engine, folders, ["departments", "jobs"])
    with engine.begin() as conn:
        conn.execute(data_tables["departments"].update().values(department="renamed"))
        conn.execute(data_tables["jobs"].update().values(job="renamed"))
    results = restore_snapshot(engine, folders, pair[0].snapshot_id)
    assert [r.table for r in results] == ["departments", "jobs"]
    assert all_tables(engine) == before


def test_a_manifest_from_before_snapshot_tables_counts_as_a_snapshot_of_every_table(backed_up):
    """Older manifests do not say which tables their run took: a lone one is taken to be part of
    a full snapshot and refused as incomplete, never restored in part."""
    engine, folders, before, _ = backed_up
    lone = backup_table(engine, folders, "jobs")
    sidecar = manifest_path(lone.path)
    manifest = json.loads(sidecar.read_text())
    assert manifest.pop("snapshot_tables") == ["jobs"]
    sidecar.write_text(json.dumps(manifest))
    with pytest.raises(RestoreRefusedError, match="the backup of departments, hired_employees, rejected_rows is gone"):
        restore_snapshot(engine, folders, lone.snapshot_id)
    assert all_tables(engine) == before
    assert restore_table(engine, folders, "jobs", lone.file).rows_restored == len(before["jobs"]), "the file itself still restores alone"
