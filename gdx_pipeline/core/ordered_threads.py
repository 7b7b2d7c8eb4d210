"""Work ahead of a consumer in background threads, handing results over in order.

A file's blocks are read, parsed and checked ahead of the transaction that loads them: Arrow,
numpy, hashlib and the database driver release the GIL, so two blocks can be parsed while the
database writes a third, and every core of a small machine is busy. Memory stays bounded: no
more than a fixed number of items are in flight. An exception raised by the work or by the
items' source reaches the consumer, in order, when it comes to that item.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

# How long a thread running Python may keep the GIL from a thread that wants it back, while a
# file loads: the settling thread runs Python between its Arrow calls, and every return of a
# parsing thread from Arrow, or of the writing one from the driver, may wait this long for it.
# Python's default is 5 ms; 2 ms made a big PostgreSQL load's parse-and-COPY phase shorter
# (benchmarks/results/ingest.md, 2026-12-03).
LOAD_SWITCH_INTERVAL_SECONDS = 0.002

T = TypeVar("T")
R = TypeVar("R")


def worker_threads() -> int:
    """Threads that parse blocks: one per core (the database and the consumer wait on I/O or the
    GIL most of the time), at least one, at most four (past that the GIL serialises them)."""
    return max(1, min(4, os.cpu_count() or 1))


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Produce items in a background thread, at most `depth` ahead of the consumer.

    Memory stays bounded by `depth` items. An exception in the producer is raised in the consumer.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put((item, None))
            slots.put((done, None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            slots.put((done, error))

    worker = threading.Thread(target=produce, name="gdx-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()


def map_in_order(work: Callable[[T], R], items: Iterator[T], *, workers: int | None = None, ahead: int | None = None) -> Iterator[R]:
    """`work(item)` for each item, computed by `workers` threads, yielded in the items' order.

    The items are drawn by a thread of their own (reading a file is work too), at most `ahead`
    results wait for the consumer beyond those being computed. With one worker and nothing
    ahead this is a plain loop in the caller's thread.
    """
    workers = worker_threads() if workers is None else workers
    ahead = workers if ahead is None else ahead
    if workers <= 1 and ahead <= 0:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gdx-block") as pool:
        futures: Iterator[Future[R]] = read_ahead((pool.submit(work, item) for item in items), depth=max(1, ahead))
        try:
            for future in futures:
                yield future.result()
        finally:
            futures.close()  # stops drawing items; what was submitted is cancelled or finished
            pool.shutdown(wait=True, cancel_futures=True)


class _SwitchInterval:
    """Python's thread switch interval, at most `LOAD_SWITCH_INTERVAL_SECONDS` while any load
    holds it: the first holder shortens it, the last to let go puts back what it was (it is the
    whole process's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._before = 0.0

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._before = sys.getswitchinterval()
                sys.setswitchinterval(min(self._before, LOAD_SWITCH_INTERVAL_SECONDS))
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                sys.setswitchinterval(self._before)


_switch_interval = _SwitchInterval()


@contextmanager
def short_gil_turns() -> Iterator[None]:
    """Python's thread switch interval at most `LOAD_SWITCH_INTERVAL_SECONDS` while the block
    runs (see `_SwitchInterval`)."""
    _switch_interval.hold()
    try:
        yield
    finally:
        _switch_interval.release()
