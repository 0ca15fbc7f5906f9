"""gpucal's block-parallel lz4 (gpucal.asdf_lz4): asdf's exact stream, scoped to gpucal's I/O."""

from __future__ import annotations

import io
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asdf
import numpy as np
import pytest
import roman_datamodels.datamodels as rdm
from asdf import _compression
from astropy.time import Time

from gpucal import asdf_lz4
from gpucal.asdf_lz4 import ParallelLz4, parallel_lz4
from gpucal.errors import InputFileError
from gpucal.io import open_model, write_model

PIECE = 1 << 22  # asdf's lz4 compression_block_size
BLOCK_MAGIC = b"\xd3BLK"


def _builtin_stream(data: np.ndarray, **kwargs) -> bytes:
    return b"".join(_compression.Lz4Compressor().compress(data, **kwargs))


def _parallel_stream(data: np.ndarray, workers: int = 4, **kwargs) -> bytes:
    return b"".join(bytes(piece) for piece in ParallelLz4(workers).compress(data, **kwargs))


def _chunks(buf: bytes, sizes) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(buf):
        n = sizes[i % len(sizes)]
        out.append(buf[pos : pos + n])
        pos += n
        i += 1
    return out


def _decode(stream: bytes, nbytes: int, chunks, workers: int = 4) -> np.ndarray:
    out = np.empty(nbytes, np.uint8)
    n = ParallelLz4(workers).decompress(iter(_chunks(stream, chunks)), out.data)
    assert n == nbytes
    return out


