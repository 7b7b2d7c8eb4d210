"""Retrying what the database may do differently in a minute, and nothing else.

Backups and metrics only read the warehouse and rewrite what they own, so running them again is
safe. A dropped connection, a PostgreSQL restart or failover, a deadlock or a SQLite lock held
elsewhere passes; a refusal (a bad partition, a bad setting, a broken table) fails the same way
every time, so it fails at once with its reason instead of three more times over two minutes.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from gdx_pipeline.core.warehouse import is_transient_database_error

# 15 s, 30 s, 60 s (± jitter): long enough for a PostgreSQL restart or a failover to finish.
TRANSIENT_DATABASE_RETRY = dg.RetryPolicy(max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


@contextmanager
def retried_only_when_transient() -> Iterator[None]:
    """Inside an op with TRANSIENT_DATABASE_RETRY: a transient database error propagates (and
    the policy retries the step); any other error fails the step for good, its cause kept."""
    try:
        yield
    except (dg.Failure, dg.RetryRequested):
        raise
    except Exception as error:
        if is_transient_database_error(error):
            raise
        raise dg.Failure(description=f"{type(error).__name__}: {error}", allow_retries=False) from error
