"""Where records end in raw bytes, found exactly where Python's csv module would find them.

A quote is special only where a field starts, `""` inside a quoted field is a quote, and a line
break inside one is text. The scan is vectorised with numpy over quotes and line breaks only, and
carries its state from one piece of a stream to the next, so where a piece is cut never changes
where a record ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUOTE, COMMA, LF, CR = 0x22, 0x2C, 0x0A, 0x0D


@dataclass
class QuoteState:
    """Where a scan left off: inside a quoted field or not, and whether a quote at the next
    byte would open one (it follows a comma, a line break or nothing)."""

    in_quotes: bool = False
    at_field_start: bool = True


def record_ends(data: bytes, state: QuoteState, *, final: bool) -> tuple[np.ndarray, int]:
    """Offsets just past each line break of `data` that ends a record, read as Python's csv
    module reads it, and how far the scan got.

    Only quotes and line breaks are looked at, vectorised. A maximal run of k quotes changes
    the state only when k is odd: at a field start outside quotes it opens a quoted field (the
    rest pair up as escaped quotes), inside one it closes it, and elsewhere its quotes are
    text. `state` says how `data` starts and is moved to where the scan stopped: unless
    `final`, a last byte whose meaning depends on the next one (a CR that may start a CRLF, the
    odd quote of a trailing run) is left for the next scan, which starts at the returned stop.
    """
    size = len(data)
    view = np.frombuffer(data, dtype=np.uint8)
    stop = size
    inside_after = last_quote = None
    trailing_run_opens = None
    if data.find(b'"') >= 0:
        quotes = np.flatnonzero(view == QUOTE)
        gaps = np.flatnonzero(np.diff(quotes) != 1) + 1
        run_first = quotes[np.concatenate(([0], gaps))]
        run_last = quotes[np.concatenate((gaps - 1, [quotes.size - 1]))]
        odd = (run_last - run_first) % 2 == 0
        before_run = view[np.maximum(run_first - 1, 0)]
        opens = (before_run == COMMA) | (before_run == LF) | (before_run == CR)
        if run_first[0] == 0:
            opens[0] = state.at_field_start
        if run_last[-1] == size - 1:
            trailing_run_opens = bool(opens[-1])
            if not final and odd[-1]:
                stop, odd[-1] = size - 1, False  # what is left of the run is even: it changes nothing
        at_start, last_quote = opens[odd], run_last[odd]
        if last_quote.size:
            toggles = np.cumsum(at_start)
            position = np.arange(last_quote.size)
            last_reset = np.maximum.accumulate(np.where(at_start, -1, position))
            since_reset = toggles - np.where(last_reset >= 0, toggles[np.maximum(last_reset, 0)], 0)
            inside_after = np.where(last_reset >= 0, False, state.in_quotes) ^ (since_reset % 2 == 1)
    if not final and stop == size and size and data[-1] == CR:
        stop = size - 1
    ends = np.flatnonzero(view[:stop] == LF)
    if data.find(b"\r", 0, stop) >= 0:
        returns = np.flatnonzero(view[:stop] == CR)
        following = returns + 1
        lone = returns[(following >= size) | (view[np.minimum(following, size - 1)] != LF)]
        ends = np.union1d(ends, lone)
    ends = ends + 1
    if inside_after is not None:
        before = np.searchsorted(last_quote, ends - 1) - 1  # the last odd run ending before each line break
        inside = np.where(before >= 0, inside_after[np.maximum(before, 0)], state.in_quotes)
        ends = ends[~inside]
        state.in_quotes = bool(inside_after[-1])
    elif state.in_quotes:
        ends = ends[:0]
    if trailing_run_opens is not None:
        state.at_field_start = trailing_run_opens  # the run may go on in the next data
    elif stop:
        state.at_field_start = data[stop - 1] in (COMMA, LF, CR)
    return ends, stop


def line_ending_length(data: bytes, end: int) -> int:
    """Bytes of the line break that ends data[:end]: 2 for CRLF, 1 for LF or CR, else 0."""
    if end and data[end - 1] == LF:
        return 2 if end > 1 and data[end - 2] == CR else 1
    return 1 if end and data[end - 1] == CR else 0


def count_line_breaks(data: bytes) -> int:
    """Physical line breaks as a CSV parser sees them: LF, CRLF and a lone CR."""
    line_feeds = data.count(b"\n")
    if data.find(b"\r") < 0:  # one memchr: most files hold no CR at all
        return line_feeds
    return line_feeds + data.count(b"\r") - data.count(b"\r\n")
