"""The README's Quick start, then the way to real data: the demo loads the shipped sample and says
so, `gdx reset --yes` empties everything, and the challenge's files dropped into landing then give
exactly 1,929 employees, 70 rejects and the published 2021 metrics, checked against a
plain-Python recomputation from the CSV files. In process on SQLite and PostgreSQL; and once as
a user types it (scripts/demo, gdx, dagster, dg as subprocesses) on the embedded default."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from gdx_pipeline import cli
from gdx_pipeline.core import metrics
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.sample_loads import drop_name
from gdx_pipeline.core.warehouse import create_warehouse_engine
from gdx_pipeline.defs.ingest.assets import landing_files, quarantined_files, rejected_rows, table_assets
from gdx_pipeline.defs.ingest.checks import table_checks
from gdx_pipeline.defs.ingest.jobs import migrate_job
from gdx_pipeline.defs.metrics.assets import hiring_years, metrics_assets
from gdx_pipeline.defs.metrics.jobs import metrics_job
from gdx_pipeline.defs.metrics.partitions import hiring_year_partitions
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource
from gdx_pipeline_tests.paths import GLOBANT_DATA, GLOBANT_FILES, REPO_ROOT
from gdx_pipeline_tests.published_metrics import REFERENCE_ABOVE_MEAN, REFERENCE_QUARTER_TOTALS
from gdx_pipeline_tests.warehouse_contents import table_count

YEAR = 2021
DEMO_MAX_LINES = 40


# --- the oracle: the 2021 metrics recomputed in plain Python from the challenge's CSV files ----


def csv_rows(name: str) -> list[list[str]]:
    with (GLOBANT_DATA / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def oracle(year: int) -> tuple[list[tuple], list[tuple], float]:
    """(quarterly rows (department, job, Q1..Q4) by department then job, departments above the
    mean (id, department, hired) most hires first, the mean), every blank-field row left out."""
    departments = {int(i): name for i, name in csv_rows("departments.csv")}
    jobs = {int(i): name for i, name in csv_rows("jobs.csv")}
    quarters: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    per_department: Counter[int] = Counter()
    for _id, name, when, department_id, job_id in csv_rows("hired_employees.csv"):
        if not all(v.strip() for v in (_id, name, when, department_id, job_id)):
            continue
        hired = datetime.fromisoformat(when)
        if hired.year != year:
            continue
        quarters[(departments[int(department_id)], jobs[int(job_id)])][(hired.month - 1) // 3] += 1
        per_department[int(department_id)] += 1
    quarterly = [(department, job, *counts) for (department, job), counts in sorted(quarters.items())]
    mean = sum(per_department.values()) / len(per_department)
    above = sorted(((i, departments[i], n) for i, n in per_department.items() if n > mean), key=lambda r: (-r[2], r[1], r[0]))
    return quarterly, above, mean


def published(reports: Path, year: int) -> tuple[list[tuple], list[tuple]]:
    """The two CSV reports the stakeholders get, read back with the csv module."""
    with metrics.quarterly_hires_csv_path(reports, year).open(newline="", encoding="utf-8") as handle:
        quarterly = [(r["department"], r["job"], *(int(r[q]) for q in metrics.QUARTERS)) for r in csv.DictReader(handle)]
    with metrics.departments_above_mean_csv_path(reports, year).open(newline="", encoding="utf-8") as handle:
        above = [(int(r["id"]), r["department"], int(r["hired"])) for r in csv.DictReader(handle)]
    return quarterly, above


def test_the_oracle_gives_the_published_reference():
    quarterly, above, mean = oracle(YEAR)
    assert [sum(row[2 + q] for row in quarterly) for q in range(4)] == REFERENCE_QUARTER_TOTALS
    assert above == REFERENCE_ABOVE_MEAN and round(mean, 2) == 136.92


def assert_the_real_data_and_its_2021_metrics(database_url: str, folders: DataFolders) -> None:
    engine = create_warehouse_engine(database_url)
    try:
        counts = {table: table_count(engine, table) for table in ("departments", "jobs", "hired_employees", "rejected_rows")}
        assert counts == {"departments": 12, "jobs": 183, "hired_employees": 1929, "rejected_rows": 70}
        quarterly, above, mean = oracle(YEAR)
        assert published(folders.reports, YEAR) == (quarterly, above)
        stored = metrics.stored_departments_above_mean(engine, YEAR)
        assert list(zip(stored["id"], stored["department"], stored["hired"])) == above
        assert list(metrics.stored_quarter_totals(engine, YEAR).values()) == [sum(row[2 + q] for row in quarterly) for q in range(4)]
        assert metrics.departments_above_mean(engine, YEAR)[1] == pytest.approx(mean)
    finally:
        engine.dispose()


# --- in process, on both engines ----------------------------------------------------------------


def drop_real_files(folders: DataFolders) -> None:
    for name in GLOBANT_FILES:
        shutil.copy(GLOBANT_DATA / name, folders.landing / name)


@pytest.fixture
def environment(database_url, folders, tmp_path, monkeypatch) -> dict[str, str]:
    env = {"GDX_DATA_DIR": str(folders.root), "GDX_DATABASE_URL": database_url, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    Path(env["DAGSTER_HOME"]).mkdir()
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").touch()
    return env


class Pipeline:
    """The code location's ingest and metrics jobs on this test's warehouse, folder and instance."""

    def __init__(self, database_url: str, folders: DataFolders, dagster_home: str):
        data = DataFolderResource(data_dir=str(folders.root))
        self.defs = dg.Definitions(
            assets=[landing_files, *table_assets, rejected_rows, quarantined_files, *metrics_assets],
            asset_checks=table_checks,
            jobs=[migrate_job, metrics_job],
            resources={"data_folder": data, "warehouse": WarehouseResource(data=data, database_url=database_url)},
        )
        self.instance = dg.DagsterInstance.from_config(dagster_home)

    def migrate(self) -> None:
        assert self.defs.resolve_job_def("migrate_job").execute_in_process(instance=self.instance).success

    def metrics(self, year: int) -> None:
        assert dg.materialize([hiring_years], instance=self.instance, resources=self.defs.resources).success
        assert self.defs.resolve_job_def("metrics_job").execute_in_process(instance=self.instance, partition_key=str(year)).success


def test_quick_start_then_reset_then_the_real_files_give_the_published_figures(database_url, folders, environment, capsys):
    pipeline = Pipeline(database_url, folders, environment["DAGSTER_HOME"])
    # The Quick start: the shipped sample into landing, migrate_job, the 2021 metrics.
    assert cli.main(["drop-sample"]) == 0
    pipeline.migrate()
    pipeline.metrics(YEAR)
    assert cli.main(["summary"]) == 0
    assert "These rows are the shipped SAMPLE" in capsys.readouterr().out
    assert pipeline.instance.get_dynamic_partitions(hiring_year_partitions.name) == ["2020", "2021", "2022"]

    # The documented way out, then the real files.
    assert cli.main(["reset", "--yes"]) == 0
    drop_real_files(folders)
    pipeline.migrate()
    pipeline.metrics(YEAR)

    assert_the_real_data_and_its_2021_metrics(database_url, folders)
    assert pipeline.instance.get_dynamic_partitions(hiring_year_partitions.name) == ["2021", "2022"]  # no sample year left
    assert cli.main(["summary"]) == 0
    assert "SAMPLE" not in capsys.readouterr().out


def test_the_sample_is_never_mixed_into_other_data_without_a_warning(database_url, folders, environment, capsys):
    pipeline = Pipeline(database_url, folders, environment["DAGSTER_HOME"])
    drop_real_files(folders)
    assert cli.main(["drop-sample"]) == 1  # real files wait in landing: the demo would mix with them
    assert "files waiting in landing (departments.csv, jobs.csv, hired_employees.csv)" in capsys.readouterr().err
    pipeline.migrate()
    capsys.readouterr()
    assert cli.main(["drop-sample"]) == 1  # real files loaded
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "3 load(s) that are not the shipped sample" in message and "gdx reset" in message
    assert sorted(p.name for p in folders.landing.iterdir()) == []

    # Mixed by hand anyway (the sample dropped after the real files): the summary says so.
    for path in cli.SHIPPED_SAMPLE.glob("*.csv"):
        shutil.copy(path, folders.landing / drop_name(path))
    pipeline.migrate()
    capsys.readouterr()
    assert cli.main(["summary"]) == 0
    assert "WARNING: this warehouse mixes the shipped sample" in capsys.readouterr().out


# --- as a user types it -------------------------------------------------------------------------


def user_environment(tmp_path: Path) -> dict[str, str]:
    """A shell with nothing of ours set, the data folder and Dagster home under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GDX_", "DAGSTER_"))}
    return {**env, "GDX_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_demo_then_reset_then_the_real_files_as_a_user_types_them(tmp_path):
    env = user_environment(tmp_path)
    folders = DataFolders(tmp_path / "data")
    bin_dir = Path(sys.executable).parent

    demo = run([str(REPO_ROOT / "scripts" / "demo")], env)
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output
    # What a person reads: short, no Dagster event stream, no warnings, no traceback.
    assert len(output.splitlines()) < DEMO_MAX_LINES, output
    for noise in ("DEBUG", "supersede", "Traceback", "Telemetry"):
        assert noise.lower() not in output.lower(), output
    # It says what it loaded, that it is the sample, and how to clear it.
    assert "shipped SAMPLE" in output and "gdx reset --yes" in output
    assert "hired_employees     950" in output
    assert (folders.reports / "hiring_dashboard.html").exists()
    log = Path(env["DAGSTER_HOME"]) / "demo.log"
    assert f"Dagster's full log: {log}" in output and "STEP_SUCCESS" in log.read_text()

    reset = run([str(bin_dir / "gdx"), "reset", "--yes"], env)
    assert reset.returncode == 0, reset.stderr
    drop_real_files(folders)
    # The command the design card names still works.
    migrate = run([str(bin_dir / "dagster"), "job", "execute", "-m", "gdx_pipeline.definitions", "-j", "migrate_job"], env)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    # 2021 has hires but, after the reset, no partition: gdx metrics adds it, then runs metrics_job.
    year = run([str(bin_dir / "gdx"), "metrics", str(YEAR)], env)
    assert year.returncode == 0, year.stdout + year.stderr
    assert "DEBUG" not in year.stdout + year.stderr and "materializing hiring_years" in year.stdout
    quarters = ", ".join(f"{q} {n}" for q, n in zip(metrics.QUARTERS, REFERENCE_QUARTER_TOTALS))
    assert f"{YEAR}: hires per quarter {quarters}; {len(REFERENCE_ABOVE_MEAN)} department(s) above the mean" in year.stdout

    assert_the_real_data_and_its_2021_metrics(f"sqlite:///{folders.root / 'gdx.sqlite'}", folders)


@pytest.mark.slow
def test_scripts_dev_serves_the_ui_on_the_demos_instance_and_stops_on_sigint(tmp_path):
    env = user_environment(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "dev.log").open("wb")
    process = subprocess.Popen(
        [str(REPO_ROOT / "scripts" / "dev"), "--port", str(port)], env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, (tmp_path / "dev.log").read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                    assert response.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text(errors="replace")
                time.sleep(1)
        # The demo's instance, not a temporary one that dg dev would delete on exit.
        assert (Path(env["DAGSTER_HOME"]) / "schedules").is_dir()  # the sensors' state, stored there
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text(errors="replace")
