"""Errors as JSON `{"error": code, "message": text}`; never a stack trace.

Errors a client can cause are `ApiError`s with a message that says what was wrong. Anything
else is logged here with its traceback and answered with a 500 that only names the request.
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

from gdx_pipeline.core.metrics import InvalidYearError
from gdx_pipeline.dictionary import UnknownTableError, excerpt

log = logging.getLogger("gdx_pipeline.api")

MAX_LISTED_PROBLEMS = 5


class ApiError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers


class NotFound(ApiError):
    status_code, error = 404, "not_found"


class Unauthorized(ApiError):
    status_code, error = 401, "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class PayloadTooLarge(ApiError):
    status_code, error = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status_code, error = 415, "unsupported_media_type"


class InvalidBody(ApiError):
    status_code, error = 422, "invalid_body"


class Conflict(ApiError):
    status_code, error = 409, "conflict"


class ServiceUnavailable(ApiError):
    status_code, error = 503, "unavailable"


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
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status_code, error.error, error.message, error.headers)

    @app.exception_handler(UnknownTableError)
    async def _unknown_table(request: Request, error: UnknownTableError) -> JSONResponse:
        return error_response(404, "not_found", str(error))

    @app.exception_handler(InvalidYearError)
    async def _invalid_year(request: Request, error: InvalidYearError) -> JSONResponse:
        return error_response(422, "invalid_request", str(error))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", describe_validation_errors(list(error.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400:  # FastAPI could not decode a JSON body (not UTF-8, say): malformed, like bad JSON
            return error_response(422, "invalid_body", f"malformed JSON body: {error.detail}")
        phrase = HTTPStatus(error.status_code).phrase if error.status_code in HTTPStatus._value2member_map_ else "Error"
        message = error.detail if isinstance(error.detail, str) and error.detail != phrase else _default_message(request, error.status_code, phrase)
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
