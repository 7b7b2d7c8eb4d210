"""`gdx`: small terminal helpers around the pipeline (the pipeline itself runs through Dagster).

    gdx summary                  what the warehouse holds: rows per table, rejects, quarantined files,
                                 and whether that is the shipped sample
    gdx reset [--yes] [--include-backups]
                                 empty the warehouse (tables, rejected rows, ledger, metrics) and the
                                 data folders, e.g. after the demo; backups stay unless asked
    gdx metrics [YEAR]           list the hiring years, or compute one year's metrics and dashboard
                                 (metrics_job for that hiring_year partition)
    gdx drop-sample              copy the shipped sample into landing/ (what scripts/demo loads);
                                 refused when the warehouse holds other data
    gdx generate-sample DIR N    write Globant-format files with N employees (3 % dirty) into DIR

Settings: GDX_DATA_DIR and GDX_DATABASE_URL as the pipeline reads them; DAGSTER_HOME (default
`.dagster_home`, as scripts/ use it) for the Dagster instance that holds runs and partitions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from gdx_pipeline.core import metrics, reset as reset_core
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.sample_data import generate_globant_files
from gdx_pipeline.core.sample_loads import drop_name, sample_loads
from gdx_pipeline.core.warehouse import quarantined_files, rejected_rows
from gdx_pipeline.defs.metrics.partitions import hiring_year_partitions, known_hiring_years, years_phrase
from gdx_pipeline.defs.resources import dagster_home_from_environment, resources_from_environment
from gdx_pipeline.dictionary import TABLES

# What scripts/demo loads; present in a source checkout (an installed wheel has no sample).
SHIPPED_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
DEFAULT_DAGSTER_HOME = ".dagster_home"
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# Runs launched from a terminal print INFO and above, not Dagster's stream of DEBUG events.
TERMINAL_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


class Settings:
    """The warehouse, data folder and Dagster instance this command works on, read once, through
    the code location's own readers."""

    def __init__(self) -> None:
        resources = resources_from_environment()
        self.warehouse = resources["warehouse"]
        self.folders: DataFolders = resources["data_folder"].folders()
        self.dagster_home = Path(dagster_home_from_environment() or DEFAULT_DAGSTER_HOME).resolve()

    def engine(self) -> sa.Engine:
        return self.warehouse.engine()

    def warehouse_name(self) -> str:
        return sa.engine.make_url(self.warehouse.url()).render_as_string(hide_password=True)

    @contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance | None]:
        """The Dagster instance at DAGSTER_HOME, or None where there is none yet."""
        if not self.dagster_home.is_dir():
            yield None
            return
        with dg.DagsterInstance.from_config(str(self.dagster_home)) as instance:
            yield instance


def fail(command: str, message: str, code: int = 1) -> int:
    print(f"gdx {command}: {message}", file=sys.stderr)
    return code


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def nonzero(values: dict[str, int]) -> dict[str, int]:
    return {name: count for name, count in values.items() if count}


def counts(values: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in values.items()) or "none"


# --- summary -----------------------------------------------------------------------------------


def print_summary(engine: sa.Engine, folders: DataFolders, sample_folder: Path = SHIPPED_SAMPLE) -> None:
    with engine.connect() as conn:
        print("table             rows")
        for name in TABLES:
            print(f"{name:<16} {conn.execute(sa.text(f'SELECT count(*) FROM {name}')).scalar_one():>6,}")
        rejects = conn.execute(sa.select(rejected_rows.c.table_name, sa.func.count()).group_by(rejected_rows.c.table_name)).all()
        print("rejected rows:    " + (", ".join(f"{t} {n:,}" for t, n in rejects) or "none"))
        quarantined = conn.execute(sa.select(quarantined_files.c.file_name, quarantined_files.c.reason)).all()
        print("quarantined files: " + ("none" if not quarantined else ""))
        for name, reason in quarantined:
            print(f"  {name}: {reason}")
    print(f"reject files for fixing and re-dropping: {folders.rejects}")
    loads = sample_loads(engine, folders, sample_folder)
    if loads.mixed:
        print(
            f"WARNING: this warehouse mixes the shipped sample ({', '.join(loads.sample_files)} from data/sample/) with "
            f"{loads.other_loads:,} other load(s): its rows and metrics are not your data's. "
            "Empty it with `gdx reset`, then drop your files again."
        )
    elif loads.sample_files:
        print("These rows are the shipped SAMPLE (data/sample/), not real data. Before loading real files: gdx reset --yes")


