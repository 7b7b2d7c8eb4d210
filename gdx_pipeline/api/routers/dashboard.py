"""The stakeholders' HTML dashboard, rendered on request from the warehouse as it is now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from gdx_pipeline.api.dependencies import Engine
from gdx_pipeline.api.models import ErrorResponse
from gdx_pipeline.core import dashboard, metrics

router = APIRouter(tags=["metrics"])
ERROR_SCHEMA = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}


def dashboard_html(engine, year: int | None) -> str:  # noqa: ANN001
    """The dashboard of every year, open on `year`, by default the latest year with hires (this year when none)."""
    return dashboard.render_dashboard(dashboard.collect_dashboard_data(engine, year))


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    summary="The hiring dashboard of every year (self-contained HTML)",
    responses={  # explicit JSON content: with an HTML route, `model=` would document the errors as HTML
        422: {"description": "The year is out of range.", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
        503: {"description": "The warehouse database is unavailable.", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
    },
)
async def get_dashboard(
    engine: Engine,
    year: Annotated[
        int | None,
        Query(
            ge=metrics.FIRST_YEAR,
            le=metrics.LAST_YEAR,
            description="The hiring year (UTC) the page opens on; every year with hires is one click away. Default: the latest.",
        ),
    ] = None,
) -> HTMLResponse:
    return HTMLResponse(await run_in_threadpool(dashboard_html, engine, year))
