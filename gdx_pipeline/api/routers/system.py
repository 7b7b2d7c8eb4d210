"""Is the service up: the database answers, and which version is running."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gdx_pipeline.api.models import Health

router = APIRouter(tags=["service"])


def package_version() -> str:
    try:
        return version("gdx_pipeline")
    except PackageNotFoundError:
        return "unknown"


@router.get(
    "/health",
    response_model=Health,
    summary="Database reachable, and the version",
    responses={503: {"model": Health, "description": "The warehouse database cannot be reached."}},
)
def health(request: Request):  # noqa: ANN201
    engine: sa.Engine = request.app.state.engine
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as error:
        body = Health(
            status="unavailable", database=f"unreachable ({type(error).__name__})", dialect=engine.dialect.name, version=package_version()
        )
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok", database="reachable", dialect=engine.dialect.name, version=package_version())
