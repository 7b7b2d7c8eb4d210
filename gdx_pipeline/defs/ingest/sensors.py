"""The landing folder sensor: a run for files that appeared or changed since the last tick."""


import hashlib
import json
import time

import dagster as dg

from gdx_pipeline.core.csv_source import UnreadableFileError, table_for_file
from gdx_pipeline.core.ingestion import pending_files
from gdx_pipeline.defs.ingest.jobs import migrate_job
from gdx_pipeline.defs.resources import DataFolderResource

# A file modified this recently may still be being copied in; wait for the next tick.
LANDING_SETTLE_SECONDS = 5.0


def _fingerprint(size: int, mtime_ns: int) -> str:
    return f"{size}:{mtime_ns}"


@dg.sensor(
    job=migrate_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing folder and launches migrate_job for new or changed files; "
    "the cursor remembers each file's size and mtime, so an unchanged file is requested once.",
)
def landing_files_sensor(context: dg.SensorEvaluationContext, data_folder: DataFolderResource) -> dg.SensorResult | dg.SkipReason:
    folders = data_folder.folders()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    present: dict[str, str] = {}
    new: dict[str, str] = {}
    settling = []
    for path in pending_files(folders):
        stat = path.stat()
        fingerprint = _fingerprint(stat.st_size, stat.st_mtime_ns)
        if now - stat.st_mtime < LANDING_SETTLE_SECONDS:
            settling.append(path.name)
            if path.name in seen:
                present[path.name] = seen[path.name]
            continue
        present[path.name] = fingerprint
        if seen.get(path.name) != fingerprint:
            new[path.name] = fingerprint
    # Forget files that left landing, so the cursor stays small and a re-dropped file counts as new.
    cursor = json.dumps(present, sort_keys=True)
    if not new:
        return dg.SensorResult(
            skip_reason=f"no new files ({len(settling)} still being written)" if settling else "no new files", cursor=cursor
        )
    tables = set()
    for name in new:
        try:
            tables.add(table_for_file(folders.landing / name).name)
        except UnreadableFileError:
            pass  # landing_files quarantines it
    selection = [
        dg.AssetKey("landing_files"),
        *(dg.AssetKey(t) for t in sorted(tables)),
        dg.AssetKey("rejected_rows"),
        dg.AssetKey("quarantined_files"),
    ]
    # The run key names the content (size and mtime), not just the file name: a re-dropped file runs again.
    run_key = hashlib.sha256(json.dumps(sorted(new.items())).encode()).hexdigest()[:20]
    request = dg.RunRequest(
        run_key=run_key,
        asset_selection=selection,
        tags={"gdx/trigger": "landing_files_sensor", "gdx/files": ",".join(sorted(new))[:1000]},
    )
    context.log.info(f"requesting a run for {len(new)} file(s): {', '.join(sorted(new))}")
    return dg.SensorResult(run_requests=[request], cursor=cursor)
