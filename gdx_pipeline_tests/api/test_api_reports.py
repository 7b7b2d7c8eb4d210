"""Metrics, the dashboard, and backups/restores over HTTP, on the real data (SQLite and
PostgreSQL). Backups and restores must run as Dagster jobs recorded in the instance."""

from __future__ import annotations

import io

import dagster as dg
import pandas as pd
import pytest

from gdx_pipeline.api.settings import ApiSettings
from gdx_pipeline.core import metrics
from gdx_pipeline.core.csv_source import file_sha256
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline_tests.api.app_client import TOKEN, app_engine, assert_json_error, count_rows, make_client

YEAR = 2021


@pytest.fixture
def loaded_client(client, globant_landing: DataFolders):  # noqa: ANN001, ANN201
    """The API on a warehouse holding the challenge's real data (the fixtures share tmp_path/data)."""
    assert client.app.state.settings.data_folder.folders().root == globant_landing.root
    ingest_landing(app_engine(client), globant_landing, run_id="test-load")
    return client


# --- metrics and dashboard ---------------------------------------------------------------------


def test_quarterly_hires_as_json_and_csv_match_the_core_metric(loaded_client) -> None:  # noqa: ANN001
    expected = metrics.quarterly_hires(app_engine(loaded_client), YEAR)
    assert not expected.empty
    body = loaded_client.get("/metrics/quarterly-hires", params={"year": YEAR}).json()
    assert body["year"] == YEAR and body["rows"] == expected.to_dict("records")
    as_csv = loaded_client.get("/metrics/quarterly-hires", params={"year": YEAR}, headers={"Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(as_csv.text)), expected.reset_index(drop=True), check_dtype=False)
    preferring_json = loaded_client.get(
        "/metrics/quarterly-hires", params={"year": YEAR}, headers={"Accept": "text/csv;q=0.5, application/json"}
    )
    assert preferring_json.headers["content-type"].startswith("application/json")


def test_departments_above_mean_as_json_and_csv_match_the_core_metric(loaded_client) -> None:  # noqa: ANN001
    expected, mean = metrics.departments_above_mean(app_engine(loaded_client), YEAR)
    body = loaded_client.get("/metrics/departments-above-mean", params={"year": YEAR}).json()
    assert body["mean_hired"] == pytest.approx(mean)
    assert body["rows"] == expected.to_dict("records") and all(r["hired"] > mean for r in body["rows"])
    as_csv = loaded_client.get("/metrics/departments-above-mean", params={"year": YEAR}, headers={"Accept": "text/csv"})
    assert as_csv.text == expected.to_csv(index=False)


def test_metrics_refuse_a_missing_or_impossible_year(client) -> None:  # noqa: ANN001
    for path in ("/metrics/quarterly-hires", "/metrics/departments-above-mean"):
        assert "year" in assert_json_error(client.get(path), 422)["message"]
        assert "year" in assert_json_error(client.get(path, params={"year": metrics.FIRST_YEAR - 1}), 422)["message"]
        assert "year" in assert_json_error(client.get(path, params={"year": "twenty"}), 422)["message"]
    empty = client.get("/metrics/departments-above-mean", params={"year": YEAR}).json()
    assert empty == {"year": YEAR, "mean_hired": None, "rows": []}


def test_dashboard_is_served_as_html(loaded_client) -> None:  # noqa: ANN001
    page = loaded_client.get("/dashboard", params={"year": YEAR})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower() and f'<body data-selected-year="{YEAR}">' in page.text  # opens on the year asked for
    years = metrics.years_with_hires(app_engine(loaded_client))
    assert all(f'<option value="{year}"' in page.text for year in years)  # every year one click away
    assert f'<body data-selected-year="{max(years)}">' in loaded_client.get("/dashboard").text
    assert_json_error(loaded_client.get("/dashboard", params={"year": 99_999}), 422)


# --- backups and restores ----------------------------------------------------------------------


def run_of(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    run = instance.get_run_by_id(run_id)
    assert run is not None, f"run {run_id} is not recorded in the Dagster instance"
    return run


def test_backup_and_restore_run_as_dagster_jobs(loaded_client, dagster_instance: dg.DagsterInstance) -> None:  # noqa: ANN001
    client = loaded_client
    jobs_before = count_rows(client, "jobs")
    taken = client.post("/tables/jobs/backups")
    assert taken.status_code == 201, taken.text
    backup = taken.json()
    assert backup["rows"] == jobs_before and backup["table"] == "jobs"
    run = run_of(dagster_instance, backup["run_id"])
    assert (run.job_name, run.status) == ("backup_job", dg.DagsterRunStatus.SUCCESS)
    folders = client.app.state.settings.data_folder.folders()
    assert file_sha256(folders.backups / "jobs" / backup["file"]) == backup["sha256"]
    listed = client.get("/tables/jobs/backups").json()
    assert [b["file"] for b in listed] == [backup["file"]] and listed[0]["sha256"] == backup["sha256"]

    new_job = {"id": max(r["id"] for r in client.get("/tables/jobs/rows", params={"limit": 1000}).json()["rows"]) + 1, "job": "Brand new"}
    assert client.post("/tables/jobs/rows", json={"rows": [new_job]}).json()["inserted"] == 1
    restored = client.post("/tables/jobs/restore", json={"backup": backup["file"]})
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert (body["backup"], body["rows_restored"], body["rows_replaced"]) == (backup["file"], jobs_before, jobs_before + 1)
    assert count_rows(client, "jobs") == jobs_before
    run = run_of(dagster_instance, body["run_id"])
    assert (run.job_name, run.status) == ("restore_table_job", dg.DagsterRunStatus.SUCCESS)
    assert client.post("/tables/jobs/restore", json={}).json()["backup"] == backup["file"]  # "latest" by default
    assert client.post("/tables/jobs/restore").json()["backup"] == backup["file"]  # and no body means the defaults


def test_a_refused_restore_is_409_and_changes_nothing(loaded_client, dagster_instance: dg.DagsterInstance) -> None:  # noqa: ANN001
    client = loaded_client
    backup = client.post("/tables/departments/backups").json()
    new_department = {"id": 10_000, "department": "Added after the backup"}
    client.post("/tables/departments/rows", json={"rows": [new_department]})
    hire = {"id": 10_000_000, "name": "Depends on it", "datetime": "2021-05-05T00:00:00Z", "department_id": 10_000, "job_id": 1}
    assert client.post("/tables/hired_employees/rows", json={"rows": [hire]}).json()["inserted"] == 1
    departments = count_rows(client, "departments")
    refused = client.post("/tables/departments/restore", json={"backup": "latest"})
    body = assert_json_error(refused, 409)
    assert "foreign key" in body["message"] and backup["file"] in body["message"]
    assert count_rows(client, "departments") == departments
    failed = [r for r in dagster_instance.get_runs() if r.job_name == "restore_table_job" and r.run_id in body["message"]]
    assert [r.status for r in failed] == [dg.DagsterRunStatus.FAILURE]


def test_restore_only_accepts_listed_backups(client, dagster_instance: dg.DagsterInstance) -> None:  # noqa: ANN001
    runs_before = len(dagster_instance.get_runs())
    assert "no backup of jobs yet" in assert_json_error(client.post("/tables/jobs/restore", json={"backup": "latest"}), 404)["message"]
    for name in ("../../../etc/passwd", "/etc/passwd", "jobs__20210101T000000.000000Z.avro", ".hidden", "departments.csv"):
        body = assert_json_error(client.post("/tables/jobs/restore", json={"backup": name}), 404)
        assert "GET /tables/jobs/backups" in body["message"]
    assert_json_error(client.post("/tables/jobs/restore", json={"backup": 7}), 422)
    assert_json_error(client.post("/tables/jobs/restore", content=b"{", headers={"Content-Type": "application/json"}), 422)
    assert (
        "malformed"
        in assert_json_error(
            client.post("/tables/jobs/restore", content=b'{"backup": "\xff"}', headers={"Content-Type": "application/json"}), 422
        )["message"]
    )
    assert_json_error(client.post("/tables/employees/backups"), 404)
    assert_json_error(client.get("/tables/employees/backups"), 404)
    assert_json_error(client.post("/tables/employees/restore", json={}), 404)
    assert len(dagster_instance.get_runs()) == runs_before  # nothing was launched


def test_backup_endpoints_need_the_token_when_one_is_set(api_settings: ApiSettings, dagster_instance: dg.DagsterInstance) -> None:
    secured = ApiSettings(data_folder=api_settings.data_folder, warehouse=api_settings.warehouse, token=TOKEN)
    runs_before = len(dagster_instance.get_runs())
    with make_client(secured, dagster_instance) as client:
        assert_json_error(client.post("/tables/jobs/backups"), 401)
        assert_json_error(client.post("/tables/jobs/restore", json={"backup": "latest"}), 401)
        assert client.get("/tables/jobs/backups").json() == []
    assert len(dagster_instance.get_runs()) == runs_before
