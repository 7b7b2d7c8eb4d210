"""The hiring metrics over HTTP: JSON by default, CSV for `Accept: text/csv`.

Computed by `core.metrics` in the database on each request, the same functions the metric
assets use, so the API and the Dagster reports always agree.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gdx_pipeline.api.dependencies import Engine
from gdx_pipeline.api.models import DepartmentsAboveMean, ErrorResponse, QuarterlyHires
from gdx_pipeline.core import metrics

router = APIRouter(prefix="/metrics", tags=["metrics"])

CSV_MEDIA_TYPE = "text/csv"
JSON_MEDIA_TYPE = "application/json"

Year = Annotated[
    int,
    Query(
        ge=metrics.FIRST_YEAR,
        le=metrics.LAST_YEAR,
        description=f"Hiring year (UTC), {metrics.FIRST_YEAR} to {metrics.LAST_YEAR}.",
        examples=[2021],
    ),
]

def _prefers_csv(accept: str) -> bool:
    """Content negotiation between JSON (the default) and CSV, by the client's q-values."""
    weights = {JSON_MEDIA_TYPE: 0.0, CSV_MEDIA_TYPE: 0.0}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media.lower() in weights:
            weights[media.lower()] = max(weights[media.lower()], quality)
    return weights[CSV_MEDIA_TYPE] > weights[JSON_MEDIA_TYPE]


def _csv_response(frame: pd.DataFrame, name: str) -> Response:
    return Response(
        frame.to_csv(index=False),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'inline; filename="{name}.csv"'},
    )


def _responses(csv_example: str) -> dict:
    return {
        200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}, "example": csv_example}}},
        422: {"model": ErrorResponse, "description": "The year is missing or out of range."},
        503: {"model": ErrorResponse, "description": "The warehouse database is unavailable."},
    }


@router.get(
    "/quarterly-hires",
    response_model=QuarterlyHires,
    summary="Hires per department and job in each quarter of a year",
    responses=_responses(",".join(metrics.QUARTERLY_COLUMNS) + "\nStaff,Manager,0,1,0,2\n"),
)
async def quarterly_hires(request: Request, engine: Engine, year: Year):  # noqa: ANN201
    frame = await run_in_threadpool(metrics.quarterly_hires, engine, year)
    if _prefers_csv(request.headers.get("accept", "")):
        return _csv_response(frame, f"quarterly_hires_{year}")
    return QuarterlyHires(year=year, rows=frame.to_dict("records"))


@router.get(
    "/departments-above-mean",
    response_model=DepartmentsAboveMean,
    summary="Departments that hired more than the mean in a year",
    responses=_responses(",".join(metrics.ABOVE_MEAN_COLUMNS) + "\n7,Staff,45\n"),
)
async def departments_above_mean(request: Request, engine: Engine, year: Year):  # noqa: ANN201
    frame, mean = await run_in_threadpool(metrics.departments_above_mean, engine, year)
    if _prefers_csv(request.headers.get("accept", "")):
        return _csv_response(frame, f"departments_above_mean_hires_{year}")
    return DepartmentsAboveMean(year=year, mean_hired=mean, rows=frame.to_dict("records"))
