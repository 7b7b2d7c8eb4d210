"""Avro backups of every table (assets, nightly schedule, retention) and the restore jobs."""
