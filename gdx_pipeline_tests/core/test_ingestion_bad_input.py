"""Bad input, file level and row level: every data line ends up loaded or in the reject log."""

import json
import os
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import given, strategies as st

from gdx_pipeline.core.ingestion import ingest_file, ingest_landing
from gdx_pipeline.core.reject_log import reasons_json
from gdx_pipeline.core.warehouse import data_tables, quarantined_files, rejected_rows
from gdx_pipeline.dictionary import NAME_CHARACTERS_RULE
from gdx_pipeline_tests.core.landing import drop, rejects_by_line
from gdx_pipeline_tests.warehouse_contents import table_count

DEPARTMENTS = "1,Engineering\n2,Sales\n3,Support\n"
JOBS = "1,Engineer\n2,Manager\n"


def load_reference_tables(engine, folders) -> None:
    drop(folders, "departments.csv", DEPARTMENTS)
    drop(folders, "jobs.csv", JOBS)
    ingest_landing(engine, folders)


def employee(engine, employee_id: int):
    table = data_tables["hired_employees"]
    with engine.connect() as conn:
        return conn.execute(sa.select(table).where(table.c.id == employee_id)).first()


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def assert_every_line_accounted(engine, outcome, data_lines: int) -> None:
    assert outcome.rows_read == data_lines
    assert outcome.counts.loaded + outcome.rows_rejected == data_lines
    assert len(rejects_by_line(engine, outcome.file)) == outcome.rows_rejected


def test_bom_and_crlf_are_handled(engine, folders):
    drop(folders, "departments_bom.csv", "\ufeff1,Engineering\r\n2,Sales\r\n3,Support\r\n")
    (outcome,) = ingest_landing(engine, folders)
    assert outcome.status == "applied" and outcome.counts.inserted == 3
    table = data_tables["departments"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(table.c.id, table.c.department).order_by(table.c.id)).all() == [
            (1, "Engineering"),
            (2, "Sales"),
            (3, "Support"),
        ]


def test_quoted_commas_quotes_newlines_and_unicode(engine, folders):
    load_reference_tables(engine, folders)
    content = (
        '1,"Smith, John",2021-01-01T00:00:00Z,1,1\n'
        '2,"Zoë ""Zee"" Ñúñez-Łukasz 王",2021-01-02T00:00:00Z,2,2\n'
        '3,"Multi\nLine",2021-01-03T00:00:00Z,1,1\n'
        "4,,2021-01-04T00:00:00Z,1,1\n"
        "5,Last,2021-01-05T00:00:00Z,1,1\n"
    )
    drop(folders, "hired_employees_quoted.csv", content)
    (outcome,) = ingest_landing(engine, folders)
    assert_every_line_accounted(engine, outcome, 5)
    assert employee(engine, 1).name == "Smith, John"
    assert employee(engine, 2).name == 'Zoë "Zee" Ñúñez-Łukasz 王'
    # A quoted value may span lines; a line break inside a name is refused, and the record
    # after the two-line record keeps its physical line number (5).
    assert rejects_by_line(engine, outcome.file) == {
        3: ('3,"Multi\nLine",2021-01-03T00:00:00Z,1,1', [f"name: {NAME_CHARACTERS_RULE} (got 'Multi\\nLine')"]),
        5: ("4,,2021-01-04T00:00:00Z,1,1", ["name: missing"]),
    }
    assert employee(engine, 5).name == "Last"


def test_an_unclosed_quote_rejects_the_rest_of_the_file_as_one_record_and_loses_nothing(engine, folders):
    load_reference_tables(engine, folders)
    drop(folders, "hired_employees.csv", '1,Ann,2021-01-01T00:00:00Z,1,1\n2,"Bob,2021-01-01T00:00:00Z,1,1\n3,Cy,2021-01-01T00:00:00Z,1,1\n')
    (outcome,) = ingest_landing(engine, folders)
    assert outcome.counts.inserted == 1
    assert rejects_by_line(engine, outcome.file) == {
        2: (
            '2,"Bob,2021-01-01T00:00:00Z,1,1\n3,Cy,2021-01-01T00:00:00Z,1,1',
            ["row: a quoted field is never closed, so lines 2 to 3 were read as one record"],
        )
    }


def test_old_mac_line_endings_count_as_lines(engine, folders):
    drop(folders, "departments.csv", "1,Engineering\r2,Sales\r\r3,Support\r")
    (outcome,) = ingest_landing(engine, folders)
    assert outcome.counts.inserted == 3
    assert rejects_by_line(engine, outcome.file) == {3: ("", ["row: blank line"])}