# --- reset -------------------------------------------------------------------------------------


def runs_in_flight(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)))


def remove_hiring_years(instance: dg.DagsterInstance) -> list[str]:
    """The hiring_year partitions mirror the years in hired_employees: an emptied warehouse has none."""
    years = known_hiring_years(instance)
    for year in years:
        instance.delete_dynamic_partition(hiring_year_partitions.name, year)
    return years


def confirmed(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}
    except EOFError:
        return False


def reset_command(settings: Settings, yes: bool, include_backups: bool) -> int:
    if not yes and not sys.stdin.isatty():
        return fail("reset", "stdin is not a terminal, so nobody can confirm: pass --yes to empty the warehouse and data folders", 2)
    with settings.instance() as instance:
        if instance is not None and (busy := runs_in_flight(instance)):
            jobs = ", ".join(sorted({run.job_name for run in busy}))
            return fail(
                "reset",
                f"{len(busy)} Dagster run(s) in progress ({jobs}) in {settings.dagster_home}: let them finish or cancel them, then reset",
            )
        engine = settings.engine()
        if not yes:
            before = reset_core.contents(engine, settings.folders, include_backups)
            print(f"This empties the warehouse {settings.warehouse_name()} and the data folder {settings.folders.root}:")
            print(f"  rows:  {counts(nonzero(before.rows))}")
            print(f"  files: {counts(nonzero(before.files))}")
            if not confirmed("Remove them?"):
                print("Nothing removed.")
                return 1
        removed = reset_core.reset(engine, settings.folders, include_backups)
        years = remove_hiring_years(instance) if instance is not None else []
    print(
        f"Reset {settings.warehouse_name()}: removed {removed.total_rows:,} rows ({counts(nonzero(removed.rows))}) "
        f"and {removed.total_files:,} files under {settings.folders.root} ({', '.join(f'{name}/' for name in removed.files)})."
    )
    if years:
        print(f"Removed the hiring_year partitions {', '.join(years)} from the Dagster instance at {settings.dagster_home}.")
    kept = (
        []
        if include_backups
        else [f"backups/ ({reset_core.count_files(settings.folders.backups):,} files; --include-backups removes them)"]
    )
    if instance is not None:
        kept.append(f"Dagster's run and materialization history in {settings.dagster_home}")
    if kept:
        print(f"Kept: {'; '.join(kept)}.")
    return 0


# --- metrics -----------------------------------------------------------------------------------


def dg_program() -> str:
    beside = Path(sys.executable).parent / "dg"
    return str(beside) if beside.exists() else shutil.which("dg") or "dg"


def launch(settings: Settings, *args: str) -> bool:
    """`dg launch ARGS` on this code location and instance, printing INFO and above."""
    config = dict(TERMINAL_RUN_CONFIG)
    if "--assets" in args:  # an asset selection runs in the default executor: keep it in one process
        config["execution"] = {"config": {"in_process": {}}}
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    (settings.dagster_home / "dagster.yaml").touch()  # an empty one: Dagster's defaults, without its warning
    argv = [dg_program(), "launch", *args, "-m", "gdx_pipeline.definitions", "--config-json", json.dumps(config)]
    child_environment = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home)}  # passed on, not read
    return subprocess.run(argv, env=child_environment).returncode == 0


