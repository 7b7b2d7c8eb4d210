"""What the API serves and how: read once from the environment, with the pipeline's defaults.

The API's one reader of the environment. The warehouse, the data folder and the Dagster
instance come through the code location's own readers (`GDX_DATABASE_URL`, `GDX_DATA_DIR`,
`DAGSTER_HOME`), so both front doors always point at one warehouse and one instance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import dagster as dg

from gdx_pipeline.defs.resources import (
    DataFolderResource,
    SettingsError,
    WarehouseResource,
    dagster_home_from_environment,
    resources_from_environment,
)

MAX_ROWS_PER_REQUEST = 1_000
# 1,000 rows of the widest table (255-character names) fit several times over.
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
TOKEN_ENV = "GDX_API_TOKEN"
MAX_BODY_BYTES_ENV = "GDX_API_MAX_BODY_BYTES"
WORKERS_ENV = "WEB_CONCURRENCY"  # uvicorn's and gunicorn's name for it


@dataclass(frozen=True)
class ApiSettings:
    """`token` None means no authentication, which the server only allows on loopback;
    `dagster_home` None means an in-memory Dagster instance."""

    data_folder: DataFolderResource
    warehouse: WarehouseResource
    token: str | None = field(default=None, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_rows: int = MAX_ROWS_PER_REQUEST
    dagster_home: str | None = None

    @classmethod
    def for_warehouse(cls, database_url: str, data_dir: str, **options: object) -> ApiSettings:
        data = DataFolderResource(data_dir=data_dir)
        return cls(data_folder=data, warehouse=WarehouseResource(data=data, database_url=database_url), **options)

    @classmethod
    def from_environment(cls) -> ApiSettings:
        resources = resources_from_environment()
        return cls(
            data_folder=resources["data_folder"],
            warehouse=resources["warehouse"],
            token=os.environ.get(TOKEN_ENV) or None,
            max_body_bytes=_positive_int(MAX_BODY_BYTES_ENV, DEFAULT_MAX_BODY_BYTES),
            dagster_home=dagster_home_from_environment(),
        )

    def resources(self) -> dict[str, dg.ConfigurableResource]:
        """The resources the Dagster jobs run with when the API launches them."""
        return {"data_folder": self.data_folder, "warehouse": self.warehouse}


def configured_workers() -> int | None:
    """WEB_CONCURRENCY when it is a positive whole number, else None (`gdx-api` then picks)."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    return int(configured) if configured.isdigit() and int(configured) > 0 else None


def _positive_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number of bytes, got {text!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {value}")
    return value