@pytest.mark.parametrize(
    ("line", "reasons"),
    [
        ("10,Ann,2021-01-01T00:00:00Z,1,1,extra", ["row: expected 5 fields, found 6"]),
        ("10,Ann,2021-01-01T00:00:00Z", ["row: expected 5 fields, found 3"]),
        ("x1,Ann,2021-01-01T00:00:00Z,1,1", ["id: not an integer (got 'x1')"]),
        ("1.5,Ann,2021-01-01T00:00:00Z,1,1", ["id: not an integer (got '1.5')"]),
        ("1e3,Ann,2021-01-01T00:00:00Z,1,1", ["id: not an integer (got '1e3')"]),
        ("0,Ann,2021-01-01T00:00:00Z,1,1", ["id: must be >= 1 (got 0)"]),
        ("-5,Ann,2021-01-01T00:00:00Z,1,1", ["id: must be >= 1 (got -5)"]),
        ("2147483648,Ann,2021-01-01T00:00:00Z,1,1", ["id: must be <= 2147483647 (got 2147483648)"]),
        ("99999999999999999999999,Ann,2021-01-01T00:00:00Z,1,1", ["id: must be <= 2147483647 (got 99999999999999999999999)"]),
        ("10,Ann,2021-01-01T00:00:00Z,x,1", ["department_id: not an integer (got 'x')"]),
        ("10,Ann,not a date,1,1", ["datetime: not an ISO-8601 datetime with a Z or an offset (got 'not a date')"]),
        ("10,Ann,2021-01-01T00:00:00,1,1", ["datetime: not an ISO-8601 datetime with a Z or an offset (got '2021-01-01T00:00:00')"]),
        ("10,Ann,2021-02-30T00:00:00Z,1,1", ["datetime: not an ISO-8601 datetime with a Z or an offset (got '2021-02-30T00:00:00Z')"]),
        ("10,Ann,2021-01-01,1,1", ["datetime: not an ISO-8601 datetime with a Z or an offset (got '2021-01-01')"]),
        ("10,Ann,0021-01-01T00:00:00Z,1,1", ["datetime: must be >= 1900-01-01 00:00:00+00:00 (got '0021-01-01T00:00:00Z')"]),
        ("10,Ann,2021-01-01T00:00:00Z,99,1", ["department_id: no such id in departments (got 99)"]),
        ("10,Ann,2021-01-01T00:00:00Z,99,77", ["department_id: no such id in departments (got 99)", "job_id: no such id in jobs (got 77)"]),
        ("10,   ,2021-01-01T00:00:00Z,1,1", ["name: missing"]),
        ("10,," + ",1,1", ["name: missing", "datetime: missing"]),
        ("10," + "N" * 256 + ",2021-01-01T00:00:00Z,1,1", [f"name: must be 1 to 255 characters long (got {'N' * 80!r}… (256 characters))"]),
        ("", ["row: blank line"]),
        (",,,,", ["row: blank line"]),
    ],
)
def test_bad_rows_are_rejected_with_their_reason_and_the_rest_loads(engine, folders, line, reasons):
    load_reference_tables(engine, folders)
    drop(folders, "hired_employees.csv", f"1,Good One,2021-01-01T00:00:00Z,1,1\n{line}\n2,Good Two,2021-06-01T00:00:00+02:00,2,2\n")
    (outcome,) = ingest_landing(engine, folders)
    assert_every_line_accounted(engine, outcome, 3)
    assert outcome.counts.inserted == 2
    assert rejects_by_line(engine, outcome.file) == {2: (line, reasons)}


