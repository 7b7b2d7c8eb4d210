"""Errors as JSON `{"error": code, "message": text}`; never a stack trace.

Errors a client can cause (the API's own `ApiError`s and the core's errors, in `ANSWERS`) carry a
message that says what was wrong, and are answered with the status `ANSWERS` gives them; the
framework's own errors are translated here too. Anything else is logged here with its traceback
and answered with a 500 that only names the request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from gdx_pipeline.core.backups import BackupNotFoundError
from gdx_pipeline.core.metrics import InvalidYearError
from gdx_pipeline.core.staged_writes import ConcurrentInsert
from gdx_pipeline.dictionary import UnknownTableError, excerpt

log = logging.getLogger("gdx_pipeline.api")

MAX_LISTED_PROBLEMS = 5


class ApiError(Exception):
    """An error of the HTTP layer itself; `ANSWERS` says how it is answered."""

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers


class BadRequest(ApiError):
    """The request's framing is broken (a Content-Length that is not a number)."""


class Unauthorized(ApiError):
    """A write without the server's bearer token, or with a wrong one."""

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class PayloadTooLarge(ApiError):
    """More rows, or more bytes, than one request may carry."""


class UnsupportedMediaType(ApiError):
    """A body that is neither JSON nor CSV."""


class InvalidBody(ApiError):
    """A body that is not well-formed JSON or CSV of the expected shape, or has no rows."""


class Conflict(ApiError):
    """A restore the code location refused; nothing changed."""


class JobFailed(ApiError):
    """A Dagster run the request launched failed; the message names the run."""


# Every error a request can cause, answered as (status, code): the one place an exception meets
# an HTTP status. The core's errors are answered as they are, with their own message.
ANSWERS: dict[type[Exception], tuple[int, str]] = {
    BadRequest: (400, "bad_request"),
    Unauthorized: (401, "unauthorized"),
    UnknownTableError: (404, "not_found"),
    BackupNotFoundError: (404, "not_found"),
    Conflict: (409, "conflict"),
    PayloadTooLarge: (413, "payload_too_large"),
    UnsupportedMediaType: (415, "unsupported_media_type"),
    InvalidBody: (422, "invalid_body"),
    InvalidYearError: (422, "invalid_request"),
    JobFailed: (500, "job_failed"),
    ConcurrentInsert: (503, "concurrent_write"),  # only after every retry of the batch met one
}


def answer(error: Exception) -> JSONResponse:
    """The JSON answer to an error of `ANSWERS` (the nearest class of it that is listed)."""
    status_code, code = next(ANSWERS[kind] for kind in type(error).__mro__ if kind in ANSWERS)
    return error_response(status_code, code, str(error), getattr(error, "headers", None))


def error_response(status_code: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status_code, headers=headers)


def describe_validation_errors(errors: list[dict]) -> str:
    """`query.limit: Input should be less than or equal to 1000; ...` (the input is not echoed;
    a location may name a key the client sent, so it is excerpted)."""
    parts = []
    for error in errors[:MAX_LISTED_PROBLEMS]:
        location = ".".join(excerpt(str(part), quoted=False) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    if len(errors) > MAX_LISTED_PROBLEMS:
        parts.append(f"and {len(errors) - MAX_LISTED_PROBLEMS} more")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def _answer(request: Request, error: Exception) -> JSONResponse:
        return answer(error)

    for kind in ANSWERS:
        app.add_exception_handler(kind, _answer)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", describe_validation_errors(list(error.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400:  # FastAPI could not decode a JSON body (not UTF-8, say): malformed, like bad JSON
            return error_response(422, "invalid_body", f"malformed JSON body: {error.detail}")
        phrase = HTTPStatus(error.status_code).phrase if error.status_code in HTTPStatus._value2member_map_ else "Error"
        message = (
            error.detail
            if isinstance(error.detail, str) and error.detail != phrase
            else _default_message(request, error.status_code, phrase)
        )
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return error_response(error.status_code, phrase.lower().replace(" ", "_"), message, headers)

    @app.exception_handler(sa.exc.OperationalError)
    async def _database_unavailable(request: Request, error: sa.exc.OperationalError) -> JSONResponse:
        log.error("database error on %s %s: %s", request.method, request.url.path, error.orig)
        return error_response(503, "database_unavailable", "the warehouse database is unavailable or busy; try again shortly")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server hit an unexpected error; it is logged on the server")


class AllowedMethods:
    """Which methods the app serves at a path, for a 405's `Allow`: Starlette names only the
    first route whose path matched, so `/tables/jobs/rows` (one route per method) said `POST`."""

    def __init__(self, routes: Iterable[BaseRoute]):
        self._routes = [(route.path_regex, route.methods) for route in routes if getattr(route, "methods", None)]

    def at(self, path: str) -> str:
        return ", ".join(sorted({method for regex, methods in self._routes if regex.match(path) for method in methods}))


def allowed_methods(request: Request) -> str:
    return request.app.state.allowed_methods.at(request.scope["path"])


def _default_message(request: Request, status_code: int, phrase: str) -> str:
    path = excerpt(request.url.path, quoted=False)
    if status_code == 404:
        return f"no endpoint at {path}; see /docs for the API"
    if status_code == 405:
        return f"{request.method} is not allowed on {path} (allowed: {allowed_methods(request)}); see /docs for the API"
    return phrase
