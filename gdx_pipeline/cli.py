"""`gdx`: small terminal helpers around the pipeline (the pipeline itself runs through Dagster).

    gdx summary                 what the warehouse holds: rows per table, rejects, quarantined files
    gdx generate-sample DIR N   write Globant-format files with N employees (3 % dirty) into DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sqlalchemy as sa

from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.sample_data import generate_globant_files
from gdx_pipeline.core.warehouse import quarantined_files, rejected_rows
from gdx_pipeline.defs.resources import resources_from_environment
from gdx_pipeline.dictionary import TABLES


def print_summary(engine: sa.Engine, folders: DataFolders) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gdx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("summary", help="rows per table, rejects and quarantined files")
    generate = sub.add_parser("generate-sample", help="write Globant-format sample files")
    generate.add_argument("folder", type=Path)
    generate.add_argument("employees", type=int)
    generate.add_argument("--dirty-share", type=float, default=0.03)
    generate.add_argument("--seed", type=int, default=2021)
    args = parser.parse_args(argv)

    if args.command == "generate-sample":
        summary = generate_globant_files(args.folder, args.employees, dirty_share=args.dirty_share, seed=args.seed)
        print(f"wrote {summary.employees:,} employees ({summary.dirty:,} dirty) to {args.folder}")
        return 0
    # The same configuration as the pipeline: GDX_DATA_DIR and GDX_DATABASE_URL, read by the resources.
    resources = resources_from_environment()
    print_summary(resources["warehouse"].engine(), resources["data_folder"].folders())
    return 0


if __name__ == "__main__":
    sys.exit(main())
