"""How batches are written: outside-the-lock validation, SQLite's writer queue, PostgreSQL's
shared batch lock, key-ordered upserts and the retry of a batch that lost a race."""

from __future__ import annotations

import logging
import random
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gdx_pipeline.core.batches import apply_batch, block_from_mappings
from gdx_pipeline.core.ingestion import lock_table_for_writes
from gdx_pipeline.core.loading import known_keys
from gdx_pipeline.core.validation import RowValidator, SeenIds, check_rows
from gdx_pipeline.core.validation.parsing import _canonical_instants, _parse_integer, _parse_timestamp
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine, data_tables, write_transaction
from gdx_pipeline.dictionary import ID_MAX, table_spec
from gdx_pipeline_tests.warehouse_contents import table_count

EMPLOYEES = table_spec("hired_employees")


def seed(engine: sa.Engine, departments: int = 3, jobs: int = 3) -> None:
    apply_batch(
        engine,
        table_spec("departments"),
        block_from_mappings(table_spec("departments"), [{"id": i, "department": f"D{i}"} for i in range(1, departments + 1)]),
        request_id="seed",
    )
    apply_batch(
        engine,
        table_spec("jobs"),
        block_from_mappings(table_spec("jobs"), [{"id": i, "job": f"J{i}"} for i in range(1, jobs + 1)]),
        request_id="seed",
    )


def employee(id_: int, name: str = "", department_id: int = 1) -> dict:
    return {"id": id_, "name": name or f"Employee {id_}", "datetime": "2021-06-01T12:00:00Z", "department_id": department_id, "job_id": 1}


# --- the pieces -----------------------------------------------------------------------------------


def test_seen_ids_finds_duplicates_within_the_first_block_and_across_later_ones() -> None:
    seen = SeenIds()
    first = seen.mark(np.array([5, 7, 5, 9, 0]), np.array([True, True, True, True, False]))
    assert first.tolist() == [False, False, True, False, False]  # a non-candidate is never a duplicate
    second = seen.mark(np.array([9, 11, 11, 0, 7]), np.array([True, True, True, False, False]))
    assert second.tolist() == [True, False, True, False, False]
    third = seen.mark(np.array([0, 11, 12]), np.array([True, True, True]))
    assert third.tolist() == [False, True, False]  # 0 was never a candidate before, so it is new now


def test_json_values_become_the_text_a_csv_field_would_hold_or_are_refused_for_their_type() -> None:
    rows = [
        {"id": 1, "department": "Sales"},
        {"id": "2", "department": None},
        {"department": "No id"},
        {"id": True, "department": 7},
        {"id": 2.5, "department": ["x"]},
        {"id": 2**70, "department": {"a": 1}},
        {"id": 1e3, "department": False},
    ]
    block = block_from_mappings(table_spec("departments"), rows)
    assert block.fields.column("id").to_pylist() == ["1", "", "", "", "", str(2**70), "1000"]
    assert block.fields.column("department").to_pylist() == ["Sales", "", "No id", "", "", "", ""]
    assert block.refused == {
        "id": {
            1: "expected an integer (got string '2')",
            3: "expected an integer (got boolean true)",
            4: "expected an integer (got number 2.5)",
        },
        "department": {
            3: "expected a string (got number 7)",
            4: 'expected a string (got array ["x"])',
            5: 'expected a string (got object {"a": 1})',
            6: "expected a string (got boolean false)",
        },
    }
    uniform = block_from_mappings(
        table_spec("departments"), [{"id": 10, "department": "A"}, {"id": -3, "department": "B"}, {"department": "C"}]
    )
    assert uniform.fields.column("id").to_pylist() == ["10", "-3", ""]


