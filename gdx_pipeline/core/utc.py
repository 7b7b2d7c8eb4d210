"""Instants are UTC everywhere: the clock, and timestamps read back from either engine."""

from __future__ import annotations

from datetime import UTC, datetime


def now_utc() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime | str) -> datetime:
    """A timestamp read back from the warehouse (or a client), as an aware UTC datetime: SQLite
    hands them back naive (they are stored in UTC), and an aggregate's (min, max) even as text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
