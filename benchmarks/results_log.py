"""Where a benchmark run's figures go: a dated section appended to its file in benchmarks/results/.

The files there are history kept in git, so a run adds to them and never rewrites what earlier
runs recorded; each section says when, on what machine and by which command, which is what
makes a figure worth comparing later.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def postgres_version(server_url: str) -> str:
    """The server's own version string, e.g. `16.4 (Debian 16.4-1.pgdg120+1)`."""
    import sqlalchemy as sa

    from gdx_pipeline.core.warehouse import normalize_database_url

    engine = sa.create_engine(normalize_database_url(server_url))
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SHOW server_version").scalar_one()
    finally:
        engine.dispose()


def machine() -> str:
    """Cores, CPU model and load average: what a reader needs to weigh a figure."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores{f' ({model})' if model else ''}, load average {load} at the end"


def commit() -> str:
    """The commit the run measured, with `+ changes not committed` when tracked files differed from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=RESULTS.parents[1], capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "not known (no git)"
    return f"{head}{' + changes not committed' if git('status', '--porcelain', '--untracked-files=no') else ''}"


def command() -> str:
    """The command line that ran the benchmark, as one would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(RESULTS.parents[1])
    except ValueError:
        pass
    return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])


def append_run(name: str, title: str, body: str, *, postgres: str | None = None, results: Path = RESULTS) -> Path:
    """Append one run to `results/<name>.md` under a heading with the date and `title`.

    `postgres` is the server's version when the run used PostgreSQL."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.md"
    server = f"; PostgreSQL {postgres}" if postgres else ""
    section = (
        f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {title}\n\n"
        f"- machine: {machine()}{server}\n"
        f"- commit: {commit()}\n"
        f"- command: `{command()}`\n\n"
        f"{body.strip()}\n"
    )
    with path.open("a", encoding="utf-8") as handle:
        if handle.tell() == 0:
            handle.write(f"# {name} benchmark results\n")
        handle.write(section)
    return path
