"""What the API does with each kind of bad input, on SQLite and PostgreSQL: a value of the wrong
JSON type, a name holding an invisible or control character, an id too long for any integer, a
huge value, a repeated id, a lone surrogate, a method a path does not serve, a restore without
a body. Rows are judged against the row schema the API publishes, as an independent oracle."""

from __future__ import annotations

import json
import random

import pytest
import sqlalchemy as sa

from gdx_pipeline.api.models import TABLE_MODELS, class_name
from gdx_pipeline.core.batches import apply_batch, block_from_mappings
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import data_tables, rejected_rows
from gdx_pipeline.dictionary import ID_MAX, NAME_CHARACTERS_RULE, TABLES, table_spec
from gdx_pipeline_tests.api.app_client import app_engine, assert_json_error, count_rows, seed_departments_and_jobs
from gdx_pipeline_tests.api.row_schema import as_judged, only_rules_no_schema_states, rows_breaking

CSV = {"Content-Type": "text/csv"}
JSON = {"Content-Type": "application/json"}


def published_row_schema(table: str) -> dict:
    """The row schema as the app publishes it (app.py adds these definitions to /openapi.json)."""
    models = TABLE_MODELS[table]
    return models.rows_in.model_json_schema(ref_template="#/components/schemas/{model}")["$defs"][class_name(models.spec, "RowIn")]


def rows_breaking_the_schema(table: str, rows: list) -> set[int]:
    return rows_breaking(published_row_schema(table), rows)


def reasons_by_index(response) -> dict[int, list[str]]:  # noqa: ANN001
    assert response.status_code == 200, response.text
    return {r["index"]: r["reasons"] for r in response.json()["rejected"]}


# --- JSON types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"id": 1, "department": ["Sales"]}, """department: expected a string (got array ["Sales"])"""),
        ({"id": 1, "department": {"x": 1}}, """department: expected a string (got object {"x": 1})"""),
        ({"id": 1, "department": True}, "department: expected a string (got boolean true)"),
        ({"id": 1, "department": 12.5}, "department: expected a string (got number 12.5)"),
        ({"id": 1, "department": 12}, "department: expected a string (got number 12)"),
        ({"id": True, "department": "Sales"}, "id: expected an integer (got boolean true)"),
        ({"id": 1.5, "department": "Sales"}, "id: expected an integer (got number 1.5)"),
        ({"id": "7", "department": "Sales"}, "id: expected an integer (got string '7')"),
        ({"id": [7], "department": "Sales"}, "id: expected an integer (got array [7])"),
        ({"id": None, "department": "Sales"}, "id: missing"),
        ({"id": 1, "department": None}, "department: missing"),
        ({"id": 10**19, "department": "Sales"}, f"id: must be <= {ID_MAX} (got 10000000000000000000)"),
    ],
)
def test_a_value_of_the_wrong_json_type_rejects_its_row_and_names_the_type(client, row: dict, reason: str) -> None:  # noqa: ANN001
    response = client.post(
        "/tables/departments/rows", json={"rows": [row, {"id": 2, "department": "Support"}]}, headers={"X-Request-ID": "types"}
    )
    assert reasons_by_index(response) == {0: [reason]}
    assert response.json()["inserted"] == 1
    assert [r["department"] for r in client.get("/tables/departments/rows").json()["rows"]] == ["Support"]
    with app_engine(client).connect() as conn:
        (logged,) = conn.execute(sa.select(rejected_rows.c.raw_line, rejected_rows.c.reasons, rejected_rows.c.request_id)).all()
    assert (json.loads(logged.raw_line), logged.reasons, logged.request_id) == (row, [reason], "types")
    assert rows_breaking_the_schema("departments", [row]) == {0}  # the published schema refuses it too


def test_json_integers_are_integers_as_json_schema_counts_them(client) -> None:  # noqa: ANN001
    body = b'{"rows": [{"id": 1e3, "department": "A"}, {"id": 7.0, "department": "B"}, {"id": 2E1, "department": "C"}]}'
    assert reasons_by_index(client.post("/tables/departments/rows", content=body, headers=JSON)) == {}
    assert [r["id"] for r in client.get("/tables/departments/rows").json()["rows"]] == [7, 20, 1000]


