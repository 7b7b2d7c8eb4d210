"""Which ids a file (or API batch, or backup) already produced, across its blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gdx_pipeline.dictionary import ID_MAX


class SeenIds:
    """Which ids a file already produced: a bitmap over the int32 id space.

    256 MiB of address space, but only the pages of ids actually seen are ever touched, so
    memory stays a few MiB for dense ids; a Python set of 10 M ids would take ~600 MiB. The
    bitmap is made when a second block arrives: a one-block file or API batch never needs it.
    """

    def __init__(self) -> None:
        self._bits: np.ndarray | None = None
        self._first_block: np.ndarray | None = None  # ids kept from the only block so far

    def mark(self, ids: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """Record candidate ids; return a mask of candidates whose id came earlier."""
        duplicate = np.zeros(len(ids), dtype=bool)
        positions = np.flatnonzero(candidate)
        values = ids[positions]
        within = pd.Series(values).duplicated(keep="first").to_numpy()
        if self._bits is None and self._first_block is None:
            duplicate[positions[within]] = True
            self._first_block = values[~within]
            return duplicate
        if self._bits is None:
            self._bits = np.zeros((ID_MAX >> 3) + 1, dtype=np.uint8)
            self._set(self._first_block)
            self._first_block = None
        if positions.size == 0:
            return duplicate
        seen_before = (self._bits[values >> 3] >> (values & 7).astype(np.uint8)) & 1
        dup = seen_before.astype(bool) | within
        duplicate[positions[dup]] = True
        self._set(values[~dup])
        return duplicate

    def _set(self, values: np.ndarray) -> None:
        np.bitwise_or.at(self._bits, values >> 3, (np.uint8(1) << (values & 7).astype(np.uint8)).astype(np.uint8))
