"""landing_files_sensor: new files give a run request, the cursor makes the next tick skip."""

import json
import os
import time

import dagster as dg

from gdx_pipeline.defs.ingest.sensors import LANDING_SETTLE_SECONDS, landing_files_sensor
from gdx_pipeline.defs.resources import DataFolderResource


def drop_settled(folders, name: str, content: str) -> None:
    path = folders.landing / name
    path.write_text(content)
    past = time.time() - LANDING_SETTLE_SECONDS - 60
    os.utime(path, (past, past))


def tick(folders, cursor: str | None = None) -> dg.SensorResult:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"data_folder": DataFolderResource(data_dir=str(folders.root))}
        )
        return landing_files_sensor(context)


def selected(result: dg.SensorResult) -> list[str]:
    (request,) = result.run_requests
    return sorted(key.to_user_string() for key in request.asset_selection)


def test_new_files_request_one_run_for_their_tables_and_the_next_tick_skips(folders):
    drop_settled(folders, "departments.csv", "1,Engineering\n")
    drop_settled(folders, "hired_employees_2021.csv", "1,Ann,2021-01-01T00:00:00Z,1,1\n")

    first = tick(folders)
    assert selected(first) == ["departments", "hired_employees", "landing_files", "quarantined_files", "rejected_rows"]
    assert first.run_requests[0].tags["gdx/files"] == "departments.csv,hired_employees_2021.csv"
    assert set(json.loads(first.cursor)) == {"departments.csv", "hired_employees_2021.csv"}

    second = tick(folders, first.cursor)
    assert not second.run_requests
    assert second.cursor == first.cursor


def test_a_changed_file_is_requested_again_with_a_new_run_key(folders):
    drop_settled(folders, "jobs.csv", "1,Engineer\n")
    first = tick(folders)
    drop_settled(folders, "jobs.csv", "1,Engineer\n2,Manager\n")
    second = tick(folders, first.cursor)
    assert selected(second) == ["jobs", "landing_files", "quarantined_files", "rejected_rows"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key


def test_files_still_being_written_wait_for_a_later_tick(folders):
    (folders.landing / "jobs.csv").write_text("1,Engineer\n")  # modified just now
    result = tick(folders)
    assert not result.run_requests
    assert "still being written" in result.skip_reason.skip_message
    os.utime(folders.landing / "jobs.csv", (time.time() - 3600, time.time() - 3600))
    assert selected(tick(folders, result.cursor)) == ["jobs", "landing_files", "quarantined_files", "rejected_rows"]


def test_unknown_files_trigger_landing_files_only_and_processed_files_leave_the_cursor(folders):
    drop_settled(folders, "notes.csv", "hello\n")
    first = tick(folders)
    assert selected(first) == ["landing_files", "quarantined_files", "rejected_rows"]
    (folders.landing / "notes.csv").unlink()
    second = tick(folders, first.cursor)
    assert json.loads(second.cursor) == {}
    assert not second.run_requests