def test_a_datetime_must_be_a_string_in_the_published_pattern(client) -> None:  # noqa: ANN001
    seed_departments_and_jobs(client, 1, 1)
    rows = [
        {"id": 1, "name": "A", "datetime": 1627401728, "department_id": 1, "job_id": 1},
        {"id": 2, "name": "B", "datetime": "2021-07-27T16:02Z", "department_id": 1, "job_id": 1},  # no seconds: ISO, not RFC 3339
        {"id": 3, "name": "C", "datetime": "2021-07-27", "department_id": 1, "job_id": 1},
        {"id": 4, "name": "D", "datetime": "٢٠٢١-07-27T16:02:08Z", "department_id": 1, "job_id": 1},  # Arabic-Indic digits
    ]
    assert reasons_by_index(client.post("/tables/hired_employees/rows", json={"rows": rows})) == {
        0: ["datetime: expected a string (got number 1627401728)"],
        2: ["datetime: not an ISO-8601 datetime with a Z or an offset (got '2021-07-27')"],
        3: ["datetime: not an ISO-8601 datetime with a Z or an offset (got '٢٠٢١-07-27T16:02:08Z')"],
    }
    assert rows_breaking_the_schema("hired_employees", rows) == {0, 2, 3}


def random_value(rng: random.Random, kind: str) -> object:
    """A JSON value for a column of `kind`: right and wrong types, edge values, odd text."""
    text = "".join(
        rng.choice("ab Z9-'\t\n\u0085\u00a0\u200b\u200c\u200d\u2028\u202e\ufeff\ue000漢🙂") for _ in range(rng.choice([0, 1, 3, 12]))
    )
    wrong = [None, True, False, 0, -1, 1.5, 2.0, 1e3, "7", " 7 ", text, [], [1], {"a": 1}, 10**20, -(10**20)]
    right = {
        "integer": [rng.randint(1, 50), ID_MAX, ID_MAX + 1, rng.randint(1, 50)],
        "text": [text, text.strip() or "x", "Name " + text, "\u200d", " Sales ", "x" * 255, "x" * 256],
        "timestamp": [
            "2021-07-27T16:02:08Z",
            "2021-07-27 16:02:08.5+01:00",
            "1899-12-31T23:59:59Z",
            "2021-02-30T00:00:00Z",
            "2021-07-27T16:02Z",
            "yesterday",
        ],
    }[kind]
    return rng.choice(right * 3 + wrong)


VALID = {
    "integer": lambda rng: rng.randint(1, 30),
    "text": lambda rng: f"Name {rng.randint(1, 99)}",
    "timestamp": lambda rng: "2021-07-27T16:02:08Z",
}


def random_rows(rng: random.Random, table: str, count: int) -> list[dict]:
    """Valid rows with none, one, a few or all of their values replaced by random ones."""
    spec = table_spec(table)
    rows = []
    for _ in range(count):
        row = {column: VALID[spec.column_kind(column)](rng) for column in spec.columns}
        for column in rng.sample(spec.columns, rng.choice([0, 1, 1, 2, len(spec.columns)])):
            row[column] = random_value(rng, spec.column_kind(column))
        if rng.random() < 0.05:
            del row[rng.choice(spec.columns)]
        if rng.random() < 0.03:
            row["extra"] = 1
        rows.append(row)
    return rows


@pytest.mark.parametrize("table", list(TABLES))
def test_random_rows_are_judged_as_the_published_row_schema_says(engine: sa.Engine, table: str) -> None:
    """Every row the published schema refuses is rejected; a row it admits lands, unless it
    breaks a rule no schema can state; and what lands is what was sent, trimmed."""
    apply_batch(
        engine,
        table_spec("departments"),
        block_from_mappings(table_spec("departments"), [{"id": i, "department": f"D{i}"} for i in range(1, 31)]),
        request_id="seed",
    )
    apply_batch(
        engine,
        table_spec("jobs"),
        block_from_mappings(table_spec("jobs"), [{"id": i, "job": f"J{i}"} for i in range(1, 31)]),
        request_id="seed",
    )
    spec = table_spec(table)
    rng = random.Random(f"{table}-20261209")
    judged = {"refused": 0, "admitted": 0}
    for batch in range(10):
        rows = random_rows(rng, table, 100)
        breaking = rows_breaking_the_schema(table, rows)
        outcome = apply_batch(engine, spec, block_from_mappings(spec, rows), request_id=f"random-{batch}")
        rejected = {r.line - 1: r.reasons for r in outcome.rejected}
        assert breaking <= set(rejected), [rows[i] for i in sorted(breaking - set(rejected))]
        for index in set(rejected) - breaking:
            assert only_rules_no_schema_states(rejected[index]), (rows[index], rejected[index])
        judged["refused"] += len(breaking)
        judged["admitted"] += len(rows) - len(breaking)
        landed = [as_judged(rows[i]) for i in range(len(rows)) if i not in rejected]
        table_ = data_tables[table]
        with engine.connect() as conn:
            stored = {row.id: row for row in conn.execute(sa.select(table_).where(table_.c.id.in_([r["id"] for r in landed])))}
        for row in landed:
            for column in spec.columns:
                if spec.column_kind(column) != "timestamp":
                    assert getattr(stored[row["id"]], column) == row[column]
    assert judged["refused"] > 300 and judged["admitted"] > 100  # both sides of the schema were exercised


