"""ASDF block checksums, verified on read, and eager loading with file-naming errors.

Every ASDF block header holds a 16-byte checksum: the MD5 of the block's *used* data,
i.e. the bytes as stored (for an lz4 block, the compressed stream; asdf computes it on
write over the compressor's output, and its own ``validate_checksums`` read option
hashes the compressed bytes before decoding).  So one flipped bit anywhere in a stored
block changes the MD5, even when the damaged lz4 stream still decodes to the right
length (and to wrong pixels).

asdf checks checksums only when asked (``validate_checksums=True``), and then reads the
whole compressed block into memory, hashes it, and only then decodes it, all in the
calling thread.  :func:`verified_blocks` instead hashes the stored bytes *as they stream
past* the decoder: inside :func:`gpucal.asdf_lz4.parallel_lz4` the calling thread reads
and hashes 1 MiB chunks (``hashlib`` releases the GIL) while the pool decodes the lz4
pieces already read, so the MD5 runs beside the decoding rather than before it.  No
extra copy of the compressed block is made.  Uncompressed blocks are hashed after
reading.  A block without a checksum (all zero; asdf writes one by default) cannot be
checked and is read as is.

The check is on by default; ``GPUCAL_VERIFY_CHECKSUMS=0`` (``strun --no-verify-checksums``
sets it for the run) turns it off.

Mechanics: while at least one thread is inside :func:`verified_blocks`, asdf's
``asdf._block.io.read_block_data`` (which every block read, lazy or not, goes through) is
replaced by a dispatcher; only threads inside the context (a thread-local flag) get the
checking reader, everyone else asdf's own function.  The original is put back when the
last thread leaves, as :mod:`gpucal.asdf_lz4` does for the compressor.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "ENV_VERIFY",
    "BlockChecksumError",
    "verify_enabled",
    "verified_blocks",
    "checksums_default",
    "ArrayReadError",
    "tree_arrays",
    "array_block",
    "load_arrays",
]

log = logging.getLogger(__name__)

ENV_VERIFY = "GPUCAL_VERIFY_CHECKSUMS"
_OFF = {"0", "false", "no", "off", "n", "f"}
_ON = {"", "1", "true", "yes", "on", "y", "t"}

#: blocks at least this large are hashed in a thread of their own, beside the decoding
_THREADED_HASH_BYTES = 8 << 20
#: chunks (1 MiB reads) queued for that thread at most
_HASH_QUEUE_CHUNKS = 32

_lock = threading.Lock()
_users = 0
_original: Any = None
_local = threading.local()
_warned_env = False


class BlockChecksumError(ValueError):
    """A block's stored bytes do not match the MD5 checksum in its header.

    Attributes
    ----------
    offset : int
        Byte offset of the block's data in the file.
    """

    def __init__(self, offset: int, expected: bytes, computed: bytes) -> None:
        self.offset = offset
        super().__init__(
            f"the block data at byte {offset} do not match the block's MD5 checksum "
            f"(stored {expected.hex()}, computed {computed.hex()})"
        )


def verify_enabled() -> bool:
    """Whether block checksums are verified: this thread's :func:`checksums_default`, else
    ``GPUCAL_VERIFY_CHECKSUMS`` (default on)."""
    global _warned_env
    chosen = getattr(_local, "default", None)
    if chosen is not None:
        return bool(chosen)
    raw = os.environ.get(ENV_VERIFY, "").strip().lower()
    if raw in _OFF:
        return False
    if raw not in _ON and not _warned_env:
        _warned_env = True
        log.warning("ignoring %s=%r (not 0/1, true/false, yes/no, on/off); verifying checksums", ENV_VERIFY, raw)
    return True


def _md5() -> Any:
    return hashlib.new("md5", usedforsecurity=False)  # a checksum, not security


class _HashingReader:
    """Hands asdf's decompressor the block's chunks and hashes them on the way.

    For a large block the MD5 runs in a thread of its own (``hashlib`` releases the GIL),
    fed the chunks in order through a bounded queue, so hashing overlaps the file reads
    and the lz4 decoding instead of adding to them; a small block is hashed inline.
    """

    def __init__(self, fd: Any, size: int) -> None:
        self._fd = fd
        self._hasher = _md5()
        self.consumed = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if size >= _THREADED_HASH_BYTES:
            self._queue = queue.Queue(maxsize=_HASH_QUEUE_CHUNKS)  # bounds the chunks held
            self._thread = threading.Thread(target=self._run, name="gpucal-md5", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is None:
                try:
                    self._hasher.update(chunk)
                except BaseException as exc:  # pragma: no cover - hashlib does not fail on bytes
                    self._error = exc

    def _take(self, chunk: bytes) -> None:
        if self._queue is not None:
            self._queue.put(chunk)
        else:
            self._hasher.update(chunk)
        self.consumed += len(chunk)

    def read_blocks(self, size: int) -> Iterator[bytes]:
        for chunk in self._fd.read_blocks(size):
            self._take(chunk)  # ``read`` returns a new bytes object: safe to hand over
            yield chunk

    def finish(self, size: int) -> None:
        """Hash the rest of the block after the decoder gave up on it."""
        left = size - self.consumed
        if left > 0:
            for chunk in self._fd.read_blocks(left):
                if not chunk:
                    break
                self._take(chunk)

    def close(self) -> None:
        """Stop the hashing thread (waits for the chunks already queued)."""
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def digest(self) -> bytes:
        self.close()
        if self._error is not None:
            raise self._error
        return self._hasher.digest()


def _read_block_data(fd: Any, header: Any, validate_checksum: bool, offset: int | None = None,
                     memmap: bool = False) -> Any:
    """Stands in for ``asdf._block.io.read_block_data`` while :func:`verified_blocks` is in use."""
    original = _original
    expected = bytes(header["checksum"])
    from asdf import constants

    if (
        not getattr(_local, "verify", False)
        or not any(expected)
        or header["flags"] & constants.BLOCK_FLAG_STREAMED
        or not fd.seekable()
    ):
        return original(fd, header, validate_checksum, offset=offset, memmap=memmap)
    from asdf import _compression

    start = fd.tell() if offset is None else offset
    compression = _compression.validate(header["compression"])
    if not compression:
        data = original(fd, header, False, offset=offset, memmap=memmap)
        hasher = _md5()
        hasher.update(np.asarray(data).data)
        computed = hasher.digest()
        failure: BaseException | None = None
    else:
        fd.seek(start)
        used = int(header["used_size"])
        reader = _HashingReader(fd, used)
        failure = None
        try:
            try:
                data = _compression.decompress(reader, used, int(header["data_size"]), compression)
            except Exception as exc:  # a damaged stream: the checksum says whether the file is to blame
                failure = exc
                reader.finish(used)
            if reader.consumed < used:  # the file ends inside the block: say so, not "checksum"
                raise ValueError(
                    f"the file ends inside the block at byte {start} ({reader.consumed} of its {used} bytes present)"
                )
            fd.fast_forward(int(header["allocated_size"]) - used)
            computed = reader.digest()
        finally:
            reader.close()
    if computed != expected:
        raise BlockChecksumError(start, expected, computed)
    if failure is not None:
        raise failure
    return data


def _install() -> bool:
    global _users, _original
    try:
        from asdf._block import io as block_io
    except ImportError:  # pragma: no cover - an asdf whose internals moved
        return False
    with _lock:
        current = getattr(block_io, "read_block_data", None)
        if current is None:
            return False
        if _users == 0 and current is not _read_block_data:
            _original = current
            block_io.read_block_data = _read_block_data
        _users += 1
        return True


def _uninstall() -> None:
    global _users
    from asdf._block import io as block_io

    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and getattr(block_io, "read_block_data", None) is _read_block_data:
            block_io.read_block_data = _original


def _forget() -> None:
    # a forked child has no thread inside the context
    global _lock, _users
    _lock = threading.Lock()
    _users = 0


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget)


@contextlib.contextmanager
def checksums_default(enabled: bool) -> Iterator[None]:
    """Verify block checksums or not in this thread, whatever the environment says.

    For code that runs where the user's environment does not reach (a Dask worker runs
    each task with the client's choice).
    """
    previous = getattr(_local, "default", None)
    _local.default = bool(enabled)
    try:
        yield
    finally:
        _local.default = previous


@contextlib.contextmanager
def verified_blocks(enabled: bool | None = None) -> Iterator[bool]:
    """Verify the checksum of every ASDF block this thread reads inside the context.

    Parameters
    ----------
    enabled : bool, optional
        Check or not; ``None`` (default) follows ``GPUCAL_VERIFY_CHECKSUMS``.

    Yields
    ------
    bool
        Whether blocks are being checked (``False`` also where asdf's internals moved).

    Raises
    ------
    BlockChecksumError
        From a block read inside the context whose stored bytes do not match its checksum.
    """
    on = verify_enabled() if enabled is None else bool(enabled)
    if not on or not _install():
        yield False
        return
    previous = getattr(_local, "verify", False)
    _local.verify = True
    try:
        yield True
    finally:
        _local.verify = previous
        _uninstall()


def tree_arrays(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, array) for every ndarray-like node under ``node`` (dicts and lists walked).

    ``path`` names the array as in the tree (``data``, ``inl_table/science_channel_01/...``).
    """
    if hasattr(node, "shape") and hasattr(node, "dtype"):
        yield path, node
        return
    if isinstance(node, str | bytes):
        return
    items: Any
    if hasattr(node, "items") and callable(node.items):
        items = node.items()
    elif isinstance(node, list | tuple):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        if path == "" and key == "meta":
            continue  # metadata holds no science arrays worth a block read
        yield from tree_arrays(value, f"{path}/{key}" if path else str(key))


def array_block(array: Any) -> int | None:
    """The ASDF block index an unloaded array is read from (``None`` if unknown)."""
    source = getattr(array, "_source", None)
    return source if isinstance(source, int) else None


class ArrayReadError(ValueError):
    """An array of an ASDF file could not be read: the array, its block and why, in one line."""

    def __init__(self, name: str, block: int | None, cause: BaseException) -> None:
        self.name, self.block, self.cause = name, block, cause
        where = f"ASDF block {block} (array '{name}')" if block is not None else f"array '{name}'"
        if isinstance(cause, BlockChecksumError):
            text = f"{where} fails its checksum, the file is corrupt: {cause}"
        else:
            first = (str(cause).strip().splitlines() or [""])[0]
            reason = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
            text = f"{where} cannot be read (truncated or corrupt?): {reason}"
        super().__init__(text)


def load_arrays(tree: Any) -> dict[str, np.ndarray]:
    """Read every array under ``tree`` now (checked, if inside :func:`verified_blocks`).

    Returns
    -------
    dict
        Tree path -> the loaded ndarray (asdf also keeps it in the tree's array node).

    Raises
    ------
    ArrayReadError
        The first array that cannot be read, with its block index and the cause.
    """
    loaded: dict[str, np.ndarray] = {}
    for name, array in list(tree_arrays(tree)):
        try:
            loaded[name] = np.asarray(array)
        except Exception as exc:  # asdf and the codecs raise many types for damaged blocks
            raise ArrayReadError(name, array_block(array), exc) from None
    return loaded