ISO_TEXTS = {
    "2021-06-01T12:00:00Z": datetime(2021, 6, 1, 12, tzinfo=UTC),
    "2021-06-01t12:00:00z": datetime(2021, 6, 1, 12, tzinfo=UTC),
    "2021-06-01 12:00:00+00:00": datetime(2021, 6, 1, 12, tzinfo=UTC),
    "2021-06-01T12:00Z": datetime(2021, 6, 1, 12, tzinfo=UTC),
    "2021-06-01T12:00:00.123456789-03:00": datetime(2021, 6, 1, 15, 0, 0, 123456, tzinfo=UTC),
    "2021-06-01T12:00:00,5+0530": datetime(2021, 6, 1, 6, 30, 0, 500000, tzinfo=UTC),
    "2021-06-01T12:00:00+05": datetime(2021, 6, 1, 7, tzinfo=UTC),
    "1900-01-01T00:00:00Z": datetime(1900, 1, 1, tzinfo=UTC),
    "2999-12-31T23:59:59.999999Z": datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # beyond pandas' nanoseconds
}


def test_datetimes_parse_to_the_instant_they_name_even_beside_impossible_ones(parse_path: str) -> None:
    texts = list(ISO_TEXTS)
    parsed = _parse_timestamp(pa.array(texts))
    assert parsed.values.to_pylist() == list(ISO_TEXTS.values())
    assert not any(parsed.unparsable.to_pylist())
    # An impossible date fails Arrow's cast of a whole column: every other value still parses.
    impossible = ["2021-02-30T00:00:00Z", "2021-06-01T25:00:00Z", "2021-13-01T00:00:00Z"]
    mixed = _parse_timestamp(pa.array([impossible[0], *texts, *impossible[1:], None]))
    assert mixed.values.to_pylist() == [None, *ISO_TEXTS.values(), None, None, None]
    assert mixed.unparsable.to_pylist() == [True] + [False] * len(texts) + [True, True, False]


def random_iso_text(rng: random.Random) -> str:
    """Shaped like ISO-8601, with fields from valid to impossible (month 13, 25 o'clock, +24:00)."""
    field = lambda low, high: str(rng.randint(low, high)).zfill(2)  # noqa: E731
    text = f"{str(rng.randint(1, 9999)).zfill(4)}-{field(0, 13)}-{field(0, 32)}{rng.choice('Tt ')}{field(0, 25)}:{field(0, 61)}"
    if rng.random() < 0.8:
        text += ":" + field(0, 61)
        if rng.random() < 0.5:
            text += rng.choice(".,") + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 9)))
    return text + rng.choice(["Z", "z", "+00:00", "-05:00", "+0530", "+05", "-23:59", "+24:00", "-0000", "+14:00"])


