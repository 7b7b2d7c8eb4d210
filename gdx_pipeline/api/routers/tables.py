"""Rows in and out of the dictionary tables, and the reject log.

One pair of routes per table, generated from the dictionary so each documents its own columns.
A batch goes through `core.validation.check_rows` and `core.batches.write_checked_batch`,
exactly like a landing file's rows: the same validation, upsert and reject log, in one
transaction.
"""

from __future__ import annotations

import re
import threading
import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from gdx_pipeline.api.auth import WriteAccess
from gdx_pipeline.api.dependencies import Dagster, Engine, Settings
from gdx_pipeline.api.errors import InvalidBody, PayloadTooLarge, UnsupportedMediaType, describe_validation_errors
from gdx_pipeline.api.models import (
    TABLE_MODELS,
    BatchResult,
    ErrorResponse,
    RejectedInBatch,
    RejectedRowRecord,
    RejectedRowsPage,
    TableModels,
    TableName,
    column_json_schema,
)
from gdx_pipeline.api.settings import MAX_ROWS_PER_REQUEST
from gdx_pipeline.core.batches import BatchOutcome, block_from_csv_text, block_from_mappings, check_block, write_checked_batch
from gdx_pipeline.core.csv_source import RecordBlock
from gdx_pipeline.core.utc import as_utc
from gdx_pipeline.core.warehouse import data_tables, rejected_rows
from gdx_pipeline.dictionary import ID_MAX, character_class, excerpt, table_spec

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# A JSON string escape, read left to right so `\\ud800` (an escaped backslash, then text) is not
# taken for one: a surrogate pair, a lone surrogate (group 1), or any other escape.
_JSON_ESCAPE = re.compile(r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(u[dD][89a-fA-F][0-9a-fA-F]{2})|.)", re.DOTALL)

router = APIRouter()

# One request at a time parses and validates its body in a process: that work holds the
# interpreter lock anyway, and four batches interleaving it each ran slower (thread switches,
# cold caches). Writes, which mostly wait on the database, still overlap. Measured with
# benchmarks/bench_api.py: benchmarks/results/api.md.
PARSING = threading.Lock()


AfterId = Annotated[int, Query(ge=0, le=ID_MAX, description="Return rows with an id greater than this (keyset pagination).")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"At most this many rows (1 to {MAX_PAGE_SIZE:,}).")]


def request_id_for(request: Request) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one."""
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    return supplied if _CLIENT_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex


def json_block(models: TableModels, body: bytes, max_rows: int) -> RecordBlock:
    try:
        batch = models.rows_in.model_validate_json(body)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise InvalidBody(malformed_json_message(body, problems[0]["ctx"]["error"])) from None
        raise InvalidBody(
            f'expected {{"rows": [ {{...}}, ... ]}} with 1 to {max_rows:,} objects: {describe_validation_errors(problems)}'
        ) from None
    if len(batch.rows) > max_rows:
        raise PayloadTooLarge(f"{len(batch.rows):,} rows in one request; send at most {max_rows:,} per request")
    return block_from_mappings(models.spec, batch.rows)


def malformed_json_message(body: bytes, parser_message: str) -> str:
    """Why a body is not JSON, in the client's terms where the parser's are obscure: bytes that
    are not UTF-8, or a lone surrogate escape (the parser says "unexpected end of hex escape")."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"malformed JSON: the body is not UTF-8 (undecodable byte at offset {error.start})"
    for escape in _JSON_ESCAPE.finditer(text):
        if escape.group(1):
            at = escape.start()
            line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
            return (
                f"malformed JSON: \\{escape.group(1)} at line {line} column {column} is a lone surrogate, not a character; "
                "a \\ud800-\\udbff escape must be followed by a \\udc00-\\udfff one (send text as valid Unicode)"
            )
    return f"malformed JSON: {parser_message}"


def csv_block(models: TableModels, body: bytes, max_rows: int) -> RecordBlock:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidBody(f"malformed CSV: the body is not UTF-8 (undecodable byte at offset {error.start})") from None
    if "\x00" in text:
        raise InvalidBody("malformed CSV: the body contains a NUL byte; send CSV text")
    if not text.removeprefix("\ufeff").strip():  # the reader drops a leading BOM
        raise InvalidBody(f"no rows: send 1 to {max_rows:,} headerless CSV lines ({', '.join(models.spec.columns)})")
    block = block_from_csv_text(models.spec, text)
    if block.rows_read > max_rows:
        raise PayloadTooLarge(f"{block.rows_read:,} CSV lines in one request; send at most {max_rows:,} per request")
    return block


BLOCK_READERS = {"application/json": json_block, "text/csv": csv_block}


def _csv_body_pattern() -> str:
    """The CSV body's JSON Schema pattern: exactly the texts `csv_block` does not refuse whole.
    No NUL, and something besides whitespace (as `str.strip` counts it, all of it below U+3001)
    once a leading BOM is dropped. Quotes are free: a quote never closed rejects its record, as
    in a landing file, not the body."""
    space = character_class(point for point in range(0x3001) if chr(point).isspace())
    visible = f"[^\\x00{space}]"
    # A visible character, which a leading BOM does not count as.
    return f"^(?:\ufeff[{space}]*{visible}|[{space}]+{visible}|[^\\x00{space}\ufeff])[^\\x00]*$"


CSV_BODY_PATTERN = _csv_body_pattern()


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _csv_example(models: TableModels) -> str:
    values = [str(column_json_schema(models.spec, c)["examples"][0]) for c in models.spec.columns]
    return ",".join(values) + "\n"


