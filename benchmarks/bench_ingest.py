"""Ingestion benchmark: this pipeline against `psql \\copy` and pandas `to_sql`, side by side.

    .venv/bin/python benchmarks/bench_ingest.py --rows 1000000 10000000

For each size it generates Globant-format files (about 3 % dirty rows) once, then times, on
the same PostgreSQL server and each in a fresh database with the dictionary's DDL:

  pipeline   gdx_pipeline's ingest_landing: streaming, validation, reject log, ledger
  \\copy      psql \\copy of only the clean rows into the same constrained table (PK + FKs)
  to_sql     pandas read_csv + dropna + DataFrame.to_sql, what most public solutions do

Each contender runs in its own child process; peak RSS is that child's (plus psql's for \\copy).
Results go to stdout and, as a dated section, to the end of benchmarks/results/ingest.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_log import append_run, postgres_version  # noqa: E402
from benchmarks.scratch_databases import drop_database, fresh_database  # noqa: E402
from gdx_pipeline.core.warehouse import normalize_database_url  # noqa: E402

WORK = ROOT / "benchmarks" / ".work"


def run_child(code: str, *args: str) -> tuple[float, int]:
    """Run Python code in a child; return (seconds, peak RSS in bytes of that child)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"child failed with status {status}")
    return seconds, usage.ru_maxrss * 1024


PIPELINE = """
import sys, logging
from pathlib import Path
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_warehouse_engine
logging.basicConfig(level=logging.WARNING)
engine = create_warehouse_engine(sys.argv[1])
outcomes = ingest_landing(engine, DataFolders(Path(sys.argv[2])), run_id="bench")
print("pipeline:", [(o.file, o.status, o.counts.inserted, o.rows_rejected) for o in outcomes], file=sys.stderr)
"""

TO_SQL = """
import sys
import pandas as pd, sqlalchemy as sa
engine = sa.create_engine(sys.argv[1])
folder = sys.argv[2]
names = {"departments": ["id", "department"], "jobs": ["id", "job"],
         "hired_employees": ["id", "name", "datetime", "department_id", "job_id"]}
for table, columns in names.items():
    frame = pd.read_csv(f"{folder}/{table}.csv", header=None, names=columns, on_bad_lines="skip")
    if "datetime" in frame:
        frame["datetime"] = pd.to_datetime(frame["datetime"], utc=True, errors="coerce")
    for column in [c for c in columns if c == "id" or c.endswith("_id")]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna()
    if table == "hired_employees":  # to_sql would abort on the first unknown key
        with engine.connect() as conn:
            frame = frame[frame["department_id"].isin(pd.read_sql("SELECT id FROM departments", conn)["id"])]
    frame.to_sql(table, engine, if_exists="append", index=False, chunksize=10_000)
"""

GENERATE = """
import sys
from pathlib import Path
from gdx_pipeline.core.sample_data import generate_globant_files
summary = generate_globant_files(Path(sys.argv[1]), int(sys.argv[3]), dirty_share=0.03)
generate_globant_files(Path(sys.argv[2]), int(sys.argv[3]) - summary.dirty, dirty_share=0.0)
"""

PREPARE_COPY = """
import sys
from pathlib import Path
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_warehouse_engine
ingest_landing(create_warehouse_engine(sys.argv[1]), DataFolders(Path(sys.argv[2])))
"""


def landing_copy(source: Path, names: list[str]) -> Path:
    data = WORK / f"run_{uuid.uuid4().hex[:8]}"
    (data / "landing").mkdir(parents=True)
    for name in names:
        os.link(source / name, data / "landing" / name)
    return data


def bench_size(server_url: str, rows: int, skip_to_sql: bool) -> list[tuple[str, float, int]]:
    dirty = WORK / f"globant_{rows}"
    clean = WORK / f"globant_{rows}_clean"
    if not (clean / "hired_employees.csv").exists():
        # In a child: a forked child's peak RSS starts at its parent's, so the parent stays small.
        run_child(GENERATE, str(dirty), str(clean), str(rows))
    results = []

    url = fresh_database(server_url)
    data = landing_copy(dirty, ["departments.csv", "jobs.csv", "hired_employees.csv"])
    seconds, rss = run_child(PIPELINE, normalize_database_url(url), str(data))
    results.append(("pipeline (validate + reject log + load)", seconds, rss))
    drop_database(server_url, url)

    url = fresh_database(server_url)
    run_child(PREPARE_COPY, normalize_database_url(url), str(landing_copy(clean, ["departments.csv", "jobs.csv"])))
    psql_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    started = time.perf_counter()
    process = subprocess.Popen(["psql", psql_url, "-v", "ON_ERROR_STOP=1", "-q", "-c",
                                f"\\copy hired_employees FROM '{clean / 'hired_employees.csv'}' WITH (FORMAT csv)"])
    _, status, usage = os.wait4(process.pid, 0)
    assert status == 0, "psql \\copy failed"
    results.append(("psql \\copy, clean rows only, PK + FKs", time.perf_counter() - started, usage.ru_maxrss * 1024))
    drop_database(server_url, url)

    if not skip_to_sql:
        url = fresh_database(server_url)
        seconds, rss = run_child(TO_SQL, normalize_database_url(url), str(dirty))
        results.append(("pandas read_csv + dropna + to_sql", seconds, rss))
        drop_database(server_url, url)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--server-url", default=os.environ.get("GDX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--skip-to-sql-above", type=int, default=2_000_000, help="to_sql takes ~30 s per 1 M rows")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    lines = ["| rows | contender | seconds | rows/s | peak RSS MiB | time vs \\copy |", "|---:|---|---:|---:|---:|---:|"]
    for rows in args.rows:
        results = bench_size(normalize_database_url(args.server_url), rows, rows > args.skip_to_sql_above)
        copy_seconds = next(s for name, s, _ in results if name.startswith("psql"))
        for name, seconds, rss in results:
            lines.append(
                f"| {rows:,} | {name} | {seconds:.1f} | {rows / seconds:,.0f} | {rss / 2**20:,.0f} | {seconds / copy_seconds:.2f} |"
            )
        print("\n".join(lines), flush=True)
    append_run(
        "ingest", "rows " + ", ".join(f"{rows:,}" for rows in args.rows), "\n".join(lines), postgres=postgres_version(args.server_url)
    )


if __name__ == "__main__":
    main()