def instant_by_python(text: str) -> datetime | None:
    """The oracle: Python's own ISO parser, after the same spelling fixes (comma, space, Z, +HH)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.upper().replace(",", ".").replace(" ", "T"))
    text = re.sub(r"Z$", "+00:00", text)
    text = re.sub(r"([+-]\d{2}):?(\d{2})?$", lambda m: f"{m.group(1)}:{m.group(2) or '00'}", text)
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def test_datetimes_parse_like_pythons_own_iso_parser(parse_path: str) -> None:
    rng = random.Random(20261122)
    texts = [random_iso_text(rng) for _ in range(5_000)]
    parsed = _parse_timestamp(pa.array(texts)).values.to_pylist()
    disagreements = [(t, p, instant_by_python(t)) for t, p in zip(texts, parsed) if p != instant_by_python(t)]
    assert disagreements == []
    assert 0.3 < sum(p is not None for p in parsed) / len(texts) < 0.9  # both kinds were exercised


def test_the_canonical_shape_is_found_byte_by_byte_as_a_pattern_finds_it() -> None:
    """The shortcut for `YYYY-MM-DDTHH:MM:SSZ` (compared a row at a time and 1,024 rows at a
    time) against the regular expression it stands for, on texts one byte away from it."""
    rng = random.Random(7)
    template = "2021-03-31T23:30:00Z"
    texts: list[str | None] = []
    for _ in range(3_000):
        chars = list(template)
        for _ in range(rng.choice([0, 0, 1, 2])):
            chars[rng.randrange(len(chars))] = rng.choice("0123456789/:;-TtZz é٣")
        texts.append(rng.choice([None, "".join(chars)[:-1], "".join(chars) + "0"]) if rng.random() < 0.1 else "".join(chars))
    shape = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
    expected = [t is not None and shape.fullmatch(t) is not None for t in texts]
    for end in (3_000, 1_500, 7):  # over 1,024 candidates and under
        assert _canonical_instants(pa.array(texts[:end], pa.string())).tolist() == expected[:end]
    assert 0.3 < sum(expected) / len(expected) < 0.9


def random_integer_text(rng: random.Random) -> str | None:
    """Mostly bare digits, as files hold them; else signed, padded, too long, not digits at all."""
    digits = "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 2, 5, 10, 18, 19, 30])))
    if rng.random() < 0.85:
        return digits
    return rng.choice([None, f"+{digits}", f"-{digits}", f"+-{digits}", f"{digits}x", "x", "1.5", "1e3", "٣", f"{digits}+", "--1", "+"])


def integer_by_python(text: str | None) -> int | None:
    """The oracle: an integer's text is an optional sign and ASCII digits; more than 18 digits
    (no int64 holds them) reads as the first id out of range."""
    if text is None or not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    return int(text) if len(text.lstrip("+-")) <= 18 else ID_MAX + 1


def test_integers_parse_like_python_reads_them(parse_path: str) -> None:
    rng = random.Random(20261202)
    for _ in range(20):  # blocks of only bare digits, and blocks with a few of everything else
        texts = [random_integer_text(rng) for _ in range(rng.choice([1, 50, 2_000]))]
        parsed = _parse_integer(pa.array(texts, pa.string()))
        assert parsed.values.to_pylist() == [integer_by_python(t) for t in texts]
        assert parsed.unparsable.to_pylist() == [t is not None and integer_by_python(t) is None for t in texts]


def test_row_rules_run_without_a_database_and_foreign_keys_are_added_under_the_lock(engine: sa.Engine) -> None:
    seed(engine, departments=2)
    rows = [employee(1), employee(2, department_id=9), {**employee(3), "name": "", "department_id": 8}, employee(1)]
    checked = check_rows(EMPLOYEES, block_from_mappings(EMPLOYEES, rows))
    # Only the blank name breaks a rule of its own; the unknown departments and the repeated id
    # need the database and earlier rows, so they are judged later, under the lock.
    assert list(checked.reasons) == [2] and [r.split(":")[0] for r in checked.reasons[2]] == ["name"]
    outcome = apply_batch(engine, EMPLOYEES, block_from_mappings(EMPLOYEES, rows), request_id="rules")
    reasons = {r.line: r.reasons for r in outcome.rejected}
    assert reasons[2] == ["department_id: no such id in departments (got 9)"]
    assert [r.split(":")[0] for r in reasons[3]] == ["name", "department_id"]  # dictionary order, both kept
    assert reasons[4] == ["id: duplicate of an earlier row in this request (got 1)"]
    assert outcome.counts.inserted == 1 and table_count(engine, "hired_employees") == 1


def test_settling_a_checked_block_leaves_it_as_it_was() -> None:
    """A checked block's reasons are settled into rejected rows without being changed, so the
    same block settled again (a batch retried) gets the same rows and reasons."""
    rows = [employee(1), {**employee(2), "name": "", "department_id": 8}, employee(3, department_id=9), employee(1)]
    checked = check_rows(EMPLOYEES, block_from_mappings(EMPLOYEES, rows))
    before = {row: list(reasons) for row, reasons in checked.reasons.items()}
    settled = [RowValidator(EMPLOYEES, {"department_id": [1], "job_id": [1]}, source_kind="request").settle(checked) for _ in range(2)]
    assert checked.reasons == before == {1: ["name: missing"]}
    first, again = ([(r.line, r.reasons) for r in s.rejected] for s in settled)
    assert first == again == [
        (2, ["name: missing", "department_id: no such id in departments (got 8)"]),
        (3, ["department_id: no such id in departments (got 9)"]),
        (4, ["id: duplicate of an earlier row in this request (got 1)"]),
    ]
    assert settled[0].valid.column("id").to_pylist() == settled[1].valid.column("id").to_pylist() == [1]


def test_a_batch_looks_up_only_the_foreign_keys_its_rows_name(engine: sa.Engine) -> None:
    seed(engine, departments=5, jobs=400)
    rows = [
        employee(1, department_id=2),
        employee(2, department_id=9),
        {**employee(3), "job_id": 300},
        {**employee(4), "department_id": "x"},
        employee(5, department_id=2**31),  # beyond any id: looked up nowhere (PostgreSQL refuses to compare it)
    ]
    checked = check_rows(EMPLOYEES, block_from_mappings(EMPLOYEES, rows))
    with engine.connect() as conn:
        everything = known_keys(conn, EMPLOYEES)
        named = known_keys(conn, EMPLOYEES, among=checked.typed)
    assert sorted(everything["department_id"]) == [1, 2, 3, 4, 5] and len(everything["job_id"]) == 400
    # Department 9 does not exist and "x" names none; job 300 does, beside job 1 of the others.
    assert sorted(named["department_id"]) == [1, 2] and sorted(named["job_id"]) == [1, 300]
    outcome = apply_batch(engine, EMPLOYEES, block_from_mappings(EMPLOYEES, rows), request_id="lookup")
    rejected = {r.line: r.reasons for r in outcome.rejected}
    assert rejected[2] == ["department_id: no such id in departments (got 9)"]
    assert rejected[4] == ["department_id: expected an integer (got string 'x')"]
    assert sorted(rejected) == [2, 4, 5] and all(r.startswith("department_id: ") for r in rejected[5])
    assert outcome.counts.inserted == 2 and table_count(engine, "hired_employees") == 2


# --- SQLite: writers queue instead of polling ---------------------------------------------------

WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    import sqlalchemy as sa
    from gdx_pipeline.core.warehouse import create_warehouse_engine, write_transaction

    engine = create_warehouse_engine(sys.argv[1])

    @sa.event.listens_for(engine, "connect")
    def no_busy_wait(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA busy_timeout = 0")  # a writer that is not queued fails at once

    for n in range(int(sys.argv[3])):
        with write_transaction(engine) as conn:
            conn.exec_driver_sql("INSERT INTO departments (id, department) VALUES (?, ?)", (int(sys.argv[2]) + n, "x"))
            conn.exec_driver_sql("SELECT count(*) FROM departments").scalar_one()
    """
)