# --- names: one character rule on every path ---------------------------------------------------


REFUSED_NAMES = {
    "NEL U+0085 inside": "Sa\u0085les",
    "LINE SEPARATOR U+2028 inside": "Sa\u2028les",
    "PARAGRAPH SEPARATOR U+2029 inside": "Sa\u2029les",
    "ZERO WIDTH SPACE U+200B only": "\u200b",
    "RIGHT-TO-LEFT OVERRIDE U+202E": "\u202eselaS",
    "BOM U+FEFF inside": "Sa\ufeffles",
    "SOFT HYPHEN U+00AD": "Sa\u00adles",
    "LANGUAGE TAG U+E0001": "Sales\U000e0001",
    "tab inside": "Sa\tles",
    "ZERO WIDTH JOINER only": "\u200d",
    "joiners only": "\u200c\u200d",
}
ALLOWED_NAMES = {
    "Persian with ZWNJ": "محمدی\u200cنژاد",
    "emoji ZWJ sequence": "Team 👩\u200d💻",
    "private use": "Sales \ue000",
    "unassigned in Unicode 14": "Sales \U0003134b",
    "trailing U+2028 is trimmed whitespace": "Sales\u2028",
}


@pytest.mark.parametrize("name", list(REFUSED_NAMES.values()), ids=list(REFUSED_NAMES))
def test_a_name_with_an_invisible_or_control_character_gets_the_same_reason_on_every_path(client, folders, name: str) -> None:  # noqa: ANN001
    reason = f"department: {NAME_CHARACTERS_RULE} (got {name!r})"
    by_json = reasons_by_index(client.post("/tables/departments/rows", json={"rows": [{"id": 1, "department": name}]}))
    by_csv = reasons_by_index(client.post("/tables/departments/rows", content=f'1,"{name}"\n'.encode(), headers=CSV))
    (folders.landing / "departments.csv").write_text(f'1,"{name}"\n', encoding="utf-8")
    engine = app_engine(client)
    ingest_landing(engine, folders)
    with engine.connect() as conn:
        by_file = conn.execute(sa.select(rejected_rows.c.reasons).where(rejected_rows.c.source == "departments.csv")).scalar_one()
    assert by_json == by_csv == {0: [reason]} and by_file == [reason]
    assert count_rows(client, "departments") == 0
    assert rows_breaking_the_schema("departments", [{"id": 1, "department": name}]) == {0}


@pytest.mark.parametrize("name", list(ALLOWED_NAMES.values()), ids=list(ALLOWED_NAMES))
def test_names_other_scripts_need_are_kept(client, name: str) -> None:  # noqa: ANN001
    assert reasons_by_index(client.post("/tables/departments/rows", json={"rows": [{"id": 1, "department": name}]})) == {}
    assert client.get("/tables/departments/rows").json()["rows"] == [{"id": 1, "department": name.strip()}]
    assert rows_breaking_the_schema("departments", [{"id": 1, "department": name}]) == set()


# --- what a reason quotes -------------------------------------------------------------------------


def test_an_id_of_19_or_more_digits_is_quoted_as_sent(client) -> None:  # noqa: ANN001
    digits = "9" * 19, "1" + "0" * 29, "+" + "4" * 40
    response = client.post("/tables/jobs/rows", content="".join(f"{d},Job\n" for d in digits).encode(), headers=CSV)
    assert reasons_by_index(response) == {i: [f"id: must be <= {ID_MAX} (got {d})"] for i, d in enumerate(digits)}
    response = client.post("/tables/jobs/rows", content=b'{"rows": [{"id": 99999999999999999999999, "job": "Job"}]}', headers=JSON)
    assert reasons_by_index(response) == {0: [f"id: must be <= {ID_MAX} (got 99999999999999999999999)"]}


