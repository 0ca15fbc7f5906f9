"""Capturing a run's log records for ``meta.cal_logs`` (romancal's line format)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

__all__ = ["capture_cal_logs", "LOGGER_NAMES"]

LOGGER_NAMES = ("gpucal", "cpu_fallback", "CRDS")


class _CalLogFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines
        self.setFormatter(_CalLogFormatter("%(asctime)s :: %(name)s :: %(levelname)s :: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # never let logging break a run
            self.handleError(record)


@contextlib.contextmanager
def capture_cal_logs() -> Iterator[list[str]]:
    """Collect INFO+ records of gpucal's loggers into a list while the block runs."""
    lines: list[str] = []
    handler = _ListHandler(lines)
    loggers = [logging.getLogger(name) for name in LOGGER_NAMES]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
