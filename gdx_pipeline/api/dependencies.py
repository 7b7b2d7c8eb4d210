"""What a route needs from the application it runs in, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request

from gdx_pipeline.api.orchestration import Orchestration
from gdx_pipeline.api.settings import ApiSettings


def engine_of(request: Request) -> sa.Engine:
    return request.app.state.engine


def settings_of(request: Request) -> ApiSettings:
    return request.app.state.settings


def orchestration_of(request: Request) -> Orchestration:
    return request.app.state.orchestration


Engine = Annotated[sa.Engine, Depends(engine_of)]
Settings = Annotated[ApiSettings, Depends(settings_of)]
Dagster = Annotated[Orchestration, Depends(orchestration_of)]
