"""Many exposures in one process: read ahead, calibrate, write behind.

A reader thread opens and checks the next exposures (ASDF parse and lz4 decompression)
while the current one is calibrated; a writer thread compresses and saves finished
products, all of one input together.  Queues of fixed depth bound memory to a few
exposures.  A file that fails is reported and skipped; the others complete.  Each file
goes through the phases of the unit of work (:mod:`gpucal.work`) and ends as one
:class:`~gpucal.work.FileRecord`.  An interrupt stops the batch within seconds (see
:func:`run_batch`).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucal import work
from gpucal.work import FileRecord

__all__ = ["BatchResult", "Interrupted", "run_batch", "expand_inputs", "list_files", "interrupt_signal"]

log = logging.getLogger(__name__)

_LIST_SUFFIXES = (".txt", ".lst", ".list")
_DONE = object()


@dataclass
class BatchResult:
    """The records of a batch, in input order, and its wall time (s)."""

    outcomes: list[FileRecord]
    wall_seconds: float
    #: the signal that stopped the batch, or None
    interrupted: int | None = None
    #: inputs an interrupt left without a record (abandoned, or never started)
    not_done: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[FileRecord]:
        return [o for o in self.outcomes if o.status == work.FAILED]

    @property
    def done(self) -> list[FileRecord]:
        return [o for o in self.outcomes if o.status in (work.DONE, work.SKIPPED)]


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


def list_files(inputs: Iterable[str]) -> list[str]:
    """The list files among ``inputs`` (expanded by :func:`expand_inputs`)."""
    return [item for item in inputs if Path(item).suffix.lower() in _LIST_SUFFIXES and Path(item).is_file()]


def interrupt_signal(exc: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (SIGINT unless it says otherwise)."""
    return int(getattr(exc, "signum", signal.SIGINT))


class Interrupted(KeyboardInterrupt):
    """A KeyboardInterrupt raised for a signal other than SIGINT (``strun`` raises it on SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def run_batch(
    inputs: Sequence[str],
    make_step: Callable[[], Any],
    *,
    read_ahead: int = 1,
    checksum: bool = False,
    on_done: Callable[[FileRecord], None] | None = None,
    save: bool = True,
    kept: dict[str, Any] | None = None,
    report_interrupt: bool = False,
) -> BatchResult:
    """Calibrate ``inputs`` with steps from ``make_step`` (one fresh step per file).

    The phases of :mod:`gpucal.work` overlap across consecutive files: a reader thread
    runs :func:`~gpucal.work.start` ahead, this thread :func:`~gpucal.work.compute`, a
    writer thread :func:`~gpucal.work.finish` (which commits each input's products
    together, :mod:`gpucal.products`).  The step must save nothing itself (see
    :func:`~gpucal.work.new_step`).  ``checksum`` records each input's SHA-256 (for a
    ledger).  No product may replace any of ``inputs``.  With ``save`` False only what
    the steps save themselves is written; ``kept`` (a dict) receives each calibrated model
    by input path (the Python API's association input returns them).

    On SIGINT/SIGTERM (a KeyboardInterrupt in this thread) the input being calibrated is
    abandoned (its staged products dropped), inputs already handed to the writer are
    finished, nothing else starts and the reader stops (it never blocks on a full queue);
    then the KeyboardInterrupt goes on, or, with ``report_interrupt`` (``strun``), the
    result holds the signal and the inputs not done.
    """
    start_time = time.perf_counter()
    records: dict[str, FileRecord] = {}
    ready: queue.Queue[Any] = queue.Queue(maxsize=max(1, read_ahead))
    finished: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()
    protected = [Path(p) for p in inputs]

    def done(record: FileRecord) -> None:
        records[record.input] = record
        if on_done is not None:
            on_done(record)

    def offer(item: Any) -> bool:
        """Hand ``item`` to the main thread unless the batch stops meanwhile."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        for path in inputs:
            if stop.is_set():
                return
            try:
                step = make_step()
                step.commit_on_run = False  # the writer saves and commits
                step.protected = protected
                item: tuple[str, Any, BaseException | None] = (path, work.start(path, step, checksum=checksum), None)
            except BaseException as exc:  # reported per file, never kills the batch
                item = (path, None, exc)
            if not offer(item):
                return
        offer(_DONE)

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
    interrupted: int | None = None
    stopped_by: KeyboardInterrupt | None = None
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                break
            path, job, error = item
            if error is None:
                try:
                    work.compute(job)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:
                    error = exc
                else:
                    try:
                        finished.put(job)
                    except KeyboardInterrupt:  # not handed over: abandoned with the rest
                        work.abandon(job)
                        raise
                    continue
            done(work.failed_record(job or path, error))
    except KeyboardInterrupt as exc:
        stopped_by, interrupted = exc, interrupt_signal(exc)
        log.warning("Interrupted (signal %d): finishing the products already calibrated, starting nothing new",
                    interrupted)
    finally:
        stop.set()
        finished.put(_DONE)  # after what was queued: finished inputs are written
        threads[1].join()
        threads[0].join(timeout=5)
    if stopped_by is not None and not report_interrupt:
        raise stopped_by
    return BatchResult([records[p] for p in inputs if p in records], time.perf_counter() - start_time,
                       interrupted, [p for p in inputs if p not in records])
