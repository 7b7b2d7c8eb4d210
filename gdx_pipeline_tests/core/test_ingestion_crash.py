"""A process killed mid-file, then re-run: the same final state as an uninterrupted run."""

import os
import shutil
import signal
import subprocess
import sys

import sqlalchemy as sa

from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.sample_data import generate_globant_files
from gdx_pipeline.core.warehouse import ingestion_ledger
from gdx_pipeline_tests.paths import REPO_ROOT
from gdx_pipeline_tests.warehouse_contents import table_count

CHILD = """
import logging, sys
from pathlib import Path
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_warehouse_engine
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
ingest_landing(create_warehouse_engine(sys.argv[1]), DataFolders(Path(sys.argv[2])), block_bytes=32 * 1024)
"""

EMPLOYEES = 60_000


def kill_after_progress(database_url: str, folders, blocks: int) -> None:
    """Start ingestion in a child and SIGKILL it once it reported `blocks` employee blocks."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, database_url, str(folders.root)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = 0
    for line in child.stdout:
        if line.startswith("hired_employees.csv:") and "rows read" in line:
            seen += 1
            if seen == blocks:
                child.send_signal(signal.SIGKILL)
                break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"


def ledger_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.select(ingestion_ledger.c.source, ingestion_ledger.c.rows_inserted, ingestion_ledger.c.rows_rejected)).all()


def test_killed_mid_file_then_rerun_converges(database_url, engine, folders, tmp_path):
    summary = generate_globant_files(tmp_path / "source", EMPLOYEES, dirty_share=0.03, seed=11)
    for path in (tmp_path / "source").iterdir():
        shutil.copy(path, folders.landing / path.name)

    kill_after_progress(database_url, folders, blocks=3)

    # Killed mid-file: the employee file is applied not at all and still waits in landing.
    assert table_count(engine, "hired_employees") == 0
    assert table_count(engine, "rejected_rows") == 0
    assert (folders.landing / "hired_employees.csv").exists()
    assert [source for source, *_ in ledger_rows(engine)] == ["departments.csv", "jobs.csv"]

    outcomes = ingest_landing(engine, folders)
    assert [o.status for o in outcomes] == ["applied"]
    assert table_count(engine, "hired_employees") == EMPLOYEES - summary.dirty
    assert table_count(engine, "rejected_rows") == summary.dirty
    assert sorted(ledger_rows(engine)) == sorted(
        [("departments.csv", 12, 0), ("jobs.csv", 183, 0), ("hired_employees.csv", EMPLOYEES - summary.dirty, summary.dirty)]
    )
    assert not [p for p in folders.rejects.iterdir() if p.name.startswith(".")]


def test_killed_after_commit_before_the_move_is_not_applied_twice(engine, folders, tmp_path):
    summary = generate_globant_files(tmp_path / "source", 2_000, dirty_share=0.05, seed=3)
    for path in (tmp_path / "source").iterdir():
        shutil.copy(path, folders.landing / path.name)
    ingest_landing(engine, folders)
    # The state a kill between COMMIT and the move leaves: applied, yet still in landing.
    for path in (tmp_path / "source").iterdir():
        shutil.copy(path, folders.landing / path.name)
    outcomes = ingest_landing(engine, folders)
    assert [o.status for o in outcomes] == ["skipped"] * 3
    assert table_count(engine, "hired_employees") == 2_000 - summary.dirty
    assert table_count(engine, "rejected_rows") == summary.dirty
    assert os.listdir(folders.landing) == []
