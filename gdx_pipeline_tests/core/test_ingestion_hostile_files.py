"""Hostile files on both engines: files rewritten while read, records too long to be rows, names
as long as a file system allows, file operations failing for one file, one huge field.

A file is changed mid-run at a fixed point of the run through the `log` that ingestion reports
progress to (the seam Dagster's `context.log` plugs into): a run reports each block applied,
so with small blocks the change lands while the file is still being read, and a run reports
"applied" after its commit, before the move. No timing is involved, so nothing is flaky.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from gdx_pipeline.core.folders import NAME_MAX_BYTES
from gdx_pipeline.core.ingestion import CHANGED_READS_BEFORE_QUARANTINE, ingest_file, ingest_landing
from gdx_pipeline.core.warehouse import data_tables, files_changed_while_read, ingestion_ledger, quarantined_files, rejected_rows
from gdx_pipeline_tests.core.landing import drop, rejects_by_line
from gdx_pipeline_tests.paths import REPO_ROOT
from gdx_pipeline_tests.warehouse_contents import table_count

BLOCK = 1024  # with small blocks, a file of a few thousand rows is read in dozens of steps


def jobs_text(ids: range, name: str = "Job") -> str:
    return "".join(f"{i},{name} {i:06d}\n" for i in ids)


def settled(path: Path) -> Path:
    """As the sensor hands files over: untouched for a while (its mtime 10 s in the past)."""
    past = time.time() - 10
    os.utime(path, (past, past))
    return path


class ChangeAt:
    """A `log` that runs `change` the first time a message contains `marker`."""

    def __init__(self, marker: str, change: Callable[[], None]):
        self.marker, self.change, self.done = marker, change, False

    def info(self, msg: str) -> None:
        if not self.done and self.marker in msg:
            self.done = True
            self.change()

    def warning(self, msg: str) -> None:
        self.info(msg)


def jobs_in_table(engine) -> dict[int, str]:
    table = data_tables["jobs"]
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(table.c.id, table.c.job)).all())


def ledger(engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        return conn.execute(sa.select(ingestion_ledger.c.source, ingestion_ledger.c.sha256, ingestion_ledger.c.rows_inserted)).all()


def rewrite_same_size(path: Path) -> None:
    path.write_text(jobs_text(range(1, 3001), "New"))


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 3)


def append(path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(jobs_text(range(3001, 3101)).encode())


def replace(path: Path) -> None:
    fresh = path.with_name(".replacement")
    fresh.write_text(jobs_text(range(1, 2001), "Other"))
    os.replace(fresh, path)


@pytest.mark.parametrize("change", [rewrite_same_size, truncate, append, replace])
def test_a_file_changed_while_read_is_rolled_back_left_in_landing_and_applied_whole_next_run(engine, folders, change):
    original = jobs_text(range(1, 3001))
    path = settled(drop(folders, "jobs.csv", original))

    outcome = ingest_file(engine, folders, path, block_bytes=BLOCK, log=ChangeAt("rows read", lambda: change(path)))

    assert outcome.status == "changed" and "changed while being read" in outcome.reason
    assert "left in landing for the next run" in outcome.reason
    assert jobs_in_table(engine) == {} and ledger(engine) == [] and table_count(engine, "rejected_rows") == 0
    assert path.exists() and not any(folders.rejects.iterdir()) and not any(folders.processed.iterdir())
    assert table_count(engine, "files_changed_while_read") == 1

    # The next run applies the file as it is now, whole, under the hash of those bytes.
    final = path.read_bytes()
    again = ingest_file(engine, folders, path, block_bytes=BLOCK)
    assert again.status == "applied" and again.sha256 == hashlib.sha256(final).hexdigest()
    expected = {
        int(i): name for i, name in (line.split(",") for line in final.decode().splitlines() if line.count(",") == 1 and line.split(",")[1])
    }
    loaded = jobs_in_table(engine)
    assert {i: loaded[i] for i in expected} == expected
    assert len(loaded) + again.rows_rejected == again.rows_read  # a line cut by the truncation is rejected, not lost
    assert ledger(engine) == [("jobs.csv", again.sha256, len(loaded))]
    assert table_count(engine, "files_changed_while_read") == 0

    # The original bytes were never recorded as applied: dropping them again applies them.
    redropped = ingest_file(engine, folders, settled(drop(folders, "jobs.csv", original)), block_bytes=BLOCK)
    assert redropped.status == "applied" and redropped.sha256 == hashlib.sha256(original.encode()).hexdigest()
    assert jobs_in_table(engine) == {i: f"Job {i:06d}" for i in range(1, 3001)} | {i: loaded[i] for i in loaded if i > 3000}


def test_a_file_changed_after_it_was_applied_stays_in_landing_and_its_new_rows_load_next_run(engine, folders):
    path = settled(drop(folders, "jobs.csv", jobs_text(range(1, 101))))
    outcome = ingest_file(engine, folders, path, block_bytes=BLOCK, log=ChangeAt("applied to jobs", lambda: append(path)))
    assert outcome.status == "applied" and "left in landing" in outcome.reason
    assert len(jobs_in_table(engine)) == 100 and path.exists()

    (again,) = ingest_landing(engine, folders)
    assert (again.status, again.counts.inserted, again.counts.unchanged) == ("applied", 100, 100)
    assert len(jobs_in_table(engine)) == 200 and not path.exists()


def test_a_file_that_keeps_changing_while_read_is_quarantined_the_third_time(engine, folders):
    path = drop(folders, "jobs.csv", jobs_text(range(1, 3001)))
    statuses = []
    for _attempt in range(CHANGED_READS_BEFORE_QUARANTINE):
        settled(path)
        grow = ChangeAt("rows read", lambda: append(path))
        statuses.append(ingest_file(engine, folders, path, block_bytes=BLOCK, log=grow).status)
    assert statuses == ["changed", "changed", "quarantined"]
    with engine.connect() as conn:
        (reason,) = conn.execute(sa.select(quarantined_files.c.reason)).scalars().all()
        assert conn.execute(sa.select(sa.func.count()).select_from(files_changed_while_read)).scalar_one() == 0
    assert reason.startswith("changed while being read, 3 times in a row")
    assert (folders.quarantine / "jobs.csv").exists() and jobs_in_table(engine) == {}


def test_a_quoted_field_longer_than_the_record_limit_is_one_reject_kept_whole_in_the_reject_file(engine, folders):
    """A 2 MiB quoted value holding a line break and `777,Injected`: never a row."""
    long_record = '2,"' + "x" * (2 * 1024 * 1024) + '\n777,Injected\n' + "y" * 1000 + '"'
    path = drop(folders, "jobs.csv", f"1,Before\n{long_record}\r\n3,After\n")
    outcome = ingest_file(engine, folders, path, block_bytes=256 * 1024)
    assert outcome.status == "applied" and (outcome.counts.inserted, outcome.rows_rejected, outcome.rows_read) == (2, 1, 3)
    assert jobs_in_table(engine) == {1: "Before", 3: "After"}
    ((raw, reasons),) = rejects_by_line(engine, "jobs.csv").values()
    assert list(rejects_by_line(engine, "jobs.csv")) == [2]
    assert reasons == [f"row: record longer than 1 MiB (got {len(long_record):,} bytes on lines 2 to 4)"]
    assert raw.startswith('2,"xxx') and raw.endswith(f"…[line cut here: {len(long_record):,} characters in all]") and len(raw) < 8300
    # The reject file holds the record whole: fixed there, it can be dropped back.
    assert (folders.rejects / outcome.reject_file).read_bytes() == long_record.encode() + b"\n"


LONG_STEM = "hired_employees_" + "é" * 115  # 246 bytes of UTF-8 with ".csv": derived names do not fit


@pytest.mark.parametrize("stem", [LONG_STEM, "jobs_" + "x" * (NAME_MAX_BYTES - 9), "jobs_" + "王" * 82])
def test_names_up_to_255_bytes_load_and_their_derived_files_get_names_that_fit(engine, folders, stem):
    name = f"{stem}.csv"
    assert 200 <= len(name.encode()) <= NAME_MAX_BYTES
    drop(folders, "departments.csv", "1,Engineering\n")
    drop(folders, "jobs.csv", "1,Engineer\n")
    ingest_landing(engine, folders)
    bad_row = "x1,Bad,2021-01-01T00:00:00Z,1,1" if stem.startswith("hired") else "x1,Bad"
    good_row = "7,Good,2021-01-01T00:00:00Z,1,1" if stem.startswith("hired") else "7,Good"
    drop(folders, name, f"{good_row}\n{bad_row}\n")
    (outcome,) = ingest_landing(engine, folders)
    assert outcome.status == "applied" and outcome.rows_rejected == 1
    reject_file = folders.rejects / outcome.reject_file
    assert reject_file.read_text() == bad_row + "\n" and len(reject_file.name.encode()) <= NAME_MAX_BYTES
    assert reject_file.name.startswith(stem[:40]) and reject_file.with_suffix(".log").exists()
    assert (folders.processed / name).exists()

    # The same name again with other content: kept beside the first in processed/ under a name that fits.
    drop(folders, name, f"{good_row.replace('Good', 'Better')}\n")
    (second,) = ingest_landing(engine, folders)
    assert second.status == "applied"
    kept = sorted(p.name for p in folders.processed.iterdir() if p.name.startswith(stem[:40]))
    assert len(kept) == 2 and all(len(k.encode()) <= NAME_MAX_BYTES for k in kept)


def test_an_unreadable_file_with_a_255_byte_name_is_quarantined_and_the_others_load(engine, folders):
    name = "jobs_" + "ü" * 123 + ".csv"
    assert len(name.encode()) == NAME_MAX_BYTES
    drop(folders, name, b"1,\xff\xfe\n")
    drop(folders, "departments.csv", "1,Engineering\n")
    outcomes = {o.file: o for o in ingest_landing(engine, folders)}
    assert outcomes[name].status == "quarantined" and outcomes[name].reason.startswith("not UTF-8")
    assert outcomes["departments.csv"].status == "applied"
    (note,) = [p for p in folders.quarantine.iterdir() if p.name.endswith(".reason.txt")]
    assert len(note.name.encode()) <= NAME_MAX_BYTES and note.read_text().startswith("not UTF-8")
    assert (folders.quarantine / name).exists()
    # A second file of that name quarantined later is kept beside the first.
    drop(folders, name, b"\x00")
    (again,) = ingest_landing(engine, folders)
    assert again.status == "quarantined" and len([p for p in folders.quarantine.iterdir() if p.suffix == ".csv"]) == 2


def test_a_file_operation_failing_for_one_file_quarantines_it_and_the_others_load(engine, folders):
    """Here a folder squats the reject file's name: the file's rows roll back, the rest go on."""
    drop(folders, "departments.csv", "1,Engineering\n")
    content = "1,Engineer\nx,Bad\n"
    drop(folders, "jobs.csv", content)
    sha8 = hashlib.sha256(content.encode()).hexdigest()[:8]
    (folders.rejects / f"jobs.{sha8}.rejects.csv").mkdir()
    outcomes = {o.file: o for o in ingest_landing(engine, folders)}
    assert outcomes["departments.csv"].status == "applied"
    assert outcomes["jobs.csv"].status == "quarantined"
    assert (
        outcomes["jobs.csv"].reason == f"a file operation failed: Is a directory (.jobs.{sha8}.rejects.csv.part -> jobs.{sha8}.rejects.csv)"
    )
    assert jobs_in_table(engine) == {} and table_count(engine, "rejected_rows") == 0
    assert (folders.quarantine / "jobs.csv").read_text() == content


def test_an_applied_file_that_cannot_be_moved_is_quarantined_with_what_happened(engine, folders):
    (folders.processed / "jobs.csv").mkdir()
    drop(folders, "jobs.csv", "1,Engineer\n")
    drop(folders, "departments.csv", "1,Engineering\n")
    outcomes = {o.file: o for o in ingest_landing(engine, folders)}
    assert outcomes["departments.csv"].status == "applied"
    assert outcomes["jobs.csv"].status == "quarantined"
    assert outcomes["jobs.csv"].reason.startswith("applied to jobs, but then a file operation failed: Is a directory")
    assert jobs_in_table(engine) == {1: "Engineer"}  # it was applied; the ledger says so
    assert not (folders.landing / "jobs.csv").exists()


MEMORY_CHILD = """
import logging, resource, sys
from pathlib import Path
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_warehouse_engine
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
(outcome,) = ingest_landing(create_warehouse_engine(sys.argv[1]), DataFolders(Path(sys.argv[2])))
print(outcome.status, outcome.rows_read, outcome.rows_rejected, outcome.counts.inserted)
"""


@pytest.mark.parametrize("field", ["unquoted", "quoted with line breaks"])
def test_one_huge_field_keeps_memory_under_a_gigabyte_and_out_of_the_logs(database_url, engine, folders, field):
    """A 60 MB field once peaked at 2.6 GB and was stored (and logged) whole as its reason."""
    huge = "é" * (30 * 1024 * 1024) if field == "unquoted" else '"' + ("line\n" + "x" * 95) * 600_000 + '"'
    path = folders.landing / "jobs.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write(f"1,Before\n2,{huge}\n3,After\n")
    del huge
    log_file = folders.root / "child.log"
    with log_file.open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", MEMORY_CHILD, database_url, str(folders.root)], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log
        )
        out = child.stdout.read().decode()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, which Popen.wait would not report
        child.returncode = os.waitstatus_to_exitcode(status)
    err = log_file.read_text(encoding="utf-8")
    assert child.returncode == 0, err[-2000:]
    assert out.split() == ["applied", "3", "1", "2"]
    assert max(len(line) for line in err.splitlines()) < 1000, "no log line embeds the value"
    peak = usage.ru_maxrss * 1024
    assert peak < 1024**3, f"peak RSS {peak / 2**20:,.0f} MiB"
    with engine.connect() as conn:
        raw, reasons = conn.execute(sa.select(rejected_rows.c.raw_line, rejected_rows.c.reasons)).one()
    assert len(raw) < 8300 and reasons[0].startswith("row: record longer than 1 MiB")