def test_sqlite_writers_of_several_threads_and_processes_take_turns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.sqlite'}"
    engine = create_warehouse_engine(url)
    create_schema(engine)

    @sa.event.listens_for(engine, "connect")
    def no_busy_wait(dbapi_connection, _record):  # noqa: ANN001
        dbapi_connection.execute("PRAGMA busy_timeout = 0")

    engine.dispose()
    # Held open throughout, so no connection ever has to rebuild the WAL index (which briefly
    # locks the database and, with the busy timeout at zero, would fail a writer at random).
    keeper = sqlite3.connect(tmp_path / "queue.sqlite")
    keeper.execute("SELECT count(*) FROM departments").fetchone()
    per_writer = 40
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, url, str(100_000 * (p + 1)), str(per_writer)], stderr=subprocess.PIPE, text=True
        )
        for p in range(2)
    ]
    errors: list[BaseException] = []

    def write_from_thread(first: int) -> None:
        try:
            for n in range(per_writer):
                with write_transaction(engine) as conn:
                    conn.exec_driver_sql("INSERT INTO departments (id, department) VALUES (?, ?)", (first + n, "x"))
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=write_from_thread, args=(1 + t * 1_000,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    assert errors == []
    assert table_count(engine, "departments") == per_writer * (len(threads) + len(processes))
    engine.dispose()
    keeper.close()


def test_sqlite_commits_are_checkpointed_into_the_database_file_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "checkpointed.sqlite"
    engine = create_warehouse_engine(f"sqlite:///{path}")
    create_schema(engine)
    keeper = sqlite3.connect(path)  # open throughout: closing the last connection would checkpoint too
    for n in range(1, 201):
        with write_transaction(engine) as conn:
            conn.exec_driver_sql("INSERT INTO departments (id, department) VALUES (?, ?)", (n, f"D{n}"))

    def rows_in_the_database_file() -> int:  # immutable: the file alone, as if the WAL were lost
        file_only = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return file_only.execute("SELECT count(*) FROM departments").fetchone()[0]
        except sqlite3.OperationalError:  # not even the table is in the file yet
            return 0
        finally:
            file_only.close()

    deadline = time.monotonic() + 30
    while rows_in_the_database_file() < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows_in_the_database_file() == 200  # no writer checkpointed: SQLite's own is set far above this
    keeper.close()
    engine.dispose()


def test_sqlite_readers_neither_wait_for_writers_nor_make_them_wait(tmp_path: Path) -> None:
    engine = create_warehouse_engine(f"sqlite:///{tmp_path / 'readers.sqlite'}")
    create_schema(engine)
    seed(engine)

    @sa.event.listens_for(engine, "connect")
    def no_busy_wait(dbapi_connection, _record):  # noqa: ANN001
        dbapi_connection.execute("PRAGMA busy_timeout = 0")  # any wait for a lock fails at once

    engine.dispose()
    with engine.connect() as reader:  # a long read, say the dashboard's, holds its transaction open
        assert reader.execute(sa.text("SELECT count(*) FROM departments")).scalar_one() == 3
        with write_transaction(engine) as writer:
            writer.exec_driver_sql("INSERT INTO departments (id, department) VALUES (4, 'Legal')")
            with engine.connect() as second_reader:  # and a read while the write is under way
                assert second_reader.execute(sa.text("SELECT count(*) FROM departments")).scalar_one() == 3
        assert reader.execute(sa.text("SELECT count(*) FROM departments")).scalar_one() == 3  # its snapshot
    assert table_count(engine, "departments") == 4
    engine.dispose()


# --- PostgreSQL: batches side by side, never beside a file or a restore -------------------------


def waiting_advisory_locks(engine: sa.Engine, application_name: str) -> int:
    """Advisory locks this test's connections wait for (other tests share the server)."""
    query = sa.text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = :name"
    )
    with engine.connect() as conn:
        return conn.execute(query, {"name": application_name}).scalar_one()


