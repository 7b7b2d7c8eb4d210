"""The FastAPI application: the pipeline's second front door, on the same core.

`create_app()` assembles the routers of `routers/` with the plumbing beside this module; it
reads its settings from the environment (see `settings.py`) unless given them, as tests do with
their own Dagster instance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import dagster as dg
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gdx_pipeline.api.errors import AllowedMethods, install_error_handlers
from gdx_pipeline.api.limits import BodySizeLimit
from gdx_pipeline.api.models import TABLE_MODELS
from gdx_pipeline.api.orchestration import Orchestration, instance_at
from gdx_pipeline.api.routers import backups, dashboard, metrics, system, tables
from gdx_pipeline.api.settings import ApiSettings
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine

DESCRIPTION = """
New rows for the warehouse in batches of 1 to 1,000, the reject log, hiring metrics and table
backups. Every row is checked against the same data dictionary as the CSV pipeline; invalid
rows are kept in the reject log with their reasons. Every write shows up in Dagster as a
materialization of the table it touched; backups and restores run as Dagster jobs.

Endpoints that write need `Authorization: Bearer <token>` when the server runs with
`GDX_API_TOKEN`. Errors are JSON: `{"error": code, "message": text}`.
"""


def create_app(settings: ApiSettings | None = None, *, instance: dg.DagsterInstance | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_environment()
    engine = create_warehouse_engine(settings.warehouse.url())
    create_schema(engine)
    owns_instance = instance is None
    orchestration = Orchestration(instance or instance_at(settings.dagster_home), settings.resources())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        orchestration.flush()
        engine.dispose()
        if owns_instance:
            orchestration.instance.dispose()

    app = FastAPI(title="gdx_pipeline API", version=system.package_version(), description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.orchestration = orchestration
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    routers = (tables.router, backups.router, metrics.router, dashboard.router, system.router)
    for router in routers:
        app.include_router(router)
    app.state.allowed_methods = AllowedMethods([*app.router.routes, *(route for router in routers for route in router.routes)])
    app.openapi = _openapi_with_row_models(app)  # type: ignore[method-assign]
    return app


def _openapi_with_row_models(app: FastAPI):  # noqa: ANN202
    """The row request bodies are parsed by hand (JSON or CSV); add their models to the schema.
    A server without GDX_API_TOKEN asks no credentials, so its schema demands none."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for models in TABLE_MODELS.values():
                model_schema = models.rows_in.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[models.rows_in.__name__] = model_schema
            if app.state.settings.token is None:
                schema["components"].pop("securitySchemes", None)
                for operations in schema["paths"].values():
                    for operation in operations.values():
                        operation.pop("security", None)
                        operation.get("responses", {}).pop("401", None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
