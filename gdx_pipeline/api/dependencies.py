"""What a route needs from the application it runs in, as FastAPI dependencies.

`async def` although they never wait: FastAPI runs a plain `def` dependency in its thread
pool, a thread hop per dependency per request for a mere attribute read."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request

from gdx_pipeline.api.orchestration import Orchestration
from gdx_pipeline.api.settings import ApiSettings


async def engine_of(request: Request) -> sa.Engine:
    return request.app.state.engine


async def settings_of(request: Request) -> ApiSettings:
    return request.app.state.settings


async def orchestration_of(request: Request) -> Orchestration:
    return request.app.state.orchestration


Engine = Annotated[sa.Engine, Depends(engine_of)]
Settings = Annotated[ApiSettings, Depends(settings_of)]
Dagster = Annotated[Orchestration, Depends(orchestration_of)]