def _payloads(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "random": np.frombuffer(rng.bytes(n), np.uint8).copy(),
        "smooth": (np.arange(n, dtype=np.int64) // 7 % 251).astype(np.uint8),
        "zeros": np.zeros(n, np.uint8),
    }


@pytest.mark.parametrize("nbytes", [0, 1, 17, 4093, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE + 123_457])
def test_stream_identical_to_asdf_and_round_trips(nbytes):
    for kind, data in _payloads(nbytes, nbytes).items():
        ref = _builtin_stream(data)
        assert _parallel_stream(data) == ref, kind
        # asdf reads files in filesystem blocks (4 KiB), gpucal in 1 MiB; odd sizes split
        # the 4-byte length fields and the pieces anywhere
        for chunks in ([4096], [1 << 20], [1, 2, 3, 5, 70_001, 999_983]):
            if nbytes > PIECE and chunks[0] < 4:
                chunks = [3, 1_000_003]
            got = _decode(ref, nbytes, chunks)
            assert np.array_equal(got, data), (kind, chunks)


def test_compression_options_are_honoured():
    data = _payloads(3 * PIECE // 2 + 11, 5)["smooth"]
    for kwargs in ({"mode": "high_compression", "compression": 9}, {"compression_block_size": 1 << 19}):
        ref = _builtin_stream(data, **kwargs)
        assert _parallel_stream(data, **kwargs) == ref
        assert np.array_equal(_decode(ref, data.size, [1 << 20]), data)
    # a wider item size changes the piece length in elements, as in asdf
    wide = np.arange(PIECE // 2 + 3, dtype=np.uint32)
    assert _parallel_stream(wide) == _builtin_stream(wide)


def test_one_worker_is_asdfs_codec(monkeypatch):
    monkeypatch.setenv(asdf_lz4.ENV_THREADS, "1")
    original = _compression._get_compressor
    with parallel_lz4():
        assert _compression._get_compressor is original
        assert isinstance(_compression._get_compressor("lz4"), _compression.Lz4Compressor)


def test_scoped_to_the_thread_and_the_context(monkeypatch):
    monkeypatch.setenv(asdf_lz4.ENV_THREADS, "4")
    original = _compression._get_compressor
    seen: dict[str, object] = {}
    inside, done = threading.Event(), threading.Event()

    def other_asdf_user():
        inside.wait(10)
        seen["other"] = _compression._get_compressor("lz4")
        done.set()

    thread = threading.Thread(target=other_asdf_user)
    thread.start()
    with parallel_lz4():
        seen["ours"] = _compression._get_compressor("lz4")
        seen["zlib"] = _compression._get_compressor("zlib")
        inside.set()
        done.wait(10)
    thread.join(10)
    assert isinstance(seen["ours"], ParallelLz4)
    assert isinstance(seen["other"], _compression.Lz4Compressor)
    assert isinstance(seen["zlib"], _compression.ZlibCompressor)
    assert _compression._get_compressor is original  # put back when the last user leaves


def test_plain_asdf_file_identical_with_empty_and_small_arrays(monkeypatch):
    monkeypatch.setenv(asdf_lz4.ENV_THREADS, "4")
    rng = np.random.default_rng(7)
    tree = {
        "empty": np.zeros((0, 5), np.float32),
        "tiny": np.arange(3, dtype=np.int16),
        "small": rng.normal(size=(33, 17)).astype(np.float32),
        "big": rng.integers(0, 1000, size=(1100, 1100)).astype(np.uint32),  # 4.8 MB: two pieces
    }

    def write() -> bytes:
        buf = io.BytesIO()
        asdf.AsdfFile(tree).write_to(buf, all_array_compression="lz4")
        return buf.getvalue()

    ref = write()
    with parallel_lz4():
        ours = write()
    assert ours == ref
    for reading in (True, False):
        with parallel_lz4(reading=reading), asdf.open(io.BytesIO(ref), lazy_load=False) as af:
            for key, value in tree.items():
                got = np.asarray(af[key])
                assert got.dtype == value.dtype and np.array_equal(got, value), key


# -- through gpucal.io ---------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_model():
    model = rdm.ScienceRawModel.create_fake_data(shape=(3, 1024, 1024))
    rng = np.random.default_rng(2026)
    data = rng.integers(0, 65535, size=(3, 1024, 1024), dtype=np.uint16)  # 6 MiB: two pieces
    data[1] = 1000 + (np.arange(1024)[:, None] // 3).astype(np.uint16)
    model.data = data
    model.amp33 = rng.integers(0, 4000, size=(3, 1024, 32), dtype=np.uint16)
    return model


@pytest.fixture
def frozen_time(monkeypatch):
    """roman_datamodels stamps meta.file_date with Time.now() on every save."""
    import roman_datamodels.datamodels._core as core

    class _Frozen(Time):
        @classmethod
        def now(cls):
            return Time("2026-11-24T12:00:00.000", scale="utc")

    monkeypatch.setattr(core, "Time", _Frozen)


@pytest.fixture
def spy(monkeypatch):
    """Counts the parallel codec's compress and decompress calls."""
    calls = {"compress": 0, "decompress": 0}
    compress, decompress = ParallelLz4.compress, ParallelLz4.decompress

    def counting_compress(self, *args, **kwargs):
        calls["compress"] += 1
        return compress(self, *args, **kwargs)

    def counting_decompress(self, *args, **kwargs):
        calls["decompress"] += 1
        return decompress(self, *args, **kwargs)

    monkeypatch.setattr(ParallelLz4, "compress", counting_compress)
    monkeypatch.setattr(ParallelLz4, "decompress", counting_decompress)
    return calls


def test_write_model_is_byte_identical_to_asdf(raw_model, tmp_path, monkeypatch, frozen_time, spy):
    name = "r0000101001001001001_0001_wfi01_f158_uncal.asdf"
    (tmp_path / "asdf").mkdir()
    raw_model.save(tmp_path / "asdf" / name)  # asdf's own codec, no gpucal context
    monkeypatch.setenv(asdf_lz4.ENV_THREADS, "4")
    write_model(raw_model, tmp_path / "gpucal" / name)
    assert spy["compress"] >= 2
    monkeypatch.setenv(asdf_lz4.ENV_THREADS, "1")
    write_model(raw_model, tmp_path / "single" / name)
    ref = (tmp_path / "asdf" / name).read_bytes()
    assert (tmp_path / "gpucal" / name).read_bytes() == ref
    assert (tmp_path / "single" / name).read_bytes() == ref
    assert b"gpucal.asdf_lz4" not in ref


def test_open_model_reads_asdfs_file(raw_model, tmp_path, monkeypatch, spy):
    path = tmp_path / "x_uncal.asdf"
    raw_model.save(path)
    monkeypatch.setenv(asdf_lz4.ENV_THREADS, "4")
    model = open_model(path)
    assert spy["decompress"] >= 2
    assert np.array_equal(model.data, raw_model.data) and np.array_equal(model.amp33, raw_model.amp33)
    model.close()
    # and asdf's own reader reads gpucal's file
    ours = tmp_path / "out" / "y_uncal.asdf"
    write_model(raw_model, ours)
    with asdf.open(ours, lazy_load=False) as af:
        assert np.array_equal(af["roman"]["data"], raw_model.data)


def test_concurrent_reads_and_writes(raw_model, tmp_path, monkeypatch, frozen_time):
    """Batch mode reads and writes in background threads at the same time."""
    monkeypatch.setenv(asdf_lz4.ENV_THREADS, "3")
    src = tmp_path / "src_uncal.asdf"
    raw_model.save(src)
    original = _compression._get_compressor
    copies = {i: raw_model.copy() for i in range(0, 8, 2)}  # one model per writer, as in a batch

    def job(i: int) -> bytes:
        if i % 2:
            model = open_model(src)
            assert np.array_equal(model.data, raw_model.data)
            model.close()
            return b""
        return write_model(copies[i], tmp_path / f"w{i}" / "src_uncal.asdf").read_bytes()

    with ThreadPoolExecutor(4) as pool:
        outputs = [b for b in pool.map(job, range(8)) if b]
    assert outputs and all(b == src.read_bytes() for b in outputs)
    assert _compression._get_compressor is original


# -- bad input: a clear error, never a hang ---------------------------------------------


def _within(seconds: float, fn, *args):
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


def _first_block_data(buf: bytes) -> int:
    """Offset of the first (lz4) block's data: magic, 2-byte header size, header."""
    at = buf.index(BLOCK_MAGIC)
    (header_size,) = struct.unpack(">H", buf[at + 4 : at + 6])
    assert buf[at + 6 + 4 : at + 6 + 8] == b"lz4\0"  # flags, then the compression label
    return at + 6 + header_size


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (0, b"\xff\xff\xff\xf0"),  # the first piece's length
        (4, b"\xff\xff\xff\x7f"),  # its stored decoded size
        (4, b"\x00\x00\x10\x00"),  # a decoded size that leaves the block short
        (8, b"\x00\xff\xff"),  # the lz4 sequence: a match 65535 bytes before the output starts
    ],
)
@pytest.mark.parametrize("threads", ["1", "4"])
def test_corrupt_block_is_one_clear_error(raw_model, tmp_path, monkeypatch, where, value, threads):
    path = tmp_path / "bad_uncal.asdf"
    raw_model.save(path)
    buf = bytearray(path.read_bytes())
    start = _first_block_data(bytes(buf)) + where
    buf[start : start + len(value)] = value
    path.write_bytes(bytes(buf))
    monkeypatch.setenv(asdf_lz4.ENV_THREADS, threads)
    with pytest.raises(InputFileError) as err:
        _within(60, open_model, path)
    # block checksums verified (the default): the damage is named as such
    assert len(str(err.value).splitlines()) == 1
    assert "ASDF block 0 (array 'data') fails its checksum" in str(err.value)
    # unverified, the codec itself still refuses the damaged stream in one line
    monkeypatch.setenv("GPUCAL_VERIFY_CHECKSUMS", "0")
    with pytest.raises(InputFileError) as err:
        _within(60, open_model, path)
    assert len(str(err.value).splitlines()) == 1
    assert "cannot be read" in str(err.value) or "not a readable" in str(err.value)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_file_is_one_clear_error(raw_model, tmp_path, monkeypatch, keep):
    path = tmp_path / "cut_uncal.asdf"
    raw_model.save(path)
    buf = path.read_bytes()
    path.write_bytes(buf[: int(len(buf) * keep)])
    monkeypatch.setenv(asdf_lz4.ENV_THREADS, "4")
    with pytest.raises(InputFileError) as err:
        _within(60, open_model, path)
    assert len(str(err.value).splitlines()) == 1


def test_truncated_or_corrupt_stream_raises():
    data = _payloads(2 * PIECE + 999, 3)["random"]
    stream = _builtin_stream(data)
    first = 4 + struct.unpack(">I", stream[:4])[0]
    for cut in (2, 4, 100, first - 1, first, first + 3, len(stream) - 1):
        with pytest.raises(ValueError, match="truncated lz4 stream"):
            _within(30, _decode, stream[:cut], data.size, [1 << 20])
    with pytest.raises(ValueError, match="piece length"):
        _within(30, _decode, b"\x00\x00\x00\x02ab" + stream, data.size, [1 << 20])
    with pytest.raises(ValueError, match="decodes to"):  # more data than the block holds
        _within(30, _decode, stream + stream[:first], data.size, [1 << 20])
    bad = bytearray(stream)
    bad[8:11] = b"\x00\xff\xff"
    with pytest.raises(ValueError, match="corrupt lz4 block"):
        _within(30, _decode, bytes(bad), data.size, [1 << 20])


def test_thread_count_from_environment(monkeypatch):
    import os

    monkeypatch.delenv(asdf_lz4.ENV_THREADS, raising=False)
    assert asdf_lz4.io_threads() == (os.cpu_count() or 1)
    for raw, want in (("3", 3), ("1", 1), ("0", os.cpu_count() or 1), ("lots", os.cpu_count() or 1)):
        monkeypatch.setenv(asdf_lz4.ENV_THREADS, raw)
        assert asdf_lz4.io_threads() == want


def test_files_written_are_readable_by_path(tmp_path: Path, raw_model):
    """gpucal.io's own round trip, default thread count."""
    out = write_model(raw_model, tmp_path / "rt_uncal.asdf")
    model = open_model(out)
    assert np.array_equal(model.data, raw_model.data)
    model.close()
