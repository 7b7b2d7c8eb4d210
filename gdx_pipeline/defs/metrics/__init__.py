"""Hiring metrics: year-partitioned assets, their checks, metrics_job and the automation that refreshes them."""