def apply_in_thread(engine: sa.Engine, rows: list[dict], request_id: str) -> tuple[threading.Thread, list]:
    results: list = []

    def run() -> None:
        try:
            results.append(apply_batch(engine, EMPLOYEES, block_from_mappings(EMPLOYEES, rows), request_id=request_id))
        except BaseException as error:  # noqa: BLE001  (the test reads it)
            results.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


@pytest.mark.postgres
def test_batches_share_the_table_lock_but_wait_for_a_files(postgres_url: str) -> None:
    application_name = f"gdx-test-{uuid.uuid4().hex[:12]}"
    engine = create_warehouse_engine(
        make_url(postgres_url).update_query_dict({"application_name": application_name}).render_as_string(hide_password=False)
    )
    create_schema(engine)
    seed(engine)
    holder = engine.connect()
    try:
        with holder.begin():
            lock_table_for_writes(holder, EMPLOYEES, shared=True)  # another batch in flight
            thread, results = apply_in_thread(engine, [employee(1)], "beside-a-batch")
            thread.join(timeout=60)
            assert not thread.is_alive() and results[0].counts.inserted == 1
        with holder.begin():
            lock_table_for_writes(holder, EMPLOYEES)  # a file or a restore
            thread, results = apply_in_thread(engine, [employee(2)], "after-a-file")
            deadline = time.monotonic() + 30
            while waiting_advisory_locks(engine, application_name) == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert waiting_advisory_locks(engine, application_name) == 1 and results == []  # the batch waits for the file
        thread.join(timeout=60)
        assert results[0].counts.inserted == 1
    finally:
        holder.close()
        engine.dispose()


