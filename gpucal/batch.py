"""Many exposures in one process: read ahead, calibrate, write behind.

A reader thread opens and checks the next exposures (ASDF parse and lz4 decompression)
while the current one is calibrated; a writer thread compresses and saves finished
products.  Queues of fixed depth bound memory to a few exposures.  A file that fails is
reported and skipped; the others complete.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucal.errors import GpucalError

__all__ = ["BatchResult", "FileOutcome", "run_batch", "expand_inputs"]

log = logging.getLogger(__name__)

_LIST_SUFFIXES = (".txt", ".lst", ".list")
_DONE = object()


@dataclass
class FileOutcome:
    """What happened to one input."""

    path: str
    status: int = 0
    error: str | None = None
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class BatchResult:
    outcomes: list[FileOutcome]
    wall_seconds: float

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status]


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


def _exit_code(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, GpucalError) else 1


def run_batch(
    inputs: Sequence[str],
    make_step: Callable[[], Any],
    *,
    read_ahead: int = 1,
    on_done: Callable[[FileOutcome], None] | None = None,
) -> BatchResult:
    """Calibrate ``inputs`` with steps from ``make_step`` (one fresh step per file).

    The step must save nothing itself (``save_results`` off); products are written by
    the writer thread through ``step.save``.
    """
    from gpucal.io import open_model

    start = time.perf_counter()
    outcomes = {path: FileOutcome(path) for path in inputs}
    ready: queue.Queue[Any] = queue.Queue(maxsize=max(1, read_ahead))
    finished: queue.Queue[Any] = queue.Queue(maxsize=1)

    def reader() -> None:
        for path in inputs:
            try:
                ready.put((path, open_model(path), None))
            except BaseException as exc:  # reported per file, never kills the batch
                ready.put((path, None, exc))
        ready.put(_DONE)

    def writer() -> None:
        while True:
            item = finished.get()
            if item is _DONE:
                return
            path, step, model, t0 = item
            outcome = outcomes[path]
            try:
                outcome.outputs.append(step.save(model))
            except BaseException as exc:
                outcome.status, outcome.error = _exit_code(exc), f"{path}: {exc}"
            outcome.seconds = time.perf_counter() - t0
            if on_done is not None:
                on_done(outcome)

    threads = [threading.Thread(target=reader, name="gpucal-reader", daemon=True),
               threading.Thread(target=writer, name="gpucal-writer", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                break
            path, model, error = item
            t0 = time.perf_counter()
            outcome = outcomes[path]
            if error is None:
                step = make_step()
                step.input_path = path
                try:
                    result = step.run(model)
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    error = exc
                else:
                    finished.put((path, step, result, t0))
                    continue
            outcome.status = _exit_code(error)
            outcome.error = str(error) if isinstance(error, GpucalError) else f"{path}: {type(error).__name__}: {error}"
            log.error("%s", outcome.error)
            log.debug("%s failed", path, exc_info=error)
            outcome.seconds = time.perf_counter() - t0
            if on_done is not None:
                on_done(outcome)
    finally:
        finished.put(_DONE)
        for thread in threads:
            thread.join(timeout=3600)
    return BatchResult([outcomes[p] for p in inputs], time.perf_counter() - start)
