"""Many exposures in one process: read ahead, calibrate, write behind.

A reader thread opens and checks the next exposures (ASDF parse and lz4 decompression)
while the current one is calibrated; a writer thread compresses and saves finished
products.  Queues of fixed depth bound memory to a few exposures.  A file that fails is
reported and skipped; the others complete.  Each file goes through the phases of the unit
of work (:mod:`gpucal.work`) and ends as one :class:`~gpucal.work.FileRecord`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpucal import work
from gpucal.work import FileRecord

__all__ = ["BatchResult", "run_batch", "expand_inputs"]

log = logging.getLogger(__name__)

_LIST_SUFFIXES = (".txt", ".lst", ".list")
_DONE = object()


@dataclass
class BatchResult:
    """The records of a batch, in input order, and its wall time (s)."""

    outcomes: list[FileRecord]
    wall_seconds: float

    @property
    def failed(self) -> list[FileRecord]:
        return [o for o in self.outcomes if o.status == work.FAILED]


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    """Inputs with list files (``.txt``/``.lst``/``.list``: one path a line, ``#`` comments)
    replaced by their entries; relative entries are relative to the list file."""
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() in _LIST_SUFFIXES and path.is_file():
            for line in path.read_text().splitlines():
                entry = line.split("#", 1)[0].strip()
                if entry:
                    out.append(str(path.parent / entry) if not Path(entry).is_absolute() else entry)
        else:
            out.append(item)
    return out


def run_batch(
    inputs: Sequence[str],
    make_step: Callable[[], Any],
    *,
    read_ahead: int = 1,
    checksum: bool = False,
    on_done: Callable[[FileRecord], None] | None = None,
    save: bool = True,
    kept: dict[str, Any] | None = None,
) -> BatchResult:
    """Calibrate ``inputs`` with steps from ``make_step`` (one fresh step per file).

    The phases of :mod:`gpucal.work` overlap across consecutive files: a reader thread
    runs :func:`~gpucal.work.start` ahead, this thread :func:`~gpucal.work.compute`, a
    writer thread :func:`~gpucal.work.finish`.  The step must save nothing itself
    (``save_results`` off, see :func:`~gpucal.work.new_step`).  ``checksum`` records each
    input's SHA-256 (for a ledger).  With ``save`` False nothing is written; ``kept``
    (a dict) receives each calibrated model by input path (the Python API's association
    input returns them).
    """
    start_time = time.perf_counter()
    records: dict[str, FileRecord] = {}
    ready: queue.Queue[Any] = queue.Queue(maxsize=max(1, read_ahead))
    finished: queue.Queue[Any] = queue.Queue(maxsize=1)

    def done(record: FileRecord) -> None:
        records[record.input] = record
        if on_done is not None:
            on_done(record)

    def reader() -> None:
        for path in inputs:
            try:
                ready.put((path, work.start(path, make_step(), checksum=checksum), None))
            except BaseException as exc:  # reported per file, never kills the batch
                ready.put((path, None, exc))
        ready.put(_DONE)

    def writer() -> None:
        while True:
            job = finished.get()
            if job is _DONE:
                return
            try:
                if kept is not None:
                    kept[job.record.input] = job.model
                record = work.finish(job, save=save)
            except BaseException as exc:
                record = work.failed_record(job, exc)
            done(record)

    threads = [threading.Thread(target=reader, name="gpucal-reader", daemon=True),
               threading.Thread(target=writer, name="gpucal-writer", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                break
            path, job, error = item
            if error is None:
                try:
                    work.compute(job)
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    error = exc
                else:
                    finished.put(job)
                    continue
            done(work.failed_record(job or path, error))
    finally:
        finished.put(_DONE)
        for thread in threads:
            thread.join(timeout=3600)
    return BatchResult([records[p] for p in inputs], time.perf_counter() - start_time)
