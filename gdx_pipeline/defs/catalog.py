"""What the asset catalog says about every asset beyond its data: who owns it, how it is tagged,
which version of our logic made it, and how fresh it is expected to be.

Code versions are derived, not written: a version is the hash of the source files whose logic
decides the asset's content (the dictionary and the loader for a table, `core/metrics.py` for a
metric, ...). Edit that logic and the version changes by itself, so the UI marks what was made
by the old code; a hand-kept constant is one forgotten bump away from hiding that. The price is
that a comment-only edit changes the version too, which costs one recomputation, never a
wrong answer.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import dagster as dg
from croniter import croniter

# Data engineering runs the loads and the backups; HR analytics answers for the numbers.
DATA_ENGINEERING = "team:data-engineering"
HR_ANALYTICS = "team:hr-analytics"

# Tables with personal data: employee names, and the raw lines of rejected rows that carry them.
PERSONAL_DATA_TABLES = frozenset({"hired_employees", "rejected_rows"})


def package_modules(folder: str) -> tuple[str, ...]:
    """Every Python module of a package folder, so a module added to it later is covered too."""
    return tuple(
        sorted(f"{folder}/{entry.name}" for entry in files("gdx_pipeline").joinpath(folder).iterdir() if entry.name.endswith(".py"))
    )


# The source files (relative to the package) whose logic decides each kind of asset's content.
INGEST_LOGIC = (
    "dictionary.py",
    *package_modules("core/csv_source"),
    *package_modules("core/validation"),
    "core/known_keys.py",
    "core/staged_writes.py",
    "core/prepared_rows.py",
    "core/postgres_copy.py",
    "core/reject_log.py",
    "core/file_transaction.py",
    "core/ingestion.py",
)
METRICS_LOGIC = ("core/metrics.py", "core/hire_rollup.py")
DASHBOARD_LOGIC = (*METRICS_LOGIC, *package_modules("core/dashboard"), "core/dashboard/template.html", "core/provenance.py")
BACKUP_LOGIC = (
    "dictionary.py",
    "core/backups/avro_schema.py",
    "core/backups/avro_writer.py",
    "core/backups/snapshot.py",
    "core/backups/take.py",
)

# A missed run shows as WARN an hour after it was due, and as FAIL after two.
FRESHNESS_WARN_GRACE = timedelta(hours=1)
FRESHNESS_FAIL_GRACE = timedelta(hours=2)


def source_version(*paths: str, root: Traversable | Path | None = None) -> str:
    """The first 12 hex digits of a sha256 over the named source files of the package (or under
    `root`), line endings normalised so a checkout on Windows gives the same version."""
    digest = hashlib.sha256()
    package = root if root is not None else files("gdx_pipeline")
    for path in paths:
        digest.update(path.encode() + b"\0")
        digest.update(package.joinpath(path).read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()[:12]


def asset_tags(layer: str, *, pii: bool) -> dict[str, str]:
    """Tags every asset carries: the domain, its layer (landing, warehouse, metrics, report,
    backup), and whether it holds personal data (employee names), for whoever audits access."""
    return {"domain": "hr", "layer": layer, "pii": "yes" if pii else "no"}


def longest_cron_gap(cron: str) -> timedelta:
    """The longest wait between two ticks of `cron` (UTC) over a year of ticks: 24 h for a nightly
    cron, 7 days for a weekly one, 31 days for a monthly one. Ticks come from croniter, the parser
    Dagster's own schedules use (Dagster keeps its copy private)."""
    start = datetime(2001, 1, 1, tzinfo=UTC)
    ticks = croniter(cron, start).all_next(datetime)
    previous, longest = next(ticks), timedelta(0)
    for tick in ticks:
        longest = max(longest, tick - previous)
        if tick - start > timedelta(days=366):
            break
        previous = tick
    return longest


@cache
def freshness_for_cron(cron: str) -> dg.FreshnessPolicy:
    """Fresh while the latest materialization is no older than the longest gap between ticks,
    plus grace for the run itself: a nightly cron gives WARN after 25 h and FAIL after 26 h."""
    gap = longest_cron_gap(cron)
    return dg.FreshnessPolicy.time_window(fail_window=gap + FRESHNESS_FAIL_GRACE, warn_window=gap + FRESHNESS_WARN_GRACE)