@pytest.mark.postgres
def test_concurrent_batches_over_the_same_ids_in_opposite_orders_never_deadlock(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_warehouse_engine(postgres_url)
    create_schema(engine)
    seed(engine)
    ids = list(range(1, 301))
    batches = [[employee(i, name=f"writer {w}") for i in (ids if w % 2 else ids[::-1])] for w in range(8)]
    # Every batch's first write starts at the same moment, so they all meet over the same ids.
    together, met = threading.Barrier(len(batches), timeout=60), set()

    @sa.event.listens_for(engine, "before_cursor_execute")
    def write_together(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.startswith("WITH inserted AS") and threading.get_ident() not in met:
            met.add(threading.get_ident())
            together.wait()

    with caplog.at_level(logging.WARNING, logger="gdx_pipeline.core.batches"):
        started = [apply_in_thread(engine, rows, f"writer-{w}") for w, rows in enumerate(batches)]
        for thread, _ in started:
            thread.join(timeout=120)
    outcomes = [results[0] for _, results in started]
    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    retried = [r.message for r in caplog.records if "trying again" in r.message]
    # Key order leaves no deadlock to retry, and a batch that meets a new id another is inserting
    # waits for that commit, then reads the row and updates it: nothing is tried again.
    assert retried == []
    assert sum(o.counts.inserted for o in outcomes) == len(ids)
    assert sum(o.counts.inserted + o.counts.updated + o.counts.unchanged for o in outcomes) == len(ids) * len(batches)
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT DISTINCT name FROM hired_employees")).scalars().all()
    assert table_count(engine, "hired_employees") == len(ids) and len(names) == 1  # the last writer's rows, whole
    engine.dispose()


@pytest.mark.postgres
def test_a_department_deleted_under_a_batch_sends_it_round_again_and_its_row_to_the_reject_log(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_warehouse_engine(postgres_url)
    create_schema(engine)
    seed(engine, departments=2)
    other = create_warehouse_engine(postgres_url)
    deleted: list[bool] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def delete_department_before_the_upsert(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if not deleted and "INSERT INTO hired_employees AS target" in statement:
            deleted.append(True)  # the batch already checked its keys; now department 2 goes away
            with other.begin() as side:
                side.exec_driver_sql("DELETE FROM departments WHERE id = 2")

    with caplog.at_level(logging.WARNING, logger="gdx_pipeline.core.batches"):
        outcome = apply_batch(
            engine, EMPLOYEES, block_from_mappings(EMPLOYEES, [employee(1), employee(2, department_id=2)]), request_id="race"
        )
    assert deleted == [True]
    assert any("ForeignKeyViolation on attempt 1" in r.message for r in caplog.records)
    assert outcome.counts.inserted == 1
    assert [(r.line, r.reasons) for r in outcome.rejected] == [(2, ["department_id: no such id in departments (got 2)"])]
    assert table_count(engine, "hired_employees") == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM rejected_rows WHERE request_id = 'race'")).scalar_one() == 1
    engine.dispose()
    other.dispose()


def test_a_batch_that_is_not_a_conflict_is_not_retried(engine: sa.Engine) -> None:
    seed(engine)
    with write_transaction(engine) as conn:
        conn.exec_driver_sql("DROP TABLE ingestion_ledger")
    with pytest.raises(sa.exc.DBAPIError):
        apply_batch(engine, EMPLOYEES, block_from_mappings(EMPLOYEES, [employee(1)]), request_id="broken")
    assert table_count(engine, "hired_employees") == 0  # nothing of the batch committed


def test_timestamps_written_by_batches_read_back_in_utc(engine: sa.Engine) -> None:
    seed(engine)
    rows = [{**employee(1), "datetime": "2021-06-01T09:00:00-03:00"}, {**employee(2), "datetime": "2021-06-01 12:00:00.5Z"}]
    apply_batch(engine, EMPLOYEES, block_from_mappings(EMPLOYEES, rows), request_id="tz")
    with engine.connect() as conn:
        table = data_tables["hired_employees"]
        stored = conn.execute(sa.select(table.c.datetime).order_by(table.c.id)).scalars().all()
    as_utc = [value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC) for value in stored]
    assert as_utc == [datetime(2021, 6, 1, 12, tzinfo=UTC), datetime(2021, 6, 1, 12, 0, 0, 500_000, tzinfo=UTC)]
