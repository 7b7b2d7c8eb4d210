"""A hiring-year metric run without a usable year fails in one line that says what to pass and
which years exist: metrics_job launched without a partition (inside the run: Dagster offers no
check before the steps start), and `gdx metrics` with a missing, unknown or malformed year
(before Dagster's CLI, which answers those with a traceback: pinned here, so docs/metrics.md's advice
is revisited when Dagster changes)."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from gdx_pipeline.defs.metrics.assets import metrics_assets
from gdx_pipeline.defs.metrics.jobs import metrics_job
from gdx_pipeline.defs.metrics.partitions import hiring_year_partitions, missing_year_message
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource
from gdx_pipeline_tests.paths import REPO_ROOT

YEARS = ["2021", "2022"]


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    """A Dagster instance that knows the hiring years 2021 and 2022."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").touch()
    dg.DagsterInstance.from_config(str(home)).add_dynamic_partitions(hiring_year_partitions.name, YEARS)
    return home


def test_metrics_job_without_a_partition_fails_saying_what_to_pass(sqlite_url, folders, dagster_home):
    data = DataFolderResource(data_dir=str(folders.root))
    defs = dg.Definitions(
        jobs=[metrics_job],
        assets=metrics_assets,
        resources={"data_folder": data, "warehouse": WarehouseResource(data=data, database_url=sqlite_url)},
    )
    instance = dg.DagsterInstance.from_config(str(dagster_home))

    result = defs.resolve_job_def("metrics_job").execute_in_process(instance=instance, raise_on_error=False)

    assert not result.success
    failures = {e.step_key: e.event_specific_data.error for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
    assert set(failures) == {"quarterly_hires", "departments_above_mean_hires"}  # the dashboard after them does not run
    for error in failures.values():
        assert error.message.strip() == f"dagster._core.definitions.events.Failure: {missing_year_message(YEARS)}"
    assert "dg launch --job metrics_job --partition 2022" in missing_year_message(YEARS)
    assert "hiring_year partitions: 2021, 2022" in missing_year_message(YEARS)
    assert "materialize hiring_years" in missing_year_message([])


def gdx_metrics(args: list[str], dagster_home: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "GDX_DATA_DIR": str(tmp_path / "data")}
    env.pop("GDX_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "gdx_pipeline.cli", "metrics", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("year", "message"),
    [
        (
            "1999",
            "gdx metrics: hired_employees has no hires in 1999, so there is no hiring_year partition 1999 "
            "(hiring_year partitions: 2021, 2022)",
        ),
        ("21x", "gdx metrics: year must be a whole number such as 2021, not '21x'"),
        ("3001", "gdx metrics: year 3001 is outside the hiring dates the data dictionary admits (1900-2999)"),
    ],
)
def test_gdx_metrics_refuses_a_year_it_cannot_compute_in_one_line(year, message, dagster_home, tmp_path):
    result = gdx_metrics([year], dagster_home, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message + "\n")


def test_gdx_metrics_without_a_year_lists_the_years(dagster_home, tmp_path):
    result = gdx_metrics([], dagster_home, tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [
        f"hiring_year partitions: 2021, 2022 (Dagster instance {dagster_home})",
        "compute one: gdx metrics 2022",
    ]


@pytest.mark.parametrize(
    ("partition", "dagster_says"), [(None, "no '--partition' option was provided"), ("1999", "Could not find a partition with key `1999`")]
)
def test_dagsters_own_cli_answers_a_missing_or_unknown_partition_with_a_traceback(partition, dagster_says, dagster_home, tmp_path):
    """The limit docs/metrics.md documents (use `gdx metrics YEAR`): Dagster's CLI fails before our code runs."""
    argv = [
        str(Path(sys.executable).parent / "dg"),
        "launch",
        "--assets",
        "quarterly_hires",
        *(["--partition", partition] if partition else []),
    ]
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "GDX_DATA_DIR": str(tmp_path / "data"),
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
    }
    result = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and dagster_says in result.stderr
