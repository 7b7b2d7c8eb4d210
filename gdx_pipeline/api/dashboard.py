"""The stakeholders' HTML dashboard, rendered on request from the warehouse as it is now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from gdx_pipeline.api.dependencies import Engine
from gdx_pipeline.api.models import ErrorResponse
from gdx_pipeline.core import metrics

router = APIRouter(tags=["metrics"])
ERROR_SCHEMA = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}


def dashboard_html(engine, year: int | None) -> str:  # noqa: ANN001
    """The dashboard of `year`, by default the latest year with hires (this year when none)."""
    from gdx_pipeline.core import dashboard  # matplotlib comes with it: load it when first asked

    if year is None:
        year = metrics.latest_hiring_year(engine) or datetime.now(UTC).year
    return dashboard.render_dashboard(dashboard.collect_dashboard_data(engine, year))


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    summary="The hiring dashboard (self-contained HTML)",
    responses={  # explicit JSON content: with an HTML route, `model=` would document the errors as HTML
        422: {"description": "The year is out of range.", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
        503: {"description": "The warehouse database is unavailable.", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
    },
)
async def get_dashboard(
    engine: Engine,
    year: Annotated[
        int | None,
        Query(ge=metrics.FIRST_YEAR, le=metrics.LAST_YEAR, description="Hiring year (UTC); default: the latest year with hires."),
    ] = None,
) -> HTMLResponse:
    return HTMLResponse(await run_in_threadpool(dashboard_html, engine, year))
