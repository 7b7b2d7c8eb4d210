"""Backup and restore benchmark: `hired_employees` on PostgreSQL, against bare fastavro and COPY.

    .venv/bin/python benchmarks/bench_backup_restore.py --rows 1000000 10000000 --repeat 1

For each size it generates Globant-format files (about 3 % dirty rows) once, loads them into a
fresh database with the pipeline, then times side by side, each contender in its own child
process (best of `--repeat`, contenders interleaved so machine noise hits all alike):

  backup       backup_table(): one consistent snapshot, COPY out, fastavro (deflate, 1 MiB
               blocks) in a helper process, temporary name + rename, sha256, manifest
  bare write   fastavro alone writing the same rows, same codec and blocks, from an Arrow file
               on local disk (the dicts fastavro needs are built in the timing, as they must be)
  restore      restore_table(): sha256, schema and every row checked against the dictionary
               (spooled), foreign-key checks, one transaction: TRUNCATE, COPY, keys rebuilt, ledger
  bare read    fastavro alone reading every record of the same backup file
  bare COPY    psycopg COPY of the same rows (CSV on local disk) into an empty hired_employees
               with the dictionary's DDL (primary key, indexes, foreign keys); and, for scale,
               into a bare table without any

Targets (issue 3): backup <= 1.5x bare write, restore <= 2x (bare read + bare COPY), peak RSS
< 1 GiB. Seconds are measured inside each child (imports excluded); peak RSS is the child's,
plus the Avro helper process's for the backup. Results go to stdout and, as a dated section, to
the end of benchmarks/results/backup_restore.md.
"""

from __future__ import annotations

import argparse
import json
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
from gdx_pipeline.core.warehouse import create_warehouse_engine, normalize_database_url  # noqa: E402

WORK = ROOT / "benchmarks" / ".work"

# Every child prints one JSON line: {"seconds": ..., "rss": ..., "helper_rss": ...}.
REPORT = """
import json, resource, sys, time
def report(seconds):
    print(json.dumps({"seconds": seconds, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "helper_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""

GENERATE = """
import sys
from pathlib import Path
from gdx_pipeline.core.sample_data import generate_globant_files
generate_globant_files(Path(sys.argv[1]), int(sys.argv[2]), dirty_share=0.03)
"""

LOAD = """
import logging, sys
from pathlib import Path
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_warehouse_engine
logging.basicConfig(level=logging.WARNING)
ingest_landing(create_warehouse_engine(sys.argv[1]), DataFolders(Path(sys.argv[2])), run_id="bench")
"""

# The same rows as the backup reads them, kept on local disk for the bare contenders.
PREPARE = """
import sys
import pyarrow as pa, pyarrow.csv as pacsv, pyarrow.ipc as ipc
from gdx_pipeline.core.backups import BACKUP_TABLES
from gdx_pipeline.core.backups import SnapshotReader, arrow_schema
from gdx_pipeline.core.warehouse import create_warehouse_engine
table = BACKUP_TABLES["hired_employees"]
with SnapshotReader(create_warehouse_engine(sys.argv[1])) as snapshot, ipc.new_file(sys.argv[2], arrow_schema(table)) as sink, \\
        open(sys.argv[3], "wb") as csv:
    for batch in snapshot.chunks(table):
        sink.write_batch(batch)
        columns = [c.cast(pa.timestamp("us")) if pa.types.is_timestamp(c.type) else c for c in batch.columns]
        naive = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
        pacsv.write_csv(naive, csv, pacsv.WriteOptions(include_header=False))
"""

BACKUP = REPORT + """
from pathlib import Path
from gdx_pipeline.core.backups import backup_table
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.warehouse import create_warehouse_engine
engine = create_warehouse_engine(sys.argv[1])
started = time.perf_counter()
result = backup_table(engine, DataFolders(Path(sys.argv[2])), "hired_employees")
report(time.perf_counter() - started)
Path(sys.argv[3]).write_text(result.file)
"""

BARE_WRITE = REPORT + """
import fastavro, pyarrow as pa
from gdx_pipeline.core.backups import BACKUP_TABLES
from gdx_pipeline.core.backups.avro_writer import SYNC_INTERVAL_BYTES, records_of
schema = BACKUP_TABLES["hired_employees"].avro_schema
started = time.perf_counter()
reader = pa.ipc.open_file(pa.memory_map(sys.argv[1]))
records = (r for i in range(reader.num_record_batches) for r in records_of(reader.get_batch(i), ["datetime"]))
with open(sys.argv[2], "wb") as handle:
    fastavro.writer(handle, schema, records, codec="deflate", sync_interval=SYNC_INTERVAL_BYTES)
report(time.perf_counter() - started)
"""

RESTORE = REPORT + """
from pathlib import Path
from gdx_pipeline.core.backups import restore_table
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.warehouse import create_warehouse_engine
engine = create_warehouse_engine(sys.argv[1])
started = time.perf_counter()
restore_table(engine, DataFolders(Path(sys.argv[2])), "hired_employees", sys.argv[3])
report(time.perf_counter() - started)
"""

BARE_READ = REPORT + """
import fastavro
started = time.perf_counter()
with open(sys.argv[1], "rb") as handle:
    for record in fastavro.reader(handle):
        pass
report(time.perf_counter() - started)
"""

BARE_COPY = (
    REPORT
    + """
import psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(f"TRUNCATE {sys.argv[3]}")
    conn.execute("SET TIME ZONE 'UTC'")
    started = time.perf_counter()
    statement = f"COPY {sys.argv[3]} (id, name, datetime, department_id, job_id) FROM STDIN (FORMAT csv)"
    with conn.cursor() as cursor, cursor.copy(statement) as copy, open(sys.argv[2], "rb") as handle:
        while block := handle.read(1024 * 1024):
            copy.write(block)
    report(time.perf_counter() - started)
"""
)


def run_child(code: str, *args: str) -> dict[str, float]:
    process = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def psycopg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def bench_size(server_url: str, employees: int, repeat: int) -> tuple[int, dict[str, dict[str, float]]]:
    generated = WORK / f"backup_globant_{employees}"
    if not (generated / "hired_employees.csv").exists():
        run_child(GENERATE, str(generated), str(employees))
    run = WORK / f"backup_run_{uuid.uuid4().hex[:8]}"
    (run / "landing").mkdir(parents=True)
    for name in ("departments.csv", "jobs.csv", "hired_employees.csv"):
        os.link(generated / name, run / "landing" / name)
    source = fresh_database(server_url, "gdx_backups_bench")
    target = fresh_database(server_url, "gdx_backups_bench")  # the empty tables the bare COPY loads into
    try:
        started = time.perf_counter()
        run_child(LOAD, normalize_database_url(source), str(run))
        print(f"{employees:,} employees loaded in {time.perf_counter() - started:.0f} s", flush=True)
        (run / "landing").mkdir(exist_ok=True)
        for name in ("departments.csv", "jobs.csv"):
            os.link(generated / name, run / "landing" / name.replace(".csv", "_target.csv"))
        run_child(LOAD, normalize_database_url(target), str(run))
        with create_warehouse_engine(target).begin() as conn:
            conn.exec_driver_sql("CREATE TABLE bare_hired_employees (LIKE hired_employees)")
        spool, csv = run / "rows.arrow", run / "rows.csv"
        run_child(PREPARE, normalize_database_url(source), str(spool), str(csv))
        with create_warehouse_engine(source).connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM hired_employees").scalar_one()

        best: dict[str, dict[str, float]] = {}

        def keep(name: str, measured: dict[str, float]) -> None:
            print(f"  {name}: {measured['seconds']:.2f} s", flush=True)
            if name not in best or measured["seconds"] < best[name]["seconds"]:
                best[name] = measured

        for _ in range(repeat):
            keep("backup", run_child(BACKUP, normalize_database_url(source), str(run), str(run / "backup_name")))
            backup_file = run / "backups" / "hired_employees" / (run / "backup_name").read_text()
            keep("bare write", run_child(BARE_WRITE, str(spool), str(run / "bare.avro")))
            keep("restore", run_child(RESTORE, normalize_database_url(source), str(run), backup_file.name))
            keep("bare read", run_child(BARE_READ, str(backup_file)))
            keep("bare COPY, PK + indexes + FKs", run_child(BARE_COPY, psycopg_url(target), str(csv), "hired_employees"))
            keep("bare COPY, no keys", run_child(BARE_COPY, psycopg_url(target), str(csv), "bare_hired_employees"))
        best["_files"] = {"avro_bytes": backup_file.stat().st_size, "csv_bytes": csv.stat().st_size}
        return rows, best
    finally:
        drop_database(server_url, source)
        drop_database(server_url, target)
        for path in sorted(run.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        run.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000], help="employees to generate (about 3 %% are rejected)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--server-url", default=os.environ.get("GDX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    lines = [
        "| rows | contender | seconds | rows/s | peak RSS MiB | ratio |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for employees in args.rows:
        rows, best = bench_size(normalize_database_url(args.server_url), employees, args.repeat)
        bare_restore = best["bare read"]["seconds"] + best["bare COPY, PK + indexes + FKs"]["seconds"]
        ratios = {
            "backup": f"{best['backup']['seconds'] / best['bare write']['seconds']:.2f}x bare write (target <= 1.5x)",
            "restore": f"{best['restore']['seconds'] / bare_restore:.2f}x bare read + bare COPY with keys (target <= 2x)",
        }
        for name, measured in best.items():
            if name.startswith("_"):
                continue
            rss = (measured["rss"] + (measured["helper_rss"] if name == "backup" else 0)) / 2**20
            seconds = measured["seconds"]
            lines.append(f"| {rows:,} | {name} | {seconds:.2f} | {rows / seconds:,.0f} | {rss:,.0f} | {ratios.get(name, '')} |")
        lines.append(f"| {rows:,} | _bare read + bare COPY with keys_ | {bare_restore:.2f} | {rows / bare_restore:,.0f} | | |")
        print("\n".join(lines), flush=True)
    avro_mib, csv_mib = (best["_files"][kind] / 2**20 for kind in ("avro_bytes", "csv_bytes"))
    note = f"\nAvro file of the largest run: {avro_mib:,.1f} MiB (deflate); the same rows as CSV: {csv_mib:,.1f} MiB.\n"
    append_run("backup_restore", "rows " + ", ".join(f"{rows:,}" for rows in args.rows), "\n".join(lines) + "\n" + note,
               postgres=postgres_version(args.server_url))
    print(note)


if __name__ == "__main__":
    main()