_ERRORS = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token (only when the server has GDX_API_TOKEN)."},
    413: {"model": ErrorResponse, "description": "More rows than allowed in one request, or a body over the byte limit."},
    415: {"model": ErrorResponse, "description": "Neither application/json nor text/csv."},
    422: {"model": ErrorResponse, "description": "Malformed JSON or CSV, or no rows at all."},
    503: {"model": ErrorResponse, "description": "The warehouse database is unavailable."},
}
_READ_ERRORS = {422: {"model": ErrorResponse, "description": "Invalid query parameters."}, 503: _ERRORS[503]}


def add_table_routes(router: APIRouter, models: TableModels) -> None:
    spec = models.spec

    async def post_rows(
        request: Request,
        response: Response,
        engine: Engine,
        settings: Settings,
        dagster: Dagster,
        _auth: None = WriteAccess,
    ) -> BatchResult:
        media_type = media_type_of(request)
        if media_type not in BLOCK_READERS:
            raise UnsupportedMediaType(
                f"send application/json or text/csv, not {excerpt(media_type) if media_type else 'a body without Content-Type'}"
            )
        body = await request.body()
        request_id = request_id_for(request)

        def parse_and_apply() -> BatchOutcome:  # off the event loop: parsing is CPU work too
            with PARSING:
                checked = check_block(spec, BLOCK_READERS[media_type](models, body, settings.max_rows))
            return write_checked_batch(engine, spec, checked, request_id=request_id)

        outcome = await run_in_threadpool(parse_and_apply)
        dagster.report_batch(spec.name, outcome, request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        return BatchResult(
            request_id=request_id,
            rows_received=outcome.rows_read,
            inserted=outcome.counts.inserted,
            updated=outcome.counts.updated,
            unchanged=outcome.counts.unchanged,
            rejected=[RejectedInBatch(index=r.line - 1, reasons=r.reasons) for r in outcome.rejected],
        )

    def get_rows(engine: Engine, after_id: AfterId = 0, limit: Limit = DEFAULT_PAGE_SIZE):
        table = data_tables[spec.name]
        key = table.c[spec.primary_key]
        with engine.connect() as conn:
            found = conn.execute(sa.select(table).where(key > after_id).order_by(key).limit(limit)).mappings().all()
        timestamps = [c for c in spec.columns if spec.column_kind(c) == "timestamp"]
        rows = [models.row_out.model_validate({**row, **{c: as_utc(row[c]) for c in timestamps}}) for row in found]
        return models.page(rows=rows, next_after_id=found[-1][spec.primary_key] if len(found) == limit else None)

    router.add_api_route(
        f"/tables/{spec.name}/rows",
        post_rows,
        methods=["POST"],
        response_model=BatchResult,
        tags=[spec.name],
        name=f"post_{spec.name}_rows",
        operation_id=f"post_{spec.name}_rows",
        summary=f"Add or update 1 to {MAX_ROWS_PER_REQUEST:,} rows of {spec.name}",
        description=(
            f"{spec.description}\n\nJSON `{{\"rows\": [...]}}` or `text/csv` with headerless lines "
            f"`{','.join(spec.columns)}`. Valid rows are upserted by `{spec.primary_key}`; invalid rows go to the reject "
            "log (source `api`, with the request id) and come back with their 0-based `index` and reasons. "
            "The batch commits as a whole or not at all."
        ),
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{models.rows_in.__name__}"}},
                    "text/csv": {"schema": {"type": "string", "pattern": CSV_BODY_PATTERN}, "example": _csv_example(models)},
                },
            }
        },
    )
    router.add_api_route(
        f"/tables/{spec.name}/rows",
        get_rows,
        methods=["GET"],
        response_model=models.page,
        tags=[spec.name],
        name=f"get_{spec.name}_rows",
        operation_id=f"get_{spec.name}_rows",
        summary=f"Read {spec.name} in id order, a page at a time",
        responses=_READ_ERRORS,
    )


for _models in TABLE_MODELS.values():
    add_table_routes(router, _models)


@router.api_route("/tables/{table}/rows", methods=["GET", "POST"], include_in_schema=False)
def unknown_table_rows(table: str) -> None:
    table_spec(table)  # raises UnknownTableError, answered with 404 and the known tables


@router.get(
    "/rejected-rows",
    response_model=RejectedRowsPage,
    tags=["reject log"],
    summary="The reject log: rows that did not land, with why",
    responses=_READ_ERRORS,
)
def get_rejected_rows(
    engine: Engine,
    table: Annotated[TableName | None, Query(description="Only rows rejected for this table.")] = None,
    source: Annotated[str | None, Query(max_length=512, description="Only rows from this source: a file name, or 'api'.")] = None,
    after_id: AfterId = 0,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> RejectedRowsPage:
    log = rejected_rows
    query = sa.select(log).where(log.c.id > after_id).order_by(log.c.id).limit(limit)
    if table is not None:
        query = query.where(log.c.table_name == table)
    if source is not None:
        query = query.where(log.c.source == source)
    with engine.connect() as conn:
        found = conn.execute(query).mappings().all()
    rows = [
        RejectedRowRecord(
            id=row["id"],
            table=row["table_name"],
            source=row["source"],
            line_number=row["line_number"],
            raw_line=row["raw_line"],
            reasons=row["reasons"],
            run_id=row["run_id"],
            request_id=row["request_id"],
            rejected_at=as_utc(row["rejected_at"]),
        )
        for row in found
    ]
    return RejectedRowsPage(rows=rows, next_after_id=found[-1]["id"] if len(found) == limit else None)
