"""What the dashboard shows, shaped per year: each year's metrics with the totals the page
needs, and everything else it says (what was left out, what fed the warehouse). No database here:
`collect` fills these, the page modules only read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import pandas as pd

from gdx_pipeline.core.metrics import QUARTERS, hires_by_department, ranked_by_hires
from gdx_pipeline.core.provenance import Provenance


@dataclass
class YearMetrics:
    """Both metrics of one year, as computed from the warehouse."""

    year: int
    quarterly: pd.DataFrame  # department_id, department, job_id, job, Q1..Q4
    above_mean: pd.DataFrame  # id, department, hired
    mean: float | None

    @classmethod
    def empty(cls, year: int) -> YearMetrics:
        quarterly = pd.DataFrame(columns=["department_id", "department", "job_id", "job", *QUARTERS])
        return cls(year, quarterly, pd.DataFrame(columns=["id", "department", "hired"]), None)

    @cached_property
    def by_department(self) -> pd.DataFrame:
        """Id, department, Q1..Q4 and hired per hiring department, most hires first."""
        return ranked_by_hires(hires_by_department(self.quarterly))

    @cached_property
    def quarter_totals(self) -> dict[str, int]:
        return {q: int(self.quarterly[q].sum()) if len(self.quarterly) else 0 for q in QUARTERS}

    @property
    def hires(self) -> int:
        return sum(self.quarter_totals.values())

    @property
    def departments_hiring(self) -> int:
        return len(self.by_department)


@dataclass
class DashboardData:
    """Everything the dashboard shows, read in one place: every year's metrics, what was left
    out, and what fed the warehouse."""

    years: dict[int, YearMetrics]  # every year shown, ascending
    selected_year: int  # the year shown first
    generated_at: datetime
    provenance: Provenance
    rows_by_table: dict[str, int] = field(default_factory=dict)
    rejected_by_table: dict[str, int] = field(default_factory=dict)
    quarantined_files: int = 0

    @property
    def selected(self) -> YearMetrics:
        return self.years[self.selected_year]

    def previous(self, year: int) -> YearMetrics:
        """The year before `year`; a year missing from the data had no hires."""
        return self.years.get(year - 1) or YearMetrics.empty(year - 1)

    @property
    def loaded_at(self) -> datetime | None:
        return self.provenance.loaded_at

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_table.values())
