"""Metrics benchmark: both hiring metrics at 10 M employees, on SQLite and PostgreSQL: the rollup
the metrics read, beside the full query over `hired_employees` by index set.

    .venv/bin/python benchmarks/bench_metrics.py                      # 10 M employees, both engines
    .venv/bin/python benchmarks/bench_metrics.py --employees 1000000 --engines sqlite

Generates Globant-format files (3 % dirty, hires spread over 2020-2022) once, loads them with
the pipeline itself (`ingest_landing`: validation, reject log, COPY on PostgreSQL), then times
`quarterly_hires` and `departments_above_mean` for 2021 (a third of the rows) and for a year
without hires, and `years_with_hires`, side by side in one run:

  rollup     what the metrics read: `hires_by_quarter`, kept in step by every write (target 0.05 s)
  none       the full query (`full_scan=True`) with only the primary key: it scans the table
  shipped    the full query with what the warehouse DDL creates on that engine: `department_id`,
             `job_id`, and `datetime` (PostgreSQL) or the hire year (SQLite)

Every contender must give the rollup's answers.

Each timing is the best of `--repeat` runs. Results go to stdout and, as a dated section, to the
end of benchmarks/results/metrics.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_log import append_run, postgres_version  # noqa: E402
from gdx_pipeline.core.folders import DataFolders  # noqa: E402
from gdx_pipeline.core.ingestion import ingest_landing  # noqa: E402
from gdx_pipeline.core.metrics import departments_above_mean, quarterly_hires, years_with_hires  # noqa: E402
from gdx_pipeline.core.sample_data import generate_globant_files  # noqa: E402
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine, data_tables, indexes_on, is_postgres, normalize_database_url  # noqa: E402

WORK = ROOT / "benchmarks" / ".work"
YEAR = 2021
EMPTY_YEAR = 1999
VARIANTS = ("none", "shipped", "rollup")


def sample_files(employees: int) -> Path:
    folder = WORK / f"metrics_globant_{employees}"
    if not (folder / "hired_employees.csv").exists():
        started = time.perf_counter()
        generate_globant_files(folder, employees, dirty_share=0.03, year_range=(2020, 2022))
        print(f"generated {employees:,} employees in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def load(engine: sa.Engine, files: Path) -> float:
    """Load the files through the pipeline (hard links into a throwaway landing folder)."""
    data = WORK / f"metrics_run_{uuid.uuid4().hex[:8]}"
    folders = DataFolders(data).ensure()
    for name in ("departments.csv", "jobs.csv", "hired_employees.csv"):
        os.link(files / name, folders.landing / name)
    started = time.perf_counter()
    outcomes = ingest_landing(engine, folders, run_id="bench-metrics")
    seconds = time.perf_counter() - started
    assert [o.status for o in outcomes] == ["applied"] * 3, outcomes
    shutil.rmtree(data)
    return seconds


def set_indexes(engine: sa.Engine, variant: str) -> None:
    indexes = indexes_on(data_tables["hired_employees"], engine.dialect.name)
    wanted = list(indexes) if variant == "shipped" else []
    with engine.begin() as conn:
        for index in indexes:
            conn.execute(sa.schema.DropIndex(index, if_exists=True))
        for index in wanted:
            conn.execute(sa.schema.CreateIndex(index))
    # Steady state: statistics current and (PostgreSQL) the visibility map set, as autovacuum leaves it.
    if is_postgres(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE hired_employees")
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")


def best_of(repeat: int, work: Callable[[], object]) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def bench_engine(name: str, engine: sa.Engine, files: Path, employees: int, repeat: int, variants: list[str]) -> list[str]:
    seconds = load(engine, files)
    print(f"{name}: loaded {employees:,} employees through the pipeline in {seconds:.1f} s", flush=True)
    expected_q = quarterly_hires(engine, YEAR)
    expected_a = departments_above_mean(engine, YEAR)
    expected_y = years_with_hires(engine)
    lines = [f"| {name} | {employees:,} | load through the pipeline (shipped indexes) | shipped | {seconds:.1f} | |"]
    baseline: dict[str, float] = {}
    for variant in variants:
        full = variant != "rollup"
        set_indexes(engine, "shipped" if variant == "rollup" else variant)
        timings = {
            f"quarterly_hires {YEAR}": best_of(repeat, lambda full=full: quarterly_hires(engine, YEAR, full_scan=full)),
            f"departments_above_mean {YEAR}": best_of(repeat, lambda full=full: departments_above_mean(engine, YEAR, full_scan=full)),
            f"quarterly_hires {EMPTY_YEAR} (no hires)": best_of(
                repeat, lambda full=full: quarterly_hires(engine, EMPTY_YEAR, full_scan=full)
            ),
            "years_with_hires": best_of(repeat, lambda full=full: years_with_hires(engine, full_scan=full)),
        }
        # Same answers whatever the path and the indexes.
        assert quarterly_hires(engine, YEAR, full_scan=full).equals(expected_q)
        above, mean = departments_above_mean(engine, YEAR, full_scan=full)
        assert above.equals(expected_a[0]) and mean == expected_a[1]
        assert years_with_hires(engine, full_scan=full) == expected_y
        for query, value in timings.items():
            baseline.setdefault(query, value)
            lines.append(f"| {name} | {employees:,} | {query} | {variant} | {value:.3f} | {baseline[query] / value:.1f}x |")
            print(lines[-1], flush=True)
    return lines


def fresh_postgres_database(server_url: str) -> str:
    name = f"gdx_metrics_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(server_url: str, url: str) -> None:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--employees", type=int, default=10_000_000)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="of none,shipped,rollup (default: all three)")
    parser.add_argument("--server-url", default=os.environ.get("GDX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    WORK.mkdir(parents=True, exist_ok=True)
    files = sample_files(args.employees)
    lines = [
        f"Both metrics at {args.employees:,} employees (hires over 2020-2022), best of {args.repeat}; "
        "speed-up is against the first of the variants run; `rollup` is what the metrics read.",
        "",
        "| engine | employees | query | indexes | seconds | speed-up |",
        "|---|---:|---|---|---:|---:|",
    ]
    for name in args.engines.split(","):
        if name == "sqlite":
            path = WORK / f"metrics_bench_{uuid.uuid4().hex[:8]}.sqlite"
            engine = create_warehouse_engine(f"sqlite:///{path}")
            create_schema(engine)
            try:
                lines += bench_engine("SQLite", engine, files, args.employees, args.repeat, args.variants.split(","))
            finally:
                engine.dispose()
                for leftover in WORK.glob(f"{path.name}*"):
                    leftover.unlink()
        elif name == "postgres":
            server = normalize_database_url(args.server_url)
            url = fresh_postgres_database(server)
            engine = create_warehouse_engine(url)
            create_schema(engine)
            try:
                lines += bench_engine("PostgreSQL", engine, files, args.employees, args.repeat, args.variants.split(","))
            finally:
                engine.dispose()
                drop_postgres_database(server, url)
        else:
            parser.error(f"unknown engine {name!r}: expected sqlite and/or postgres")
    print("\n".join(lines))
    postgres = postgres_version(args.server_url) if "postgres" in args.engines.split(",") else None
    append_run("metrics", f"{args.employees:,} employees, {args.engines}", "\n".join(lines), postgres=postgres)


if __name__ == "__main__":
    main()
