"""Dagster resources: where the data folder is and which database is the warehouse.

Both come from environment variables with defaults that work on a fresh clone:
`GDX_DATA_DIR` (default `./data`) and `GDX_DATABASE_URL` (default: `gdx.sqlite` in the data
folder; any SQLAlchemy URL, PostgreSQL being the production target). This module and
`backups/resources.py` are where the code location reads the environment; `gdx` and `gdx-api`
read these variables (and `DAGSTER_HOME`) through the functions here, never on their own.
"""


from functools import cache
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine


class SettingsError(ValueError):
    """A configuration value a process cannot start with; the message names the variable and
    what it takes. The one settings error of the code location, `gdx` and `gdx-api`."""


class DataFolderResource(dg.ConfigurableResource):
    """The data folder: landing/, processed/, quarantine/, rejects/, backups/, reports/."""

    data_dir: str = "data"

    def folders(self) -> DataFolders:
        return DataFolders(Path(self.data_dir).resolve()).ensure()


class WarehouseResource(dg.ConfigurableResource):
    """The SQL warehouse. An empty `database_url` means a SQLite file in the data folder."""

    data: DataFolderResource
    database_url: str = ""

    def url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data.folders().root / 'gdx.sqlite'}"

    def engine(self) -> sa.Engine:
        return warehouse_engine(self.url())


@cache
def warehouse_engine(url: str) -> sa.Engine:
    """One engine per URL and process, with the schema created on first use."""
    engine = create_warehouse_engine(url)
    create_schema(engine)
    return engine


def resources_from_environment() -> dict[str, dg.ConfigurableResource]:
    """The data folder and the warehouse, as every entry point configures them."""
    data = DataFolderResource(data_dir=dg.EnvVar("GDX_DATA_DIR").get_value("data") or "data")
    return {
        "data_folder": data,
        "warehouse": WarehouseResource(data=data, database_url=dg.EnvVar("GDX_DATABASE_URL").get_value("") or ""),
    }


def dagster_home_from_environment() -> str | None:
    """DAGSTER_HOME, the folder of the Dagster instance (Dagster reads it too), or None when unset."""
    return dg.EnvVar("DAGSTER_HOME").get_value() or None
