"""Whether a warehouse holds the shipped sample (`data/sample/`, what `scripts/demo` loads).

The demo drops the sample's files under names of their own (`hired_employees_sample.csv`, ...),
so the ingestion ledger tells its loads from others by name and sha256 together: the sample's
`departments.csv` is byte for byte the challenge's, so the hash alone would take real loads for
the sample. The demo refuses to mix its sample into other data, and `gdx summary` says when a
warehouse holds the sample, alone or mixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from gdx_pipeline.core.csv_source import file_sha256
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import pending_files
from gdx_pipeline.core.warehouse import ingestion_ledger


@dataclass(frozen=True)
class SampleLoads:
    """What the ledger (and landing) hold of the sample and beside it."""

    sample_files: list[str]  # ledger sources that are the sample's files
    other_loads: int  # ledger entries that are not: other files, API batches, restores
    other_waiting: list[str]  # files in landing that are not the sample's

    @property
    def mixed(self) -> bool:
        return bool(self.sample_files) and self.other_loads > 0


def drop_name(sample_file: Path) -> str:
    """The name a sample file gets in landing: `jobs.csv` -> `jobs_sample.csv` (same table prefix)."""
    return f"{sample_file.stem}_sample{sample_file.suffix}"


def sample_drops(sample_folder: Path) -> dict[str, str]:
    """Landing name -> sha256 of each shipped sample file."""
    files = sorted(sample_folder.glob("*.csv")) if sample_folder.is_dir() else []
    return {drop_name(path): file_sha256(path) for path in files}


def sample_loads(engine: sa.Engine, folders: DataFolders, sample_folder: Path) -> SampleLoads:
    drops = sample_drops(sample_folder)
    ledger = ingestion_ledger.c
    is_sample = sa.or_(sa.false(), *(sa.and_(ledger.source == name, ledger.sha256 == sha) for name, sha in drops.items()))
    with engine.connect() as conn:
        sample_files = conn.execute(sa.select(ledger.source).where(is_sample).distinct().order_by(ledger.source)).scalars().all()
        other = conn.execute(sa.select(sa.func.count()).select_from(ingestion_ledger).where(sa.not_(is_sample))).scalar_one()
    waiting = [path.name for path in pending_files(folders) if drops.get(path.name) != file_sha256(path)]
    return SampleLoads(sample_files=list(sample_files), other_loads=other, other_waiting=waiting)