def metrics_command(settings: Settings, year_text: str | None) -> int:
    """Check the year before Dagster's CLI sees it (it answers an unknown or missing partition
    with a traceback), add its partition if it has hires but no partition yet, then run
    metrics_job for it."""
    with settings.instance() as instance:
        years = known_hiring_years(instance) if instance is not None else []
    if year_text is None:
        print(f"{years_phrase(years)} (Dagster instance {settings.dagster_home})")
        if years:
            print(f"compute one: gdx metrics {years[-1]}")
        return 0
    try:
        year = metrics.hiring_year(year_text)
    except metrics.InvalidYearError as error:
        return fail("metrics", str(error), 2)
    engine = settings.engine()
    if str(year) not in years:
        if not metrics.hires_in_year(engine, year):
            return fail(
                "metrics", f"hired_employees has no hires in {year}, so there is no hiring_year partition {year} ({years_phrase(years)})", 2
            )
        print(f"{year} has hires but no hiring_year partition yet: materializing hiring_years ...")
        if not launch(settings, "--assets", "hiring_years"):
            return fail("metrics", "hiring_years failed (its log is above)")
    if not launch(settings, "--job", "metrics_job", "--partition", str(year)):
        return fail("metrics", f"metrics_job failed for {year} (its log is above)")
    totals = metrics.stored_quarter_totals(engine, year)
    above = metrics.stored_departments_above_mean(engine, year)
    print(f"{year}: hires per quarter {', '.join(f'{q} {n:,}' for q, n in totals.items())}; {len(above)} department(s) above the mean")
    print(
        f"reports: {settings.folders.reports} "
        f"(quarterly_hires_{year}.csv, departments_above_mean_hires_{year}.csv, hiring_dashboard_{year}.html)"
    )
    return 0


# --- the shipped sample ------------------------------------------------------------------------


def drop_sample_command(settings: Settings, sample_folder: Path) -> int:
    files = sorted(sample_folder.glob("*.csv")) if sample_folder.is_dir() else []
    if not files:
        return fail("drop-sample", f"no sample files in {sample_folder}")
    loads = sample_loads(settings.engine(), settings.folders, sample_folder)
    if loads.other_loads or loads.other_waiting:
        what = (
            f"{loads.other_loads:,} load(s) that are not the shipped sample"
            if loads.other_loads
            else f"files waiting in landing ({', '.join(loads.other_waiting)})"
        )
        return fail(
            "drop-sample",
            f"{settings.warehouse_name()} already has {what}; the sample would mix with them. "
            "Empty it first (gdx reset) or point GDX_DATA_DIR / GDX_DATABASE_URL elsewhere.",
        )
    for path in files:
        shutil.copy(path, settings.folders.landing / drop_name(path))
    sizes = ", ".join(f"{drop_name(path)} ({sum(1 for _ in path.open(encoding='utf-8')):,} lines)" for path in files)
    print(
        f"Copied the shipped SAMPLE into {settings.folders.landing}: {sizes}. Generated data with deliberately broken rows, not real data."
    )
    return 0


# --- entry point -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="gdx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)
    sub.add_parser("summary", help="rows per table, rejects and quarantined files")
    reset = sub.add_parser("reset", help="empty the warehouse and the data folders (backups stay unless --include-backups)")
    reset.add_argument("--yes", action="store_true", help="do not ask (required when stdin is not a terminal)")
    reset.add_argument("--include-backups", action="store_true", help="remove backups/ too")
    metrics_parser = sub.add_parser("metrics", help="list the hiring years, or compute one year's metrics and dashboard")
    metrics_parser.add_argument("year", nargs="?")
    drop = sub.add_parser("drop-sample", help="copy the shipped sample into landing/")
    drop.add_argument("--sample", type=Path, default=SHIPPED_SAMPLE, help=argparse.SUPPRESS)
    generate = sub.add_parser("generate-sample", help="write Globant-format sample files")
    generate.add_argument("folder", type=Path)
    generate.add_argument("employees", type=int)
    generate.add_argument("--dirty-share", type=float, default=0.03)
    generate.add_argument("--seed", type=int, default=2021)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "generate-sample":
        summary = generate_globant_files(args.folder, args.employees, dirty_share=args.dirty_share, seed=args.seed)
        print(f"wrote {summary.employees:,} employees ({summary.dirty:,} dirty) to {args.folder}")
        return 0
    settings = Settings()
    try:
        if args.command == "reset":
            return reset_command(settings, args.yes, args.include_backups)
        if args.command == "metrics":
            return metrics_command(settings, args.year)
        if args.command == "drop-sample":
            return drop_sample_command(settings, args.sample)
        print_summary(settings.engine(), settings.folders)
        return 0
    except sa.exc.OperationalError as error:
        return fail(args.command, f"cannot reach the warehouse {settings.warehouse_name()}: {first_line(error.orig or error)}")


if __name__ == "__main__":
    sys.exit(main())
