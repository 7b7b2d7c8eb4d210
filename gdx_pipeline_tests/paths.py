"""Where the tests find the repository's files: its root, and the challenge's three files shipped
with the tests (see data/globant/README.md)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GLOBANT_DATA = Path(__file__).resolve().parent / "data" / "globant"
GLOBANT_FILES = ("departments.csv", "jobs.csv", "hired_employees.csv")
