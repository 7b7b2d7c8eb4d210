"""Eight clients posting batches at once: every row is accounted for, exactly once."""

from __future__ import annotations

import asyncio

import dagster as dg
import httpx
import sqlalchemy as sa

from gdx_pipeline.api.app import create_app
from gdx_pipeline.api.settings import ApiSettings
from gdx_pipeline.core.warehouse import ingestion_ledger, rejected_rows

CLIENTS = 8
BATCHES_PER_CLIENT = 4
ROWS_PER_BATCH = 250
SHARED_IDS = range(1, 11)  # every batch of every client also sends these, identically
INVALID_EVERY = 25  # every 25th row points at a department that does not exist
DEPARTMENTS = JOBS = 10


def employee(id_: int, position: int) -> dict:
    department = 999 if position % INVALID_EVERY == INVALID_EVERY - 1 else 1 + id_ % DEPARTMENTS
    return {"id": id_, "name": f"Employee {id_}", "datetime": "2021-06-01T12:00:00Z", "department_id": department, "job_id": 1 + id_ % JOBS}


def batch(client: int, number: int) -> list[dict]:
    shared = [employee(i, 0) for i in SHARED_IDS]
    first = 1_000 + (client * BATCHES_PER_CLIENT + number) * ROWS_PER_BATCH
    own = [employee(first + k, k) for k in range(ROWS_PER_BATCH - len(shared))]
    return shared + own


async def post_all(app) -> list[dict]:  # noqa: ANN001
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        seed = [{"id": i, "department": f"D{i}"} for i in range(1, DEPARTMENTS + 1)]
        assert (await http.post("/tables/departments/rows", json={"rows": seed})).status_code == 200
        jobs = [{"id": i, "job": f"J{i}"} for i in range(1, JOBS + 1)]
        assert (await http.post("/tables/jobs/rows", json={"rows": jobs})).status_code == 200

        async def one_client(number: int) -> list[dict]:
            results = []
            for b in range(BATCHES_PER_CLIENT):
                response = await http.post("/tables/hired_employees/rows", json={"rows": batch(number, b)})
                assert response.status_code == 200, response.text
                results.append(response.json())
            return results

        per_client = await asyncio.gather(*(one_client(c) for c in range(CLIENTS)))
    return [result for results in per_client for result in results]


def test_concurrent_batches_from_8_clients_account_for_every_row(api_settings: ApiSettings, dagster_instance) -> None:  # noqa: ANN001
    app = create_app(api_settings, instance=dagster_instance)
    engine = app.state.engine
    try:
        results = asyncio.run(post_all(app))
        sent = [row for c in range(CLIENTS) for b in range(BATCHES_PER_CLIENT) for row in batch(c, b)]
        valid_ids = {row["id"] for row in sent if row["department_id"] != 999}
        invalid = [row for row in sent if row["department_id"] == 999]

        assert len(results) == CLIENTS * BATCHES_PER_CLIENT
        assert sum(r["rows_received"] for r in results) == len(sent)
        assert sum(r["inserted"] + r["updated"] + r["unchanged"] + len(r["rejected"]) for r in results) == len(sent)
        assert sum(r["inserted"] for r in results) == len(valid_ids)  # the shared ids were inserted once
        assert sum(r["updated"] for r in results) == 0
        assert sum(len(r["rejected"]) for r in results) == len(invalid)
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT id FROM hired_employees")).scalars())
            logged = conn.execute(
                sa.select(rejected_rows.c.request_id, sa.func.count())
                .where(rejected_rows.c.table_name == "hired_employees")
                .group_by(rejected_rows.c.request_id)
            ).all()
            ledger = conn.execute(
                sa.select(sa.func.count(), sa.func.sum(ingestion_ledger.c.rows_read)).where(
                    ingestion_ledger.c.table_name == "hired_employees"
                )
            ).one()
        assert stored == valid_ids
        assert dict(logged) == {r["request_id"]: len(r["rejected"]) for r in results}
        assert tuple(ledger) == (len(results), len(sent))
        app.state.orchestration.flush()
        records = dagster_instance.fetch_materializations(dg.AssetKey("hired_employees"), limit=10_000).records
        ours = {r["request_id"] for r in results}  # the instance is shared with other tests
        reported = [r.asset_materialization.metadata for r in records if ours & set(r.asset_materialization.metadata["request_ids"].value)]
        reported_ids = [i for m in reported for i in m["request_ids"].value]
        assert sorted(reported_ids) == sorted(r["request_id"] for r in results if r["inserted"] or r["updated"])
        assert sum(m["rows_inserted"].value for m in reported) == len(valid_ids)
    finally:
        engine.dispose()