def test_offsets_are_converted_to_utc_and_quarters_move(engine, folders):
    load_reference_tables(engine, folders)
    drop(
        folders,
        "hired_employees.csv",
        "1,Late Night,2021-03-31T23:30:00-02:00,1,1\n2,Plus,2021-01-01T01:00:00+05:30,1,1\n3,Frac,2021-01-01T00:00:00.123456Z,1,1\n",
    )
    ingest_landing(engine, folders)
    assert as_utc(employee(engine, 1).datetime) == datetime(2021, 4, 1, 1, 30, tzinfo=UTC)
    assert as_utc(employee(engine, 2).datetime) == datetime(2020, 12, 31, 19, 30, tzinfo=UTC)
    assert as_utc(employee(engine, 3).datetime) == datetime(2021, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


def test_plus_signed_ids_and_dates_after_2262_load(engine, folders):
    """Both once crashed or were refused: Arrow's cast refused "+3", pandas' nanoseconds end in 2262."""
    load_reference_tables(engine, folders)
    drop(folders, "hired_employees.csv", "+3,Signed,2500-06-01T00:00:00Z,+1,+2\n4,Last,2999-12-31T23:59:59.999999Z,1,1\n")
    (outcome,) = ingest_landing(engine, folders)
    assert (outcome.counts.inserted, outcome.rows_rejected) == (2, 0)
    signed = employee(engine, 3)
    assert (signed.department_id, signed.job_id, as_utc(signed.datetime)) == (1, 2, datetime(2500, 6, 1, tzinfo=UTC))
    assert as_utc(employee(engine, 4).datetime) == datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_later_duplicate_ids_in_a_file_are_rejected_even_across_blocks(engine, folders):
    load_reference_tables(engine, folders)
    lines = [f"{i},Person {i},2021-01-01T00:00:00Z,1,1" for i in range(1, 401)]
    lines.insert(350, "7,Second Seven,2021-01-01T00:00:00Z,2,2")  # block boundary lies well before it
    lines.insert(3, "2,Early Duplicate,2021-01-01T00:00:00Z,2,2")
    path = drop(folders, "hired_employees.csv", "\n".join(lines) + "\n")
    outcome = ingest_file(engine, folders, path, block_bytes=1024)
    assert_every_line_accounted(engine, outcome, 402)
    assert outcome.counts.inserted == 400
    assert rejects_by_line(engine, outcome.file) == {
        4: ("2,Early Duplicate,2021-01-01T00:00:00Z,2,2", ["id: duplicate of an earlier row in this file (got 2)"]),
        352: ("7,Second Seven,2021-01-01T00:00:00Z,2,2", ["id: duplicate of an earlier row in this file (got 7)"]),
    }
    assert employee(engine, 7).name == "Person 7"


def test_a_rejected_first_occurrence_does_not_make_the_next_one_a_duplicate(engine, folders):
    load_reference_tables(engine, folders)
    drop(folders, "hired_employees.csv", "5,,2021-01-01T00:00:00Z,1,1\n5,Second Try,2021-01-01T00:00:00Z,1,1\n")
    (outcome,) = ingest_landing(engine, folders)
    assert outcome.counts.inserted == 1 and employee(engine, 5).name == "Second Try"


def test_existing_ids_are_updated_and_identical_rows_unchanged(engine, folders):
    load_reference_tables(engine, folders)
    drop(folders, "departments_renamed.csv", "1,Engineering\n2,Global Sales\n4,Legal\n")
    (outcome,) = ingest_landing(engine, folders)
    assert (outcome.counts.inserted, outcome.counts.updated, outcome.counts.unchanged) == (1, 1, 1)
    with engine.connect() as conn:
        table = data_tables["departments"]
        assert conn.execute(sa.select(table.c.department).where(table.c.id == 2)).scalar_one() == "Global Sales"


@pytest.mark.parametrize("rows", [30, 30_000])  # below and above SQLite's staging threshold
def test_a_second_file_counts_what_it_inserted_updated_and_left_alone(engine, folders, rows):
    load_reference_tables(engine, folders)
    line = lambda i, name: f"{i},{name},2021-01-01T00:00:00Z,{1 + i % 3},{1 + i % 2}\n"  # noqa: E731
    drop(folders, "hired_employees_1.csv", "".join(line(i, f"Person {i}") for i in range(1, rows + 1)))
    ingest_landing(engine, folders)
    third = rows // 3  # ids 1..third renamed, third+1..rows resent as they are, rows+1..rows+third new
    second = [line(i, f"Renamed {i}" if i <= third else f"Person {i}") for i in range(1, rows + third + 1)]
    drop(folders, "hired_employees_2.csv", "".join(second))
    (outcome,) = ingest_landing(engine, folders)
    assert (outcome.counts.inserted, outcome.counts.updated, outcome.counts.unchanged) == (third, third, rows - third)
    assert table_count(engine, "hired_employees") == rows + third
    assert employee(engine, 1).name == "Renamed 1" and employee(engine, rows).name == f"Person {rows}"


def test_rows_loaded_earlier_in_the_same_run_satisfy_foreign_keys(engine, folders):
    drop(folders, "hired_employees.csv", "1,Ann,2021-01-01T00:00:00Z,1,1\n")
    drop(folders, "jobs.csv", JOBS)
    drop(folders, "departments.csv", DEPARTMENTS)
    outcomes = ingest_landing(engine, folders)
    assert [o.file for o in outcomes] == ["departments.csv", "jobs.csv", "hired_employees.csv"]
    assert outcomes[2].counts.inserted == 1 and outcomes[2].rows_rejected == 0


@pytest.mark.parametrize(
    ("name", "content", "reason_start"),
    [
        ("hired_employees_empty.csv", b"", "the file is empty"),
        ("jobs_blank.csv", b"\n\n  \r\n", "the file is empty"),
        ("departments_bom_only.csv", b"\xef\xbb\xbf", "the file is empty"),
        ("jobs_garbage.csv", bytes(range(256)) * 8, "binary content (a NUL byte) at line 1"),
        ("jobs_latin1.csv", "1,Engineer\n2,Ingénieur\n".encode("latin-1"), "not UTF-8: undecodable byte at line 2"),
        ("salaries.csv", b"1,100\n", "unknown file name 'salaries.csv'"),
        ("departments.txt", b"1,Engineering\n", "unknown file name 'departments.txt'"),
    ],
)
def test_unreadable_files_are_quarantined_with_a_reason_and_do_not_block_others(engine, folders, name, content, reason_start):
    drop(folders, name, content)
    drop(folders, "departments.csv", DEPARTMENTS)
    outcomes = {o.file: o for o in ingest_landing(engine, folders, run_id="run-q")}

    assert outcomes["departments.csv"].status == "applied"
    assert table_count(engine, "departments") == 3
    bad = outcomes[name]
    assert bad.status == "quarantined" and bad.reason.startswith(reason_start)
    assert (folders.quarantine / name).read_bytes() == content
    assert (folders.quarantine / f"{name}.reason.txt").read_text(encoding="utf-8").startswith(reason_start)
    assert not (folders.landing / name).exists()
    with engine.connect() as conn:
        assert conn.execute(sa.select(quarantined_files.c.file_name, quarantined_files.c.run_id)).all() == [(name, "run-q")]
    assert table_count(engine, "rejected_rows") == 0


def test_a_file_undecodable_late_leaves_no_partial_rows(engine, folders):
    load_reference_tables(engine, folders)
    good = "".join(f"{i},Person {i},2021-01-01T00:00:00Z,1,1\n" for i in range(1, 2001)).encode()
    path = drop(folders, "hired_employees.csv", good + b"2001,Bad \xff Byte,2021-01-01T00:00:00Z,1,1\n")
    outcome = ingest_file(engine, folders, path, block_bytes=4096)
    assert outcome.status == "quarantined" and "line 2001" in outcome.reason
    assert table_count(engine, "hired_employees") == 0
    assert table_count(engine, "rejected_rows") == 0
    assert not any(p.name.endswith(".part") for p in folders.rejects.iterdir())


def test_reject_file_can_be_fixed_and_dropped_back(engine, folders):
    load_reference_tables(engine, folders)
    drop(folders, "hired_employees.csv", "1,Ann,2021-01-01T00:00:00Z,1,1\n2,Bob,2021-01-01T00:00:00Z,9,1\n3,,2021-01-01T00:00:00Z,1,1\n")
    (outcome,) = ingest_landing(engine, folders)
    reject_file = folders.rejects / outcome.reject_file
    assert reject_file.read_text() == "2,Bob,2021-01-01T00:00:00Z,9,1\n3,,2021-01-01T00:00:00Z,1,1\n"
    log = reject_file.with_suffix(".log").read_text()
    assert "line 2: department_id: no such id in departments (got 9)" in log and "line 3: name: missing" in log

    fixed = reject_file.read_text().replace(",9,", ",1,").replace("3,,", "3,Cy,")
    drop(folders, reject_file.name, fixed)
    (again,) = ingest_landing(engine, folders)
    assert again.status == "applied" and again.counts.inserted == 2 and again.rows_rejected == 0
    assert table_count(engine, "hired_employees") == 3


def test_hidden_files_are_left_alone(engine, folders):
    drop(folders, ".departments.csv.uploading", DEPARTMENTS)
    assert ingest_landing(engine, folders) == []
    assert (folders.landing / ".departments.csv.uploading").exists()


def test_processed_name_clash_keeps_both_files(engine, folders):
    drop(folders, "departments.csv", DEPARTMENTS)
    ingest_landing(engine, folders)
    drop(folders, "departments.csv", "5,Legal\n")
    (outcome,) = ingest_landing(engine, folders)
    assert set(os.listdir(folders.processed)) == {"departments.csv", f"departments.{outcome.sha256[:8]}.csv"}


# Texts joined from characters: `st.text` never draws a lone surrogate, these often do.
@given(st.lists(st.lists(st.characters() | st.characters(categories=["Cs"])).map("".join)))
def test_reasons_are_written_as_json_dumps_writes_them(reasons):
    """The reject log's hand-joined JSON against the json module's own encoder, on any texts
    (quotes, backslashes, control characters, lone surrogates, any script)."""
    assert reasons_json(reasons) == json.dumps(reasons, ensure_ascii=False)


def test_reject_reasons_are_stored_as_a_json_list(engine, folders):
    load_reference_tables(engine, folders)
    drop(folders, "hired_employees.csv", "1,,x,9,1\n")
    ingest_landing(engine, folders)
    with engine.connect() as conn:
        raw = conn.execute(sa.select(sa.cast(rejected_rows.c.reasons, sa.Text))).scalar_one()
    assert json.loads(raw) == [
        "name: missing",
        "datetime: not an ISO-8601 datetime with a Z or an offset (got 'x')",
        "department_id: no such id in departments (got 9)",
    ]
