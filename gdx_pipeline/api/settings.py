"""What the API serves and how: read once from the environment, with the pipeline's defaults.

The warehouse and the data folder come from the same resources the Dagster code location
uses (`GDX_DATABASE_URL`, `GDX_DATA_DIR`), so both front doors always point at one warehouse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg

from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource, resources_from_environment

MAX_ROWS_PER_REQUEST = 1_000
# 1,000 rows of the widest table (255-character names) fit several times over.
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
TOKEN_ENV = "GDX_API_TOKEN"
MAX_BODY_BYTES_ENV = "GDX_API_MAX_BODY_BYTES"


class SettingsError(ValueError):
    """A configuration value the server cannot start with."""


@dataclass(frozen=True)
class ApiSettings:
    """`token` None means no authentication, which the server only allows on loopback."""

    data_folder: DataFolderResource
    warehouse: WarehouseResource
    token: str | None = field(default=None, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_rows: int = MAX_ROWS_PER_REQUEST

    @classmethod
    def for_warehouse(cls, database_url: str, data_dir: str, **options: object) -> ApiSettings:
        data = DataFolderResource(data_dir=data_dir)
        return cls(data_folder=data, warehouse=WarehouseResource(data=data, database_url=database_url), **options)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ApiSettings:
        resources = resources_from_environment()
        return cls(
            data_folder=resources["data_folder"],
            warehouse=resources["warehouse"],
            token=environ.get(TOKEN_ENV) or None,
            max_body_bytes=_positive_int(environ, MAX_BODY_BYTES_ENV, DEFAULT_MAX_BODY_BYTES),
        )

    def resources(self) -> dict[str, dg.ConfigurableResource]:
        """The resources the Dagster jobs run with when the API launches them."""
        return {"data_folder": self.data_folder, "warehouse": self.warehouse}


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number of bytes, got {text!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {value}")
    return value
