"""How values read on the page: every text HTML-escaped, times in UTC, changes signed."""

from __future__ import annotations

import html
from datetime import datetime

from gdx_pipeline.core.warehouse import as_utc


def utc_time(value: datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def escaped(value: object) -> str:
    return html.escape(str(value), quote=True)


def change_text(current: float, previous: float) -> str:
    difference = current - previous
    if difference == 0:
        return "no change"
    return f"{difference:+,.0f}" if float(difference).is_integer() else f"{difference:+,.2f}"
