"""Ingestion benchmark: this pipeline against the limit of loading pre-cleaned rows, side by side.

    .venv/bin/python benchmarks/bench_ingest.py --rows 1000000 10000000 --engine both --repeat 2

For each size it generates Globant-format files (about 3 % dirty rows) once, plus files of only
clean rows, then, per engine and per run, times one after the other, each in a fresh database
and its own child process:

  pipeline      gdx_pipeline's ingest_landing on the dirty files: streaming, parsing, validation,
                reject log and reject files, ledger, load (departments and jobs too)
  limit proxy   loading the clean rows without judging any of them:
                PostgreSQL  `psql \\copy` into a bare `hired_employees` (no key, no index, no
                            foreign key), then the primary key, secondary indexes and foreign
                            keys the warehouse schema has, added by psql (DDL compiled from
                            `keys_and_indexes.key_and_index_ddl`, not written by hand)
                SQLite      one `executemany` of the clean rows (Python's csv reader) into a bare
                            table whose INTEGER PRIMARY KEY is SQLite's rowid, then the schema's
                            secondary SQLite indexes (the pipeline builds them too); WAL and
                            synchronous=NORMAL, as the warehouse is
  to_sql        (PostgreSQL, up to --skip-to-sql-above rows) pandas read_csv + dropna + to_sql

Before an engine's runs one proxy load goes untimed, a warm-up: the first big load after a
quiet spell pays for a cold server (PostgreSQL WAL segments to create, say) and page cache, and
it used to be the pipeline's, which went first in every run. Odd runs then time the pipeline
first, even runs the proxy. The ratio is the pipeline's seconds over the proxy's of the same
run. Seconds are measured inside each child (imports excluded; for the proxy on PostgreSQL,
psql's whole run); peak RSS is the child's. Results go to stdout and, as a dated section, to
the end of benchmarks/results/ingest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from functools import partial
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_log import append_run, postgres_version  # noqa: E402
from benchmarks.scratch_databases import drop_database, fresh_database  # noqa: E402
from gdx_pipeline.core.keys_and_indexes import key_and_index_ddl  # noqa: E402
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine, data_tables, normalize_database_url  # noqa: E402

WORK = ROOT / "benchmarks" / ".work"
TABLE = data_tables["hired_employees"]

# Every Python child prints one JSON line last: {"seconds": ..., "phases": {...}}.
REPORT = """
import json, time
def report(seconds, **phases):
    print(json.dumps({"seconds": seconds, "phases": phases}), flush=True)
"""

PIPELINE = (
    REPORT
    + """
import sys, logging
from pathlib import Path
import sqlalchemy as sa
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_warehouse_engine
logging.basicConfig(level=logging.WARNING)
engine = create_warehouse_engine(sys.argv[1])
# Phases: the statements that build keys and indexes, and ANALYZE, timed as they run; "load" is
# the rest (reading, checking, the COPYs or inserts, the reject log and ledger, the commit).
spent = {"keys and indexes": 0.0, "analyze": 0.0}
def phase_of(statement):
    words = statement.lstrip().split(None, 2)[:2]
    if words and words[0] == "ANALYZE":
        return "analyze"
    if (words[:1] == ["ALTER"] and "ADD CONSTRAINT" in statement) or words[:2] == ["CREATE", "INDEX"]:
        return "keys and indexes"
    return None
@sa.event.listens_for(engine, "before_cursor_execute")
def before(conn, cursor, statement, parameters, context, executemany):
    conn.info["bench_started"] = time.perf_counter()
@sa.event.listens_for(engine, "after_cursor_execute")
def after(conn, cursor, statement, parameters, context, executemany):
    phase = phase_of(statement)
    if phase:
        spent[phase] += time.perf_counter() - conn.info["bench_started"]
started = time.perf_counter()
outcomes = ingest_landing(engine, DataFolders(Path(sys.argv[2])), run_id="bench")
engine.dispose()  # SQLite: the last connection's close checkpoints the WAL, part of the load
seconds = time.perf_counter() - started
assert all(o.status == "applied" for o in outcomes), [(o.file, o.status) for o in outcomes]
print("pipeline:", [(o.file, o.counts.inserted, o.rows_rejected) for o in outcomes], file=sys.stderr)
report(seconds, load=seconds - sum(spent.values()), **spent)
"""
)

SQLITE_PROXY = (
    REPORT
    + """
