"""The REST API on real warehouses (SQLite and PostgreSQL): batches in, rows and rejects out,
every status code, auth, and the writes showing up in a real Dagster instance."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from gdx_pipeline.api.auth import token_matches
from gdx_pipeline.api.orchestration import Orchestration
from gdx_pipeline.api.settings import MAX_ROWS_PER_REQUEST, ApiSettings
from gdx_pipeline.core.batches import BatchOutcome
from gdx_pipeline.core.loading import LoadCounts
from gdx_pipeline.core.warehouse import ingestion_ledger, rejected_rows
from gdx_pipeline.dictionary import TABLES
from gdx_pipeline_tests.api.app_client import (
    TOKEN,
    app_engine,
    assert_json_error,
    count_rows,
    department_rows,
    make_client,
    seed_departments_and_jobs,
)


def reject_log(client, **where) -> list[dict]:  # noqa: ANN001, ANN003
    query = sa.select(rejected_rows).order_by(rejected_rows.c.id)
    for column, value in where.items():
        query = query.where(rejected_rows.c[column] == value)
    with app_engine(client).connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


# --- batch sizes -----------------------------------------------------------------------------


def test_a_batch_of_1000_rows_is_accepted_and_1001_refused_as_json(client) -> None:  # noqa: ANN001
    accepted = client.post("/tables/departments/rows", json={"rows": department_rows(range(1, MAX_ROWS_PER_REQUEST + 1))})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["inserted"] == MAX_ROWS_PER_REQUEST and accepted.json()["rejected"] == []
    assert count_rows(client, "departments") == MAX_ROWS_PER_REQUEST

    too_many = department_rows(range(5_001, 5_001 + MAX_ROWS_PER_REQUEST + 1))
    body = assert_json_error(client.post("/tables/departments/rows", json={"rows": too_many}), 413)
    assert f"{MAX_ROWS_PER_REQUEST:,}" in body["message"]
    assert count_rows(client, "departments") == MAX_ROWS_PER_REQUEST  # nothing of the refused batch landed
    assert reject_log(client) == []


def test_a_batch_of_1000_lines_is_accepted_and_1001_refused_as_csv(client) -> None:  # noqa: ANN001
    def csv_lines(ids: range) -> str:
        return "".join(f"{i},Job {i}\n" for i in ids)

    headers = {"Content-Type": "text/csv"}
    accepted = client.post("/tables/jobs/rows", content=csv_lines(range(1, MAX_ROWS_PER_REQUEST + 1)), headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["inserted"] == MAX_ROWS_PER_REQUEST
    refused = client.post("/tables/jobs/rows", content=csv_lines(range(2_001, 2_002 + MAX_ROWS_PER_REQUEST)), headers=headers)
    assert_json_error(refused, 413)
    assert count_rows(client, "jobs") == MAX_ROWS_PER_REQUEST


def test_no_rows_is_422(client) -> None:  # noqa: ANN001
    assert "at least 1" in assert_json_error(client.post("/tables/jobs/rows", json={"rows": []}), 422)["message"]
    assert (
        "no rows"
        in assert_json_error(client.post("/tables/jobs/rows", content="\n  \n", headers={"Content-Type": "text/csv"}), 422)["message"]
    )
    assert count_rows(client, "jobs") == 0


# --- mixed valid and invalid rows --------------------------------------------------------------


def test_mixed_valid_and_invalid_json_rows_commit_the_valid_and_log_the_rest(client) -> None:  # noqa: ANN001
    seed_departments_and_jobs(client, departments=3, jobs=3)
    at = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    rows = [
        {"id": 1, "name": "Ada", "datetime": at.isoformat(), "department_id": 1, "job_id": 2},
        {"id": 2, "name": "", "datetime": at.isoformat(), "department_id": 1, "job_id": 1},  # blank name
        {"id": 3, "name": "Bob", "datetime": "2021-03-04T05:06:07-03:00", "department_id": 2, "job_id": 3.0},  # 3.0 is an integer
        {"id": 4, "name": "Cy", "datetime": "yesterday", "department_id": 99, "job_id": 1},  # bad date, unknown department
        {"id": 5, "name": "Di", "datetime": at.isoformat(), "department_id": 1, "job_id": 1, "salary": 10},  # unknown field
        {"id": 6, "name": "Ed", "department_id": 1, "job_id": 1},  # missing datetime
        {"id": 1, "name": "Ada again", "datetime": at.isoformat(), "department_id": 1, "job_id": 1},  # duplicate id in batch
        {"id": 7.5, "name": "Fay", "datetime": at.isoformat(), "department_id": [1], "job_id": None},  # wrong types
        {"id": "8", "name": "Gus", "datetime": at.isoformat(), "department_id": 1, "job_id": 1},  # "8" is a string
    ]
    valid_positions = [0, 2]
    response = client.post("/tables/hired_employees/rows", json={"rows": rows}, headers={"X-Request-ID": "mixed-batch-1"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert response.headers["X-Request-ID"] == result["request_id"] == "mixed-batch-1"
    assert result["rows_received"] == len(rows)
    assert result["inserted"] == len(valid_positions) and result["updated"] == 0
    rejected = {r["index"]: r["reasons"] for r in result["rejected"]}
    assert sorted(rejected) == [i for i in range(len(rows)) if i not in valid_positions]
    assert any(r.startswith("name:") for r in rejected[1])
    assert {r.split(":")[0] for r in rejected[3]} == {"datetime", "department_id"}
    assert any("no such id in departments" in r for r in rejected[3])
    assert any("salary" in r for r in rejected[4])
    assert rejected[5] == ["datetime: missing"]
    assert "duplicate" in rejected[6][0]
    assert rejected[6] == ["id: duplicate of an earlier row in this request (got 1)"]
    assert rejected[7] == [
        "id: expected an integer (got number 7.5)",
        "department_id: expected an integer (got array [1])",
        "job_id: missing",
    ]
    assert rejected[8] == ["id: expected an integer (got string '8')"]

    stored = client.get("/tables/hired_employees/rows").json()["rows"]
    assert [r["id"] for r in stored] == [1, 3]
    assert stored[1]["datetime"] == "2021-03-04T08:06:07Z"  # the offset is normalised to UTC
    log = reject_log(client, table_name="hired_employees")
    assert [(r["line_number"], r["source"], r["request_id"]) for r in log] == [
        (i + 1, "api", "mixed-batch-1") for i in sorted(rejected)
    ]
    assert [json.loads(r["raw_line"]) for r in log] == [rows[i] for i in sorted(rejected)]
    assert [r["reasons"] for r in log] == [rejected[i] for i in sorted(rejected)]


def test_mixed_valid_and_invalid_csv_lines(client) -> None:  # noqa: ANN001
    lines = ["1,Engineering", "id,job", "2,", "3,Sales,extra", "", "4,Support"]
    response = client.post("/tables/jobs/rows", content="\n".join(lines) + "\n", headers={"Content-Type": "text/csv; charset=utf-8"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["inserted"] == 2
    assert [r["index"] for r in result["rejected"]] == [1, 2, 3, 4]
    assert [r["raw_line"] for r in reject_log(client)] == [lines[i] for i in (1, 2, 3, 4)]
    assert [r["id"] for r in client.get("/tables/jobs/rows").json()["rows"]] == [1, 4]


def test_resending_rows_updates_what_changed_and_leaves_the_rest(client) -> None:  # noqa: ANN001
    first = client.post("/tables/departments/rows", json={"rows": department_rows(range(1, 6))}).json()
    assert (first["inserted"], first["updated"], first["unchanged"]) == (5, 0, 0)
    changed = department_rows(range(1, 6))
    changed[2]["department"] = "Renamed"
    again = client.post("/tables/departments/rows", json={"rows": changed + department_rows([6])}).json()
    assert (again["inserted"], again["updated"], again["unchanged"]) == (1, 1, 4)
    names = {r["id"]: r["department"] for r in client.get("/tables/departments/rows").json()["rows"]}
    assert names[3] == "Renamed" and len(names) == 6


def test_every_batch_is_recorded_in_the_ingestion_ledger(client) -> None:  # noqa: ANN001
    client.post("/tables/departments/rows", json={"rows": department_rows(range(1, 4)) + [{"id": "x"}]})
    with app_engine(client).connect() as conn:
        ledger = conn.execute(sa.select(ingestion_ledger)).mappings().all()
    assert [(r["table_name"], r["source"], r["rows_read"], r["rows_inserted"], r["rows_rejected"]) for r in ledger] == [
        ("departments", "api", 4, 3, 1)
    ]


# --- malformed bodies and the other status codes ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"rows": [{"id": 1,', "application/json", "malformed JSON"),
        (b"[1, 2, 3]", "application/json", "rows"),
        (b'{"rows": {"id": 1}}', "application/json", "rows"),
        (b'{"rows": [{"id": 1, "department": "A"}], "more": 1}', "application/json", "more"),
        (b'{"rows": [7]}', "application/json", "rows.0"),
        (b"1,A\xff\xfe\n", "text/csv", "not UTF-8"),
        (b"1,A\x00\n", "text/csv", "NUL"),
    ],
)
def test_malformed_bodies_are_422_with_a_message(client, body: bytes, content_type: str, expected: str) -> None:  # noqa: ANN001
    response = client.post("/tables/departments/rows", content=body, headers={"Content-Type": content_type})
    assert expected in assert_json_error(response, 422)["message"]
    assert count_rows(client, "departments") == 0 and reject_log(client) == []


def test_status_codes_for_unknown_things(client) -> None:  # noqa: ANN001
    for method in ("get", "post"):
        body = assert_json_error(getattr(client, method)("/tables/employees/rows"), 404)
        assert "employees" in body["message"] and all(t in body["message"] for t in TABLES)
    assert_json_error(client.get("/no/such/endpoint"), 404)
    assert_json_error(client.delete("/tables/jobs/rows"), 405)
    body = assert_json_error(client.post("/tables/jobs/rows", content=b"1,A", headers={"Content-Type": "text/plain"}), 415)
    assert "text/csv" in body["message"]
    assert_json_error(client.post("/tables/jobs/rows", content=b"1,A"), 415)
    assert "limit" in assert_json_error(client.get("/tables/jobs/rows", params={"limit": 0}), 422)["message"]
    assert "after_id" in assert_json_error(client.get("/tables/jobs/rows", params={"after_id": "x"}), 422)["message"]
    assert_json_error(client.get("/rejected-rows", params={"table": "employees"}), 422)


def test_body_byte_cap_refuses_declared_and_streamed_bodies(api_settings: ApiSettings, dagster_instance) -> None:  # noqa: ANN001
    small = ApiSettings(data_folder=api_settings.data_folder, warehouse=api_settings.warehouse, max_body_bytes=2_000)
    rows = {"rows": department_rows(range(1, 101))}
    payload = json.dumps(rows).encode()
    assert len(payload) > small.max_body_bytes
    with make_client(small, dagster_instance) as client:
        declared = client.post("/tables/departments/rows", content=payload, headers={"Content-Type": "application/json"})
        assert "2,000 bytes" in assert_json_error(declared, 413)["message"]

        def chunks():  # noqa: ANN202  (no Content-Length: the server must count)
            for start in range(0, len(payload), 500):
                yield payload[start : start + 500]

        streamed = client.post("/tables/departments/rows", content=chunks(), headers={"Content-Type": "application/json"})
        assert_json_error(streamed, 413)
        small_enough = client.post("/tables/departments/rows", json={"rows": department_rows(range(1, 4))})
        assert small_enough.status_code == 200
        assert count_rows(client, "departments") == 3


def test_unexpected_errors_are_json_500_without_a_traceback(client) -> None:  # noqa: ANN001
    def broken() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    client.app.add_api_route("/test-only/broken", broken)
    body = assert_json_error(client.get("/test-only/broken"), 500)
    assert "secret" not in body["message"] and "RuntimeError" not in body["message"]


# --- reading -----------------------------------------------------------------------------------


def test_rows_are_read_in_keyset_pages(client) -> None:  # noqa: ANN001
    ids = [3, 1, 40, 7, 12, 5, 99, 18, 2, 60, 8]
    client.post("/tables/departments/rows", json={"rows": department_rows(ids)})
    seen, after, pages = [], 0, 0
    while after is not None:
        page = client.get("/tables/departments/rows", params={"after_id": after, "limit": 4}).json()
        seen += [r["id"] for r in page["rows"]]
        after = page["next_after_id"]
        pages += 1
    assert seen == sorted(ids) and pages == -(-len(ids) // 4)


def test_timestamps_come_back_in_utc(client) -> None:  # noqa: ANN001
    seed_departments_and_jobs(client, 1, 1)
    local = datetime(2021, 12, 31, 22, 30, tzinfo=UTC) + timedelta(0)
    rows = [{"id": 1, "name": "A", "datetime": "2021-12-31T21:30:00-01:00", "department_id": 1, "job_id": 1}]
    assert client.post("/tables/hired_employees/rows", json={"rows": rows}).json()["inserted"] == 1
    stored = client.get("/tables/hired_employees/rows").json()["rows"][0]
    assert datetime.fromisoformat(stored["datetime"].replace("Z", "+00:00")) == local
    assert stored["datetime"].endswith("Z")


def test_the_reject_log_filters_by_table_and_source_and_pages(client) -> None:  # noqa: ANN001
    client.post("/tables/departments/rows", json={"rows": [{"id": "a"}, {"id": "b"}, {"id": 1, "department": "ok"}]})
    client.post("/tables/jobs/rows", content="x,Job\ny,Job\nz,Job\n", headers={"Content-Type": "text/csv"})
    everything = client.get("/rejected-rows").json()
    assert len(everything["rows"]) == 5 and everything["next_after_id"] is None
    departments = client.get("/rejected-rows", params={"table": "departments", "source": "api"}).json()["rows"]
    assert [r["raw_line"] for r in departments] == ['{"id": "a"}', '{"id": "b"}']
    assert client.get("/rejected-rows", params={"source": "jobs.csv"}).json()["rows"] == []
    first = client.get("/rejected-rows", params={"table": "jobs", "limit": 2}).json()
    rest = client.get("/rejected-rows", params={"table": "jobs", "after_id": first["next_after_id"]}).json()
    assert [r["raw_line"] for r in first["rows"] + rest["rows"]] == ["x,Job", "y,Job", "z,Job"]
    assert all(r["rejected_at"].endswith("Z") and r["reasons"] for r in everything["rows"])


# --- authentication ----------------------------------------------------------------------------


def test_without_a_token_writes_need_no_header(client) -> None:  # noqa: ANN001
    assert client.post("/tables/departments/rows", json={"rows": department_rows([1])}).status_code == 200


def test_with_a_token_every_write_needs_it(api_settings: ApiSettings, dagster_instance) -> None:  # noqa: ANN001
    secured = ApiSettings(data_folder=api_settings.data_folder, warehouse=api_settings.warehouse, token=TOKEN)
    batch = {"rows": department_rows([1, 2])}
    with make_client(secured, dagster_instance) as client:
        missing = client.post("/tables/departments/rows", json=batch)
        assert "Bearer" in assert_json_error(missing, 401)["message"]
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert_json_error(client.post("/tables/departments/rows", json=batch, headers={"Authorization": f"Bearer {TOKEN}x"}), 401)
        assert_json_error(client.post("/tables/departments/rows", json=batch, headers={"Authorization": f"Basic {TOKEN}"}), 401)
        assert count_rows(client, "departments") == 0
        ok = client.post("/tables/departments/rows", json=batch, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["inserted"] == 2
        assert client.get("/tables/departments/rows").status_code == 200  # reads stay open
        assert client.get("/health").status_code == 200
        schema = client.get("/openapi.json").json()
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
        writes = [op for path in schema["paths"].values() for method, op in path.items() if method == "post"]
        assert writes and all(op["security"] == [{"HTTPBearer": []}] and "401" in op["responses"] for op in writes)
        assert "security" not in schema["paths"]["/tables/departments/rows"]["get"]


def test_token_comparison() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN) and not token_matches("", TOKEN) and not token_matches("é", "e")


# --- Dagster -----------------------------------------------------------------------------------


def materializations(client, instance: dg.DagsterInstance, asset: str, request_id: str) -> list[dg.AssetMaterialization]:  # noqa: ANN001
    client.app.state.orchestration.flush()
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1_000).records
    found = [r.asset_materialization for r in records]
    return [m for m in found if request_id in m.metadata["request_ids"].value]


def test_api_writes_appear_as_materializations_of_the_tables_they_touched(client, dagster_instance) -> None:  # noqa: ANN001
    rows = department_rows(range(1, 4)) + [{"id": "bad"}]
    result = client.post("/tables/departments/rows", json={"rows": rows}).json()
    (table_event,) = materializations(client, dagster_instance, "departments", result["request_id"])
    assert table_event.metadata["rows_inserted"].value == 3
    assert table_event.metadata["rows_rejected"].value == 1
    assert table_event.metadata["source"].value == "api"
    (reject_event,) = materializations(client, dagster_instance, "rejected_rows", result["request_id"])
    assert reject_event.metadata["rows_rejected"].value == 1
    assert reject_event.metadata["rejected_by_table"].value == {"departments": 1}

    unchanged = client.post("/tables/departments/rows", json={"rows": department_rows(range(1, 4))}).json()
    assert unchanged["unchanged"] == 3
    assert materializations(client, dagster_instance, "departments", unchanged["request_id"]) == []  # nothing was written


def test_batches_committed_close_together_are_reported_together_and_flush_does_not_wait_out_the_linger() -> None:
    outcome = BatchOutcome(counts=LoadCounts(inserted=2, updated=1), rejected=[], rows_read=3)
    with dg.instance_for_test() as instance:
        orchestration = Orchestration(instance, {}, report_linger=60)  # far longer than this test may take
        started = time.monotonic()
        for n in range(10):
            orchestration.report_batch("jobs", outcome, f"close-{n}")
        orchestration.flush()
        assert time.monotonic() - started < 30  # the flush cut the linger short
        (event,) = [r.asset_materialization for r in instance.fetch_materializations(dg.AssetKey("jobs"), limit=100).records]
        assert event.metadata["batches"].value == 10
        assert event.metadata["request_ids"].value == [f"close-{n}" for n in range(10)]
        assert event.metadata["rows_inserted"].value == 20 and event.metadata["rows_updated"].value == 10
        orchestration.flush()  # nothing queued: returns at once


def test_a_dagster_instance_that_fails_never_fails_the_write(api_settings: ApiSettings) -> None:
    with dg.instance_for_test() as instance:
        pass  # disposed, its storage folder deleted: reporting to it now fails
    with make_client(api_settings, instance) as client:
        response = client.post("/tables/departments/rows", json={"rows": department_rows([1, 2])})
        client.app.state.orchestration.flush()
        assert response.status_code == 200 and response.json()["inserted"] == 2
        assert count_rows(client, "departments") == 2


# --- service -----------------------------------------------------------------------------------


def test_health_reports_the_database_and_version(client) -> None:  # noqa: ANN001
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["database"] == "reachable"
    assert body["dialect"] == app_engine(client).dialect.name and body["version"]


def test_health_is_503_when_the_database_is_unreachable(client) -> None:  # noqa: ANN001
    # A real engine to a port where nothing listens.
    from gdx_pipeline.core.warehouse import create_warehouse_engine

    client.app.state.engine = create_warehouse_engine("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["status"] == "unavailable"
    body = assert_json_error(client.get("/tables/jobs/rows"), 503)
    assert "unavailable" in body["message"]


def test_openapi_documents_each_table_from_the_dictionary(client) -> None:  # noqa: ANN001
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for name, spec in TABLES.items():
        post = schema["paths"][f"/tables/{name}/rows"]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        row_ref = components[ref]["properties"]["rows"]["items"]["$ref"].rsplit("/", 1)[-1]
        assert list(components[row_ref]["properties"]) == spec.columns == components[row_ref]["required"]
        assert "text/csv" in post["requestBody"]["content"]
        assert {"200", "413", "415", "422"} <= set(post["responses"])
        assert "401" not in post["responses"] and "security" not in post  # this server asks no token
    assert "securitySchemes" not in schema["components"]


def test_a_batch_that_kept_meeting_concurrent_inserts_is_answered_503_try_again() -> None:
    """A batch is tried again when another inserted its new ids meanwhile; if every attempt met
    one, nothing was written and the client is told to send it again, not shown a 500."""
    import json

    from gdx_pipeline.api.errors import answer
    from gdx_pipeline.core.staged_writes import ConcurrentInsert

    message = "3 new id(s) of this write were inserted by a concurrent write meanwhile; nothing was written, try again"
    response = answer(ConcurrentInsert(message))
    assert response.status_code == 503
    assert json.loads(response.body) == {"error": "concurrent_write", "message": message}