def test_a_reason_quotes_an_excerpt_of_a_huge_value_never_all_of_it(client, folders) -> None:  # noqa: ANN001
    huge = "x" * 300_000  # three of them stay under the API's 2 MiB body cap
    excerpt = f"{'x' * 80!r}… (300,000 characters)"
    by_json = reasons_by_index(
        client.post(
            "/tables/departments/rows", json={"rows": [{"id": 1, "department": huge}, {"id": 2, "department": [huge]}, {"id": 3, huge: 1}]}
        )
    )
    assert by_json[0] == [f"department: must be 1 to 255 characters long (got {excerpt})"]
    assert by_json[1] == [f"""department: expected a string (got array ["{'x' * 78}… (300,004 characters))"""]
    assert by_json[2] == [f"row: unknown field(s) {excerpt}; expected id, department"]
    by_csv = reasons_by_index(client.post("/tables/departments/rows", content=f"1,{huge}\n{huge},A\n".encode(), headers=CSV))
    assert by_csv == {0: [f"department: must be 1 to 255 characters long (got {excerpt})"], 1: [f"id: not an integer (got {excerpt})"]}
    (folders.landing / "departments.csv").write_text(f"1,{huge}\n{'7' * 1_000_000},A\n", encoding="utf-8")  # a file has no cap
    engine = app_engine(client)
    ingest_landing(engine, folders)
    with engine.connect() as conn:
        by_file = [
            r
            for (r,) in conn.execute(
                sa.select(rejected_rows.c.reasons).where(rejected_rows.c.source == "departments.csv").order_by(rejected_rows.c.line_number)
            )
        ]
    assert by_file == [
        [f"department: must be 1 to 255 characters long (got {excerpt})"],
        [f"id: must be <= {ID_MAX} (got {'7' * 80}… (1,000,000 characters))"],
    ]
    with engine.connect() as conn:
        longest = conn.execute(sa.select(sa.func.max(sa.func.length(sa.cast(rejected_rows.c.reasons, sa.Text))))).scalar_one()
    assert longest < 400


def test_a_repeated_id_in_a_request_says_request(client) -> None:  # noqa: ANN001
    reason = "id: duplicate of an earlier row in this request (got 1)"
    assert reasons_by_index(client.post("/tables/jobs/rows", json={"rows": [{"id": 1, "job": "A"}, {"id": 1, "job": "B"}]})) == {
        1: [reason]
    }
    assert reasons_by_index(client.post("/tables/jobs/rows", content=b"1,A\n1,B\n", headers=CSV)) == {1: [reason]}


# --- malformed bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (rb'{"rows": [{"id": 1, "department": "\ud800"}]}', r"\ud800 at line 1 column 36 is a lone surrogate"),
        (rb'{"rows": [{"id": 1, "department": "a\udc00b"}]}', r"\udc00 at line 1 column 37 is a lone surrogate"),
        (b'{"rows": [\n{"id": 1, "department": "\\uDBFF\\u0041"}]}', r"\uDBFF at line 2 column 26 is a lone surrogate"),
        (rb'{"rows": [{"id": 1, "\ud83d": "x"}]}', r"\ud83d at line 1 column 22 is a lone surrogate"),
        (b'{"rows": [{"id": 1, "department": "\xed\xa0\x80"}]}', "the body is not UTF-8 (undecodable byte at offset 35)"),
    ],
)
def test_a_lone_surrogate_is_one_clear_422(client, body: bytes, expected: str) -> None:  # noqa: ANN001
    message = assert_json_error(client.post("/tables/departments/rows", content=body, headers=JSON), 422)["message"]
    assert message.startswith("malformed JSON: ") and expected in message
    assert count_rows(client, "departments") == 0


def test_escapes_that_are_not_lone_surrogates_are_text(client) -> None:  # noqa: ANN001
    body = rb'{"rows": [{"id": 1, "department": "\\ud800 literally"}, {"id": 2, "department": "\ud83d\ude00 ok"}]}'
    assert reasons_by_index(client.post("/tables/departments/rows", content=body, headers=JSON)) == {}
    assert [r["department"] for r in client.get("/tables/departments/rows").json()["rows"]] == ["\\ud800 literally", "😀 ok"]


def test_a_body_of_only_a_bom_has_no_rows(client) -> None:  # noqa: ANN001
    assert "no rows" in assert_json_error(client.post("/tables/jobs/rows", content="\ufeff".encode(), headers=CSV), 422)["message"]


# --- methods and restores -------------------------------------------------------------------------


def test_405_lists_every_method_the_path_serves(client) -> None:  # noqa: ANN001
    documented = client.get("/openapi.json").json()["paths"]
    for template, operations in documented.items():
        path = template.replace("{table}", "jobs")
        methods = {m.upper() for m in operations}
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - methods:
            response = client.request(method, path)
            assert_json_error(response, 405)
            assert response.headers["Allow"] == ", ".join(sorted(methods)), (method, path)


def test_restore_without_a_body_means_latest(client) -> None:  # noqa: ANN001
    client.post("/tables/jobs/rows", json={"rows": [{"id": 1, "job": "Engineer"}]})
    taken = client.post("/tables/jobs/backups")
    assert taken.status_code == 201, taken.text
    client.post("/tables/jobs/rows", json={"rows": [{"id": 2, "job": "Later"}]})
    restored = client.post("/tables/jobs/restore")
    assert restored.status_code == 200, restored.text
    assert restored.json()["backup"] == taken.json()["file"] and count_rows(client, "jobs") == 1
