"""Globant-format sample files with a known share of dirty rows, for the demo, tests and benchmarks.

Vectorised (numpy and pyarrow), so 10 M employees take seconds, not minutes. The generator is
seeded: the same arguments always give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEPARTMENTS = [
    "Product Management", "Sales", "Research and Development", "Business Development", "Engineering",
    "Human Resources", "Services", "Support", "Marketing", "Training", "Legal", "Accounting",
]
JOB_WORDS = ["Analyst", "Engineer", "Manager", "Assistant", "Developer", "Accountant", "Designer", "Nurse", "Editor", "Recruiter"]
JOB_LEVELS = ["", " I", " II", " III", " IV"]
FIRST_NAMES = ["Harold", "Ty", "Lyman", "Lotti", "Gretna", "Zoë", "Björn", "Ana María", "José", "Chloé", "Wei", "Aiyana", "Søren", "Émile"]
LAST_NAMES = ["Vogt", "Hofer", "Hadye", "Crowthe", "Lording", "Müller", "O'Neil", "García", "Nguyễn", "Kowalski", "Smith", "Dubois"]

# What a dirty row looks like, and the reason the pipeline should give for it.
DIRT_KINDS = (
    "blank_name",
    "blank_datetime",
    "blank_department_id",
    "blank_job_id",
    "bad_id",
    "bad_datetime",
    "unknown_department",
    "extra_field",
)


@dataclass
class SampleSummary:
    departments: int
    jobs: int
    employees: int
    dirty_by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def dirty(self) -> int:
        return sum(self.dirty_by_kind.values())


def _write_csv(path: Path, columns: dict[str, np.ndarray], chunk_rows: int = 500_000) -> None:
    """Headerless lines joined by hand: a dirty row may carry an extra field, which a CSV writer would quote."""
    values = list(columns.values())
    with path.open("w", encoding="utf-8", newline="") as handle:
        for start in range(0, len(values[0]), chunk_rows):
            lines = values[0][start : start + chunk_rows].copy()
            for column in values[1:]:
                lines = lines + "," + column[start : start + chunk_rows]
            handle.write("\n".join(lines) + "\n")


def job_titles(count: int) -> list[str]:
    titles = [f"{word}{level}" for level in JOB_LEVELS for word in JOB_WORDS]
    while len(titles) < count:
        titles += [f"{t} {len(titles) // len(JOB_WORDS)}" for t in titles[: count - len(titles)]]
    return titles[:count]


def generate_globant_files(
    folder: Path,
    employees: int,
    *,
    jobs: int = 183,
    dirty_share: float = 0.03,
    seed: int = 2021,
    year_range: tuple[int, int] = (2020, 2022),
    prefix: str = "",
) -> SampleSummary:
    """Write departments.csv, jobs.csv and hired_employees.csv (names prefixed by `prefix`)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    departments = np.array(DEPARTMENTS, dtype=object)
    _write_csv(
        folder / f"{prefix}departments.csv",
        {"id": np.arange(1, len(departments) + 1).astype(str).astype(object), "department": departments},
    )
    titles = np.array(job_titles(jobs), dtype=object)
    _write_csv(folder / f"{prefix}jobs.csv", {"id": np.arange(1, jobs + 1).astype(str).astype(object), "job": titles})

    n = employees
    first = np.array(FIRST_NAMES, dtype=object)[rng.integers(0, len(FIRST_NAMES), n)]
    last = np.array(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), n)]
    columns = {
        "id": np.arange(1, n + 1).astype(str).astype(object),
        "name": first + " " + last,
        "datetime": _random_hire_times(rng, n, year_range),
        "department_id": rng.integers(1, len(departments) + 1, n).astype(str).astype(object),
        "job_id": rng.integers(1, jobs + 1, n).astype(str).astype(object),
    }
    dirty_rows = rng.choice(n, size=int(n * dirty_share), replace=False) if n else np.array([], dtype=int)
    kinds = rng.integers(0, len(DIRT_KINDS), len(dirty_rows))
    counts: dict[str, int] = {}
    for k, kind in enumerate(DIRT_KINDS):
        rows = dirty_rows[kinds == k]
        counts[kind] = len(rows)
        _make_dirty(columns, rows, kind, len(departments))
    _write_csv(folder / f"{prefix}hired_employees.csv", columns)
    return SampleSummary(departments=len(departments), jobs=jobs, employees=n, dirty_by_kind=counts)


def _random_hire_times(rng: np.random.Generator, n: int, year_range: tuple[int, int]) -> np.ndarray:
    start = np.datetime64(f"{year_range[0]}-01-01T00:00:00", "s").astype(np.int64)
    end = np.datetime64(f"{year_range[1] + 1}-01-01T00:00:00", "s").astype(np.int64)
    seconds = rng.integers(start, end, n).astype("datetime64[s]")
    return (np.datetime_as_string(seconds, unit="s").astype(object)) + "Z"


def _make_dirty(columns: dict[str, np.ndarray], rows: np.ndarray, kind: str, departments: int) -> None:
    if kind.startswith("blank_"):
        columns[kind.removeprefix("blank_")][rows] = ""
    elif kind == "bad_id":
        columns["department_id"][rows] = "x" + columns["department_id"][rows]
    elif kind == "bad_datetime":
        columns["datetime"][rows] = "2021-13-45 25:61"
    elif kind == "unknown_department":
        columns["department_id"][rows] = str(departments + 1000)
    elif kind == "extra_field":
        columns["job_id"][rows] = columns["job_id"][rows] + ",extra"
