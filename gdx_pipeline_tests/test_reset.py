"""`gdx reset` on SQLite and PostgreSQL: every table of ours and every data sub-folder emptied,
backups kept unless asked, the Dagster instance's hiring_year partitions removed and its run
history kept; it asks on a terminal, refuses to run unconfirmed without one, and waits for no
run: it refuses while Dagster runs are in flight."""

import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from gdx_pipeline import cli
from gdx_pipeline.core import metrics
from gdx_pipeline.core.backups import backup_table
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import metadata
from gdx_pipeline.defs.metrics.partitions import hiring_year_partitions
from gdx_pipeline_tests.paths import GLOBANT_DATA, GLOBANT_FILES
from gdx_pipeline_tests.warehouse_contents import table_count

SUB_FOLDERS = ("landing", "processed", "quarantine", "rejects", "reports", "backups")


@pytest.fixture
def environment(database_url, folders, tmp_path, monkeypatch) -> dict[str, str]:
    """What the CLI reads, pointed at this test's warehouse, data folder and Dagster home."""
    env = {"GDX_DATA_DIR": str(folders.root), "GDX_DATABASE_URL": database_url, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def loaded(engine, globant_landing, environment):
    """A warehouse with the real data, a year's metrics, rejects, a backup and files everywhere."""
    ingest_landing(engine, globant_landing, run_id="load")
    (globant_landing.landing / "jobs_waiting.csv").write_text("900,Waiting\n")
    (globant_landing.quarantine / "payroll.csv").write_text("1,2\n")
    metrics.ensure_metric_tables(engine)
    frame = metrics.quarterly_hires_by_id(engine, 2021)
    metrics.store_quarterly_hires(engine, 2021, frame, metrics.quarter_starts(2021)[0])
    metrics.write_csv_report(frame, metrics.quarterly_hires_csv_path(globant_landing.reports, 2021))
    backup_table(engine, globant_landing, "departments")
    return globant_landing


def dagster_home(environment: dict[str, str]) -> Path:
    home = Path(environment["DAGSTER_HOME"])
    home.mkdir()
    (home / "dagster.yaml").touch()
    return home


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def rows_per_table(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        return {t.name: table_count(engine, t.name) for t in metadata.sorted_tables if inspector.has_table(t.name)}


def run_gdx(args: list[str], env: dict[str, str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gdx_pipeline.cli", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=300, **options
    )


def test_reset_empties_every_table_and_data_folder_but_keeps_backups(engine, loaded, capsys):
    before = rows_per_table(engine)
    assert set(before) == {t.name for t in metadata.sorted_tables}  # the metric tables too
    assert all(
        before[name] > 0
        for name in ("departments", "jobs", "hired_employees", "rejected_rows", "ingestion_ledger", "metric_quarterly_hires")
    )
    backups = files_in(loaded.backups)
    assert backups

    assert cli.main(["reset", "--yes"]) == 0

    assert rows_per_table(engine) == dict.fromkeys(before, 0)
    assert {name: files_in(loaded.root / name) for name in SUB_FOLDERS[:-1]} == dict.fromkeys(SUB_FOLDERS[:-1], [])
    assert files_in(loaded.backups) == backups
    out = capsys.readouterr().out
    removed_rows = sum(before.values())
    assert f"removed {removed_rows:,} rows" in out and "hired_employees 1,929" in out and "rejected_rows 70" in out
    assert "Kept: backups/" in out and "--include-backups" in out

    assert cli.main(["reset", "--yes", "--include-backups"]) == 0
    assert files_in(loaded.backups) == []
    assert "Kept:" not in capsys.readouterr().out


def test_a_reset_warehouse_takes_the_same_files_again_as_new(engine, loaded):
    assert cli.main(["reset", "--yes"]) == 0
    # The ledger is empty too: the challenge's files apply again, not skipped as already applied.
    for name in GLOBANT_FILES:
        (loaded.landing / name).write_bytes((GLOBANT_DATA / name).read_bytes())
    outcomes = ingest_landing(engine, loaded, run_id="again")
    assert [o.status for o in outcomes] == ["applied"] * 3
    assert (table_count(engine, "hired_employees"), table_count(engine, "rejected_rows")) == (1929, 70)


def test_reset_removes_the_hiring_year_partitions_and_keeps_the_run_history(engine, loaded, environment):
    home = dagster_home(environment)
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions(hiring_year_partitions.name, ["2021", "2022"])
    finished = instance.add_run(dg.DagsterRun(job_name="migrate_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.SUCCESS))

    assert cli.main(["reset", "--yes"]) == 0

    instance = dg.DagsterInstance.from_config(str(home))
    assert instance.get_dynamic_partitions(hiring_year_partitions.name) == []
    assert [run.run_id for run in instance.get_runs()] == [finished.run_id]


def test_reset_refuses_while_a_dagster_run_is_in_flight(engine, loaded, environment, capsys):
    home = dagster_home(environment)
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_run(dg.DagsterRun(job_name="migrate_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED))
    before = rows_per_table(engine)

    assert cli.main(["reset", "--yes"]) == 1

    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "1 Dagster run(s) in progress (migrate_job)" in message
    assert rows_per_table(engine) == before


def test_without_a_terminal_reset_needs_yes(engine, loaded, environment):
    before = rows_per_table(engine)
    result = run_gdx(["reset"], environment, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "gdx reset: stdin is not a terminal, so nobody can confirm: pass --yes to empty the warehouse and data folders"
    ]
    assert rows_per_table(engine) == before and files_in(loaded.landing) == ["jobs_waiting.csv"]


def answer_on_a_terminal(environment: dict[str, str], answer: str) -> tuple[int, str]:
    """`gdx reset` with a pseudo-terminal as stdin and stdout, answering its question."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "gdx_pipeline.cli", "reset"],
        env={**os.environ, **environment},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    transcript = b""
    while b"[y/N]" not in transcript:
        chunk = os.read(controller, 4096)
        assert chunk, transcript
        transcript += chunk
    os.write(controller, answer.encode() + b"\n")
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        transcript += chunk
    os.close(controller)
    return process.wait(timeout=60), transcript.decode(errors="replace")


def test_on_a_terminal_reset_shows_what_it_would_remove_and_asks(engine, loaded, environment):
    before = rows_per_table(engine)
    code, transcript = answer_on_a_terminal(environment, "n")
    assert code == 1 and "Nothing removed." in transcript
    assert "hired_employees 1,929" in transcript and "landing 1" in transcript
    assert rows_per_table(engine) == before

    code, transcript = answer_on_a_terminal(environment, "y")
    assert code == 0 and "removed" in transcript
    assert rows_per_table(engine) == dict.fromkeys(before, 0)
