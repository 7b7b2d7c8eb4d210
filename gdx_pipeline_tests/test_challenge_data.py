"""The challenge's files shipped with the tests are the challenge's files: the bytes its
candidates received (pinned by sha256), the shape its README states, and the published outcome
(1,929 employees loaded, 70 rejected) on SQLite and PostgreSQL."""

import csv
import hashlib
from collections import Counter

from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline_tests.paths import GLOBANT_DATA, GLOBANT_FILES
from gdx_pipeline_tests.warehouse_contents import table_count

# sha256 of the files as the challenge published them: any edit to the test data fails here.
CHALLENGE_SHA256 = {
    "departments.csv": "740cf198822cc81cc1d06d3d1b241f07c49af79b2a29795e79e716704ab9c2f9",
    "jobs.csv": "4f799877ebe90b0f5ab0308afcb6641e8fcacee88e79e294368367b159b8a0f5",
    "hired_employees.csv": "d1f2b02b5fe8d940034a67b3f5123b62d880a5ad33baf0e700c4108bfebad8cd",
}
EMPLOYEE_COLUMNS = ["id", "name", "datetime", "department_id", "job_id"]


def test_the_shipped_files_are_the_challenges_bytes():
    assert sorted(p.name for p in GLOBANT_DATA.glob("*.csv")) == sorted(GLOBANT_FILES)
    assert {name: hashlib.sha256((GLOBANT_DATA / name).read_bytes()).hexdigest() for name in GLOBANT_FILES} == CHALLENGE_SHA256


def test_the_shipped_files_have_the_shape_the_challenge_states():
    rows = {}
    for name in GLOBANT_FILES:
        raw = (GLOBANT_DATA / name).read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")  # LF line ends
        with (GLOBANT_DATA / name).open(newline="", encoding="utf-8") as handle:
            rows[name] = list(csv.reader(handle))
    assert {name: len(r) for name, r in rows.items()} == {"departments.csv": 12, "jobs.csv": 183, "hired_employees.csv": 1999}
    assert rows["departments.csv"][0][0] == "1"  # headerless
    blanks = [[c for c, v in zip(EMPLOYEE_COLUMNS, row) if not v.strip()] for row in rows["hired_employees.csv"]]
    assert all(len(row) == 5 for row in rows["hired_employees.csv"])
    assert Counter(len(b) for b in blanks) == {0: 1929, 1: 70}  # 70 rows with exactly one blank field
    assert Counter(b[0] for b in blanks if b) == {"department_id": 21, "name": 19, "job_id": 16, "datetime": 14}


def test_the_shipped_files_give_the_published_outcome(engine, globant_landing):
    ingest_landing(engine, globant_landing, run_id="challenge")
    counts = {table: table_count(engine, table) for table in ("departments", "jobs", "hired_employees", "rejected_rows")}
    assert counts == {"departments": 12, "jobs": 183, "hired_employees": 1929, "rejected_rows": 70}
