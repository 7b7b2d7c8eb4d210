"""Fixtures the core tests share: the real data loaded with a few rows it lacks (the backup and
restore tests start from it)."""

import pytest

from gdx_pipeline.core.batches import apply_batch, block_from_mappings
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.validation import parsing
from gdx_pipeline.dictionary import TABLES

# Rows the real data lacks: non-ASCII names and a hire time with microseconds.
UNICODE_EMPLOYEES = [
    {"id": 900001, "name": "Zoë Ñandú-Søren 😀", "datetime": "2021-07-01T12:34:56.123456Z", "department_id": 1, "job_id": 1},
    {"id": 900002, "name": "Nguyễn Thị Minh Khai", "datetime": "2021-12-31T23:59:59.999999+00:00", "department_id": 2, "job_id": 3},
    {"id": 900003, "name": "李小龍", "datetime": "2022-03-04T05:06:07.000001-03:00", "department_id": 3, "job_id": 5},
]


@pytest.fixture
def loaded(engine, globant_landing):
    """The real data loaded (12 departments, 183 jobs, 1,929 employees, 70 rejects), plus three
    unicode employees with microsecond hire times."""
    ingest_landing(engine, globant_landing, run_id="load")
    outcome = apply_batch(
        engine, TABLES["hired_employees"], block_from_mappings(TABLES["hired_employees"], UNICODE_EMPLOYEES), request_id="unicode"
    )
    assert not outcome.rejected
    return engine, globant_landing


@pytest.fixture(params=["plain kernels", "copy-free"])
def parse_path(request, monkeypatch):
    """Both ways a column is parsed, whatever its size: Arrow's plain kernels (a small column)
    and the copy-free trimming and nulls (a file's block, here from the first value on)."""
    if request.param == "copy-free":
        monkeypatch.setattr(parsing, "COPY_FREE_FROM_VALUES", 0)
    return request.param
