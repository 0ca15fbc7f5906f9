"""Block-parallel lz4 for gpucal's own ASDF reads and writes.

asdf's builtin ``lz4`` compressor cuts an array into 4 MiB pieces and (de)compresses
them one after the other in the calling thread; ``lz4.block`` releases the GIL, so the
pieces can be done on a thread pool.  :class:`ParallelLz4` writes and reads exactly
asdf's stream (per piece: a 4-byte big-endian length, then ``lz4.block.compress`` output
with its 4-byte little-endian stored size; same piece size, same ``lz4.block`` arguments),
so files are byte-identical to asdf's and readable by any asdf.

Scope.  asdf picks a compressor per block through ``asdf._compression._get_compressor``.
An :class:`asdf.extension.Extension` providing an ``lz4`` compressor would take precedence
over the builtin one, but asdf then records that extension in the written file's
``history.extensions`` (every romancal/asdf reader of a gpucal product would warn that
``gpucal...`` is not installed, and the YAML differs from asdf's) and warns about two
compressors for ``lz4`` on every block.  So :func:`parallel_lz4` instead swaps
``_get_compressor`` for a dispatcher while at least one thread is inside the context
(reference counted under a lock, the original put back when the last one leaves), and the
dispatcher hands out the parallel codec only to threads inside the context (a
thread-local setting): any other asdf user in the process (romancal, another thread) gets
asdf's own compressor, as without gpucal.  Nothing stays patched outside the context.

``GPUCAL_IO_THREADS``: worker threads (default ``os.cpu_count()``); ``1`` keeps asdf's
builtin sequential codec (no dispatcher is installed).

Reading also sets asdf's ``io_block_size`` (the size of each file read while decoding a
block; asdf's default is the filesystem block, 4 KiB) to :data:`READ_CHUNK_BYTES` for
the files opened inside ``parallel_lz4(reading=True)``: asdf's decoder loops in Python
over those reads, ~65,000 of them for a full-frame uncal, which cost more than lz4 does.
That is a documented asdf option, set in a thread-local ``asdf.config_context``; it
changes no byte of what is read.

Where the time went (full-frame demo, 2-core VM; see the report of issue 6 item 3): lz4
itself is fast on these arrays (about 0.07 s to decode the 268 MB uncal, 0.04 s to
encode it); the read was asdf's 4 KiB Python read loop (0.31 s -> 0.09 s with 1 MiB
reads) and the write lost about 0.1 s to asdf's ``header + piece`` concatenation (a copy
of the whole compressed stream), which :meth:`ParallelLz4.compress` avoids by yielding the
two apart.  Threads add little there (the work is memory-bound); they pay where lz4 has
more to do (compressible data, more cores).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["ParallelLz4", "parallel_lz4", "io_threads", "ENV_THREADS", "READ_CHUNK_BYTES"]

log = logging.getLogger(__name__)

ENV_THREADS = "GPUCAL_IO_THREADS"
#: asdf ``io_block_size`` for files opened inside ``parallel_lz4(reading=True)``: 1 MiB
#: reads; larger ones were slower here (fresh allocations, and asdf reads the last
#: ``io_block_size`` bytes of a file to find its block index)
READ_CHUNK_BYTES = 1 << 20
_BLOCK_SIZE = 1 << 22  # asdf's default compression_block_size
_LEN = struct.Struct("!I")
# kwargs of lz4.block.compress that only change the payload, not the framing
_COMPRESS_KWARGS = frozenset({"mode", "acceleration", "compression", "store_size", "compression_block_size"})

_lock = threading.Lock()
_users = 0
_original_get_compressor: Any = None
_local = threading.local()
_pools: dict[int, ThreadPoolExecutor] = {}
_codecs: dict[int, ParallelLz4] = {}
_warned_env = False


def io_threads() -> int:
    """Worker threads for lz4 from ``GPUCAL_IO_THREADS`` (unset, empty or 0: cpu count)."""
    global _warned_env
    default = os.cpu_count() or 1
    raw = os.environ.get(ENV_THREADS, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
        if value < 0:
            raise ValueError(raw)
    except ValueError:
        if not _warned_env:
            _warned_env = True
            log.warning("ignoring %s=%r (not a whole number >= 0); using %d threads", ENV_THREADS, raw, default)
        return default
    return value or default


def _pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpucal-lz4")
        return pool


def _forget_pools() -> None:
    # a forked child has the pool objects but not their threads: start afresh
    global _lock, _users
    _pools.clear()
    _codecs.clear()
    _lock = threading.Lock()
    _users = 0


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pools)


def _builtin() -> Any:
    from asdf import _compression

    return _compression.Lz4Compressor()


def _decode_into(payload: Any, dst: np.ndarray, start: int, size: int, offset: int) -> None:
    import lz4.block

    try:
        raw = lz4.block.decompress(payload)
    except Exception as exc:  # LZ4BlockError, or MemoryError on a corrupt size field
        raise ValueError(f"corrupt lz4 block at byte {offset} of the compressed stream: {exc}") from None
    if len(raw) != size:
        raise ValueError(f"corrupt lz4 block at byte {offset}: {len(raw)} bytes decoded, {size} expected")
    dst[start : start + size] = np.frombuffer(raw, dtype=np.uint8)  # numpy releases the GIL to copy


class ParallelLz4:
    """asdf's lz4 stream, each 4 MiB piece (de)compressed on a thread pool.

    Same interface as asdf's ``Lz4Compressor`` (``compress`` yields the stream in pieces,
    ``decompress`` fills ``out`` and returns the byte count); with one worker, or
    arguments it does not know, it hands over to asdf's own compressor.
    """

    label = b"lz4"

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._inflight = 2 * self.workers  # pieces queued ahead: bounds memory

    # -- writing -----------------------------------------------------------------
    def compress(self, data: Any, **kwargs: Any) -> Iterator[bytes]:
        block_size = kwargs.get("compression_block_size", _BLOCK_SIZE)
        itemsize = getattr(data, "itemsize", 0)
        if (
            self.workers <= 1
            or not set(kwargs) <= _COMPRESS_KWARGS
            or not isinstance(block_size, int)
            or not itemsize
            or block_size // itemsize <= 0
        ):
            yield from _builtin().compress(data, **kwargs)
            return
        import lz4.block

        kwargs = dict(kwargs)
        kwargs["mode"] = kwargs.get("mode", "default")
        kwargs.pop("compression_block_size", None)
        nelem = block_size // itemsize
        total = len(data)
        if total <= nelem:  # one piece: no thread hand-off
            for i in range(0, total, nelem):
                out = lz4.block.compress(data[i : i + nelem], **kwargs)
                yield _LEN.pack(len(out))
                yield out
            return
        pool = _pool(self.workers)
        pending: collections.deque[Future[bytes]] = collections.deque()
        try:
            for i in range(0, total, nelem):
                pending.append(pool.submit(lz4.block.compress, data[i : i + nelem], **kwargs))
                if len(pending) >= self._inflight:
                    out = pending.popleft().result()
                    yield _LEN.pack(len(out))
                    yield out
            while pending:
                out = pending.popleft().result()
                yield _LEN.pack(len(out))
                yield out
        finally:
            _drain(pending)

    # -- reading -----------------------------------------------------------------
    def decompress(self, blocks: Iterable[Any], out: Any, **kwargs: Any) -> int:
        if self.workers <= 1 or kwargs:
            return int(_builtin().decompress(blocks, out, **kwargs))
        dst = np.frombuffer(out, dtype=np.uint8)
        if not dst.flags.writeable:
            return int(_builtin().decompress(blocks, out, **kwargs))
        n_out = dst.size
        # largest piece lz4 can emit for <= n_out bytes (LZ4_compressBound) + stored size
        max_piece = n_out + n_out // 255 + 16 + 4
        pool = _pool(self.workers)
        pending: collections.deque[Future[None]] = collections.deque()
        written = 0  # bytes of ``out`` claimed by pieces so far
        consumed = 0  # bytes of the compressed stream parsed so far
        head = bytearray()  # a length field split across chunks
        piece: np.ndarray | None = None  # a piece split across chunks, being assembled
        piece_at = piece_fill = 0

        def submit(payload: Any, at: int) -> None:
            nonlocal written
            if len(payload) < 5:
                raise ValueError(f"corrupt lz4 stream: a {len(payload)}-byte piece at byte {at}")
            size = int.from_bytes(bytes(payload[:4]), "little")
            if size == 0 or written + size > n_out:
                raise ValueError(
                    f"corrupt lz4 stream: the piece at byte {at} decodes to {size} bytes, "
                    f"{n_out - written} of the block's {n_out} remain"
                )
            pending.append(pool.submit(_decode_into, payload, dst, written, size, at))
            written += size
            while len(pending) > self._inflight:
                pending.popleft().result()

        try:
            for chunk in blocks:
                view = memoryview(chunk).cast("B")
                while len(view):
                    if piece is None:
                        if head or len(view) < 4:
                            got = view[: 4 - len(head)]
                            head += got
                            view = view[len(got) :]
                            consumed += len(got)
                            if len(head) < 4:
                                break
                            (length,) = _LEN.unpack(head)
                            head.clear()
                        else:
                            (length,) = _LEN.unpack(view[:4])
                            view = view[4:]
                            consumed += 4
                        if length < 5 or length > max_piece:
                            raise ValueError(
                                f"corrupt lz4 stream: piece length {length} at byte {consumed - 4} "
                                f"(the block holds {n_out} bytes)"
                            )
                        if len(view) >= length:  # whole piece in this chunk: no copy
                            submit(view[:length], consumed)
                            view = view[length:]
                            consumed += length
                        else:
                            piece = np.empty(length, dtype=np.uint8)
                            piece_at, piece_fill = consumed, 0
                    else:
                        take = min(piece.size - piece_fill, len(view))
                        piece[piece_fill : piece_fill + take] = np.frombuffer(view[:take], dtype=np.uint8)
                        piece_fill += take
                        view = view[take:]
                        consumed += take
                        if piece_fill == piece.size:
                            submit(piece.data, piece_at)
                            piece = None
            if piece is not None or head:
                raise ValueError(
                    f"truncated lz4 stream: it ends inside a piece after {consumed} bytes ({written} of {n_out} decoded)"
                )
            while pending:
                pending.popleft().result()
        finally:
            _drain(pending)
        if written != n_out:
            raise ValueError(f"truncated lz4 stream: {written} of the block's {n_out} bytes decoded")
        return written


def _drain(pending: collections.deque[Any]) -> None:
    """Cancel what has not started and wait for the rest (no worker outlives the call)."""
    for fut in pending:
        fut.cancel()
    for fut in pending:
        if not fut.cancelled():
            with contextlib.suppress(BaseException):
                fut.result()
    pending.clear()


def _codec(workers: int) -> ParallelLz4:
    codec = _codecs.get(workers)
    if codec is None:
        codec = _codecs.setdefault(workers, ParallelLz4(workers))
    return codec


def _dispatch(label: str) -> Any:
    """Stands in for ``asdf._compression._get_compressor`` while the context is in use."""
    workers = getattr(_local, "workers", 0)
    if label == "lz4" and workers > 1:
        return _codec(workers)
    return _original_get_compressor(label)


def _install() -> bool:
    global _users, _original_get_compressor
    try:
        from asdf import _compression
    except ImportError:  # pragma: no cover - asdf is a dependency
        return False
    with _lock:
        current = getattr(_compression, "_get_compressor", None)
        if current is None or not hasattr(_compression, "Lz4Compressor"):
            return False  # an asdf whose internals moved: keep its own codec
        if _users == 0 and current is not _dispatch:
            _original_get_compressor = current
            _compression._get_compressor = _dispatch
        _users += 1
        return True


def _uninstall() -> None:
    global _users
    from asdf import _compression

    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and getattr(_compression, "_get_compressor", None) is _dispatch:
            _compression._get_compressor = _original_get_compressor


@contextlib.contextmanager
def parallel_lz4(*, reading: bool = False) -> Iterator[None]:
    """Use the block-parallel lz4 codec for ASDF blocks read or written in this thread.

    ``reading=True`` also sets asdf's ``io_block_size`` to :data:`READ_CHUNK_BYTES` (in
    a thread-local ``asdf.config_context``) for files opened inside, whatever the number
    of threads.  With ``GPUCAL_IO_THREADS=1`` (or one CPU) asdf's own codec is used.
    """
    with contextlib.ExitStack() as stack:
        if reading:
            import asdf

            cfg = stack.enter_context(asdf.config_context())
            cfg.io_block_size = READ_CHUNK_BYTES
        workers = io_threads()
        if workers > 1 and _lz4_available() and _install():
            stack.callback(_uninstall)
            previous = getattr(_local, "workers", 0)
            _local.workers = workers
            stack.callback(setattr, _local, "workers", previous)
        yield


def _lz4_available() -> bool:
    try:
        import lz4.block  # noqa: F401
    except ImportError:
        return False
    return True
