"""The Dagster-layer tests share no fixture of their own: they take the warehouse fixtures
(`database_url`, `engine`, `folders`, `globant_landing`) from the conftest one folder up, and
build their Definitions and runs with `runs.py`. A fixture two of them need goes here."""
