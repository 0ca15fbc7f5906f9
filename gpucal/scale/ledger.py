"""The run ledger: one JSON line per input and outcome, beside the outputs.

The client is the only writer: it appends a record when an input ends (done, skipped or
failed) and flushes it to disk (``fsync``) before counting the input as ended, so a killed
client loses at most the line it was writing; a torn last line is ignored on reading.
The last line about an input wins.  An output counts as complete only when its file is in
place under its final name and its record says so (:func:`gpucal.work.incomplete_reason`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from gpucal.work import FileRecord

__all__ = ["LEDGER_NAME", "Ledger"]

log = logging.getLogger(__name__)

LEDGER_NAME = "gpucal_ledger.jsonl"


class Ledger:
    """Append-only JSON Lines file of :class:`~gpucal.work.FileRecord`."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._tail_checked = False

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of each input (by absolute path); torn or foreign lines skipped."""
        out: dict[str, dict[str, Any]] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return out
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: unreadable ledger line ignored (a run killed while writing it?)",
                            self.path, lineno)
                continue
            if isinstance(record, dict) and isinstance(record.get("input"), str):
                out[record["input"]] = record
        return out

    def append(self, record: FileRecord) -> None:
        """Add one record and make it durable before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = record.to_json() + "\n"
        with open(self.path, "ab") as fh:
            if not self._tail_checked:  # a torn last line must not swallow this record
                self._tail_checked = True
                if fh.tell() and not _ends_with_newline(self.path):
                    line = "\n" + line
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
