"""The logger that core functions report progress to: Dagster's `context.log` or a `logging.Logger`."""

from __future__ import annotations

from typing import Protocol


class Logger(Protocol):
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...