import csv, sqlite3, sys
database, rows_file, columns, create_table, *create_indexes = sys.argv[1:]
started = time.perf_counter()
conn = sqlite3.connect(database, isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = NORMAL")
conn.execute("BEGIN")
conn.execute(create_table)
with open(rows_file, encoding="utf-8", newline="") as handle:
    conn.executemany(f"INSERT INTO hired_employees ({columns}) VALUES (?, ?, ?, ?, ?)", csv.reader(handle))
loaded = time.perf_counter()
for ddl in create_indexes:
    conn.execute(ddl)
conn.execute("COMMIT")
indexed = time.perf_counter()
conn.close()  # checkpoints the WAL into the database, as the pipeline's last close does
done = time.perf_counter()
report(done - started, executemany=loaded - started, indexes=indexed - loaded, checkpoint=done - indexed)
"""
)

TO_SQL = (
    REPORT
    + """
import sys
import pandas as pd, sqlalchemy as sa
engine = sa.create_engine(sys.argv[1])
folder = sys.argv[2]
started = time.perf_counter()
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
report(time.perf_counter() - started)
"""
)

GENERATE = """
import sys
from pathlib import Path
from gdx_pipeline.core.sample_data import generate_globant_files
summary = generate_globant_files(Path(sys.argv[1]), int(sys.argv[3]), dirty_share=0.03)
generate_globant_files(Path(sys.argv[2]), int(sys.argv[3]) - summary.dirty, dirty_share=0.0)
"""


def run_child(code: str, *args: str) -> tuple[float, int, dict[str, float]]:
    """Run Python code in a child; (seconds it reported, its peak RSS in bytes, its phases)."""
    process = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"child failed with status {status}")
    reported = json.loads(output.strip().splitlines()[-1])
    return reported["seconds"], usage.ru_maxrss * 1024, reported["phases"]


def landing_copy(source: Path, names: list[str]) -> Path:
    data = WORK / f"run_{uuid.uuid4().hex[:8]}"
    (data / "landing").mkdir(parents=True)
    for name in names:
        os.link(source / name, data / "landing" / name)
    return data


def compiled(statements: list[sa.schema.ExecutableDDLElement], dialect: sa.engine.Dialect) -> list[str]:
    return [str(statement.compile(dialect=dialect)).strip() for statement in statements]


# --- the contenders ------------------------------------------------------------------------------


def pipeline_postgres(server_url: str, dirty: Path) -> tuple[float, int, dict[str, float]]:
    url = fresh_database(server_url)
    data = landing_copy(dirty, ["departments.csv", "jobs.csv", "hired_employees.csv"])
    try:
        return run_child(PIPELINE, normalize_database_url(url), str(data))
    finally:
        drop_database(server_url, url)
        shutil.rmtree(data)


def proxy_postgres(server_url: str, clean: Path) -> tuple[float, int, dict[str, float]]:
    """psql \\copy into the bare table, then the schema's keys and indexes, timed by psql."""
    url = fresh_database(server_url)
    data = landing_copy(clean, ["departments.csv", "jobs.csv"])
    try:
        run_child(PIPELINE, normalize_database_url(url), str(data))  # the referenced tables, not timed
        engine = create_warehouse_engine(url)
        with engine.begin() as conn:
            for statement in key_and_index_ddl(TABLE, "postgresql", drop=True, primary_key=True):
                conn.execute(statement)
        engine.dispose()
        columns = ", ".join(c.name for c in TABLE.columns)
        steps = [f"\\copy hired_employees ({columns}) FROM '{clean / 'hired_employees.csv'}' WITH (FORMAT csv)"]
        steps += [f"{ddl};" for ddl in compiled(key_and_index_ddl(TABLE, "postgresql", primary_key=True), postgresql.dialect())]
        psql_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        started = time.perf_counter()
        process = subprocess.Popen(
            ["psql", psql_url, "-X", "-v", "ON_ERROR_STOP=1", "-q", "-c", "\\timing on", *(arg for step in steps for arg in ("-c", step))],
            stdout=subprocess.PIPE,
            text=True,
        )
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        if status != 0:
            raise RuntimeError("psql failed")
        milliseconds = [float(m.replace(",", "")) for m in re.findall(r"^Time: ([\d,.]+) ms", output, re.M)]
        names = ["copy", *(_step_name(step) for step in steps[1:])]
        return seconds, usage.ru_maxrss * 1024, {name: ms / 1000 for name, ms in zip(names, milliseconds)}
    finally:
        drop_database(server_url, url)
        shutil.rmtree(data)


def _step_name(ddl: str) -> str:
    match = re.search(r"(?:CONSTRAINT|INDEX) (\w+)", ddl)
    return match.group(1) if match else ddl.split()[0]


def to_sql_postgres(server_url: str, dirty: Path) -> tuple[float, int, dict[str, float]]:
    url = fresh_database(server_url)
    try:
        return run_child(TO_SQL, normalize_database_url(url), str(dirty))
    finally:
        drop_database(server_url, url)


def pipeline_sqlite(dirty: Path) -> tuple[float, int, dict[str, float]]:
    data = landing_copy(dirty, ["departments.csv", "jobs.csv", "hired_employees.csv"])
    url = f"sqlite:///{data / 'gdx.sqlite'}"
    engine = create_warehouse_engine(url)
    create_schema(engine)
    engine.dispose()
    try:
        return run_child(PIPELINE, url, str(data))
    finally:
        shutil.rmtree(data)


def proxy_sqlite(clean: Path) -> tuple[float, int, dict[str, float]]:
    data = WORK / f"run_{uuid.uuid4().hex[:8]}"
    data.mkdir(parents=True)
    dialect = sqlite.dialect()
    create_table = str(sa.schema.CreateTable(TABLE, include_foreign_key_constraints=[]).compile(dialect=dialect)).strip()
    indexes = compiled(key_and_index_ddl(TABLE, "sqlite"), dialect)
    columns = ", ".join(c.name for c in TABLE.columns)
    try:
        return run_child(SQLITE_PROXY, str(data / "proxy.sqlite"), str(clean / "hired_employees.csv"), columns, create_table, *indexes)
    finally:
        shutil.rmtree(data)


# --- runs ----------------------------------------------------------------------------------------


def files_for(rows: int) -> tuple[Path, Path]:
    dirty = WORK / f"globant_{rows}"
    clean = WORK / f"globant_{rows}_clean"
    if not (clean / "hired_employees.csv").exists():
        # In a child: a forked child's peak RSS starts at its parent's, so the parent stays small.
        subprocess.run([sys.executable, "-c", GENERATE, str(dirty), str(clean), str(rows)], cwd=ROOT, check=True)
    return dirty, clean


def phases_text(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size and engine, each pipeline beside its proxy")
    parser.add_argument("--server-url", default=os.environ.get("GDX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--no-record", action="store_true", help="print only; append nothing to benchmarks/results/ingest.md")
    parser.add_argument("--skip-to-sql-above", type=int, default=2_000_000, help="to_sql takes ~30 s per 1 M rows")
    parser.add_argument(
        "--no-warm-up", dest="warm_up", action="store_false", help="skip the untimed proxy load before each engine's runs"
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    server_url = normalize_database_url(args.server_url)
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    lines = [
        "| rows | engine | run | contender | seconds | rows/s | peak RSS MiB | vs limit proxy | phases (s) |",
        "|---:|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for rows in args.rows:
        dirty, clean = files_for(rows)
        for engine in engines:
            if engine == "postgres":
                pair = [
                    ("pipeline", partial(pipeline_postgres, server_url, dirty)),
                    ("limit proxy: psql \\copy, then keys", partial(proxy_postgres, server_url, clean)),
                ]
            else:
                pair = [
                    ("pipeline", partial(pipeline_sqlite, dirty)),
                    ("limit proxy: executemany, then indexes", partial(proxy_sqlite, clean)),
                ]
            if args.warm_up:
                pair[1][1]()  # untimed: the first load after a quiet spell pays for a cold server and page cache
            for run in range(1, args.repeat + 1):
                # Odd runs time the pipeline first, even runs the proxy: neither always follows the other.
                timed = dict((name, load()) for name, load in (pair if run % 2 else pair[::-1]))
                results = [(name, timed[name]) for name, _ in pair]
                if engine == "postgres" and rows <= args.skip_to_sql_above and run == 1:
                    results.append(("pandas read_csv + dropna + to_sql", to_sql_postgres(server_url, dirty)))
                proxy_seconds = results[1][1][0]
                for name, (seconds, rss, phases) in results:
                    lines.append(
                        f"| {rows:,} | {engine} | {run} | {name} | {seconds:.1f} | {rows / seconds:,.0f} | {rss / 2**20:,.0f} | "
                        f"{seconds / proxy_seconds:.2f} | {phases_text(phases)} |"
                    )
                print("\n".join(lines), flush=True)
    if args.no_record:
        return
    postgres = postgres_version(server_url) if "postgres" in engines else None
    title = f"rows {', '.join(f'{rows:,}' for rows in args.rows)} · {' and '.join(engines)} · {args.repeat} run(s)"
    append_run("ingest", title, "\n".join(lines), postgres=postgres)


if __name__ == "__main__":
    main()
