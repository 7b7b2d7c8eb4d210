"""The API's link to Dagster: its writes reported as materializations, its jobs run as runs.

A batch committed through the API is reported to the Dagster instance as a runless
materialization of the table it touched (and of `rejected_rows` when it rejected rows), so the
asset's history in the UI shows every write, whichever door it came through. Reporting happens
after the commit and never fails the write: a failure is logged. Backups and restores run the
code location's own jobs in process against the same instance, so they are recorded as runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
import sqlalchemy as sa

from gdx_pipeline.core.batches import API_SOURCE, BatchOutcome

log = logging.getLogger("gdx_pipeline.api")

REJECTED_ROWS_ASSET = "rejected_rows"
REPORT_LINGER_SECONDS = 1.0
INSTANCE_OPEN_ATTEMPTS = 5


def instance_at(dagster_home: str | None) -> dg.DagsterInstance:
    """The instance at DAGSTER_HOME (the one `dagster dev` and the daemon use), else an in-memory one."""
    if dagster_home:
        return _open_instance()
    log.warning(
        "DAGSTER_HOME is not set: API writes and runs are recorded in an in-memory Dagster instance that the UI "
        "cannot see. Set DAGSTER_HOME to the folder your Dagster webserver uses."
    )
    return dg.DagsterInstance.ephemeral()


def _open_instance() -> dg.DagsterInstance:
    """Dagster's own way to open the instance at DAGSTER_HOME. The first process to open a new
    database storage creates its tables; processes starting together (the API beside Dagster's
    webserver and daemon, on a fresh deployment) race to, and a loser's CREATE TABLE fails. It
    tries again, and then finds the tables made."""
    for attempt in range(1, INSTANCE_OPEN_ATTEMPTS + 1):
        try:
            return dg.DagsterInstance.get()
        except sa.exc.DBAPIError as error:
            if attempt == INSTANCE_OPEN_ATTEMPTS:
                raise
            first_line = str(error.orig).partition("\n")[0]  # an empty message has no line to take
            log.warning(
                f"opening the Dagster instance failed ({type(error.orig).__name__}: {first_line}), "
                f"as when another process is creating its storage at the same moment; trying again ({attempt} of "
                f"{INSTANCE_OPEN_ATTEMPTS - 1})"
            )
            time.sleep(attempt * 0.5)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class CommittedBatch:
    """What the reporter needs to know about one committed batch."""

    table: str
    request_id: str
    rows_received: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int

    @classmethod
    def from_outcome(cls, table: str, outcome: BatchOutcome, request_id: str) -> CommittedBatch:
        counts = outcome.counts
        return cls(table, request_id, outcome.rows_read, counts.inserted, counts.updated, counts.unchanged, len(outcome.rejected))


def batch_materializations(batches: Sequence[CommittedBatch]) -> list[dg.AssetMaterialization]:
    """One materialization per table the batches wrote to, and one of the reject log if they
    rejected rows; none for batches that changed nothing. Batches that waited together are
    reported together: `request_ids` lists them all and the counts are their sums."""
    events = []
    for table in dict.fromkeys(b.table for b in batches):
        written = [b for b in batches if b.table == table and (b.inserted or b.updated)]
        if written:
            events.append(
                dg.AssetMaterialization(
                    asset_key=table,
                    description=f"{len(written)} API batch(es): {', '.join(b.request_id for b in written)}",
                    metadata={
                        "source": API_SOURCE,
                        "request_ids": dg.MetadataValue.json([b.request_id for b in written]),
                        "batches": len(written),
                        "rows_received": sum(b.rows_received for b in written),
                        "rows_inserted": sum(b.inserted for b in written),
                        "rows_updated": sum(b.updated for b in written),
                        "rows_unchanged": sum(b.unchanged for b in written),
                        "rows_rejected": sum(b.rejected for b in written),
                    },
                )
            )
    rejecting = [b for b in batches if b.rejected]
    if rejecting:
        events.append(
            dg.AssetMaterialization(
                asset_key=REJECTED_ROWS_ASSET,
                description=f"{len(rejecting)} API batch(es) rejected rows",
                metadata={
                    "source": API_SOURCE,
                    "request_ids": dg.MetadataValue.json([b.request_id for b in rejecting]),
                    "rejected_by_table": dg.MetadataValue.json(
                        {t: sum(b.rejected for b in rejecting if b.table == t) for t in dict.fromkeys(b.table for b in rejecting)}
                    ),
                    "rows_rejected": sum(b.rejected for b in rejecting),
                },
            )
        )
    return events


class Orchestration:
    """One Dagster instance, and the resources the code location's jobs run with.

    Batches are reported by one background thread: a request only queues its batch, so neither
    its latency nor its outcome depends on the instance. Batches committed within
    `report_linger` seconds of each other go out together, in one materialization per table:
    a busy API then costs the instance a few events a second, not one per request.
    """

    def __init__(self, instance: dg.DagsterInstance, resources: Mapping[str, object], *, report_linger: float = REPORT_LINGER_SECONDS):
        self.instance = instance
        self.resources = dict(resources)
        self.report_linger = report_linger
        self._queue: queue.Queue[CommittedBatch | None] = queue.Queue()  # None: a flush is waiting
        self._reporter: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._job_lock = threading.Lock()
        self._definitions: dg.Definitions | None = None

    def report_batch(self, table: str, outcome: BatchOutcome, request_id: str) -> None:
        """Queue a committed batch for reporting; returns at once."""
        self._queue.put(CommittedBatch.from_outcome(table, outcome, request_id))
        with self._start_lock:
            if self._reporter is None:
                self._reporter = threading.Thread(target=self._report_forever, name="gdx-dagster-reporter", daemon=True)
                self._reporter.start()

    def flush(self) -> None:
        """Wait until every queued batch has been reported (or failed to be)."""
        with self._start_lock:
            if self._reporter is None:
                return  # nothing was ever queued
        self._queue.put(None)  # ends the reporter's linger at once
        self._queue.join()

    def _report_forever(self) -> None:
        while True:
            waiting = [self._queue.get()]
            deadline = time.monotonic() + self.report_linger
            while waiting[-1] is not None:
                try:
                    waiting.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                self._report([batch for batch in waiting if batch is not None])
            finally:
                for _ in waiting:
                    self._queue.task_done()

    def _report(self, batches: list[CommittedBatch]) -> None:
        for event in batch_materializations(batches):
            try:
                self.instance.report_runless_asset_event(event)
            except Exception:  # a committed write stands whether or not Dagster heard of it
                log.exception(
                    "could not report API batch(es) %s on %s to Dagster",
                    ", ".join(b.request_id for b in batches),
                    event.asset_key.to_user_string(),
                )

    def run_job(
        self,
        job_name: str,
        run_config: Mapping[str, object] | None = None,
        *,
        asset_selection: Sequence[dg.AssetKey] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Run a job of the code location in process, with the API's resources; the run is
        recorded in the instance. One at a time: backups and restores are rare and heavy."""
        job = self.definitions().resolve_job_def(job_name)
        with self._job_lock:
            return job.execute_in_process(
                run_config=dict(run_config or {}),
                asset_selection=list(asset_selection) if asset_selection else None,
                instance=self.instance,
                raise_on_error=False,
                tags={"gdx/launched_by": "api", **(tags or {})},
            )

    def definitions(self) -> dg.Definitions:
        """The code location's definitions, bound to the API's warehouse and data folder."""
        with self._start_lock:
            if self._definitions is None:
                from gdx_pipeline.definitions import defs  # the whole code location, loaded on first use

                self._definitions = dg.Definitions(
                    assets=defs.assets,
                    asset_checks=defs.asset_checks,
                    jobs=defs.jobs,
                    resources={**(defs.resources or {}), **self.resources},
                )
            return self._definitions
