"""Helpers for fault tests: ``strun`` in a real process on either backend, damaged ASDF files,
fingerprints of every input and reference, and the full listing of an output directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: ``cpu``: the NumPy backend; ``device``: the device backend on the emulated device
#: (``GPUCAL_EMULATE_GPU=1 --backend=gpu``), the exact ``.cu`` kernels on the CPU
BACKENDS = ("cpu", "device")

_BLOCK_MAGIC = b"\xd3BLK"
_HEADER = struct.Struct(">I4sQQQ16s")  # flags, compression, allocated, used, data size, checksum


@dataclass
class Outcome:
    """What a ``strun`` process did."""

    status: int
    stderr: str
    errors: list[str]  # the ``strun: error:`` lines

    def one_error(self) -> str:
        """The single error line (asserts there is exactly one and no traceback)."""
        assert "Traceback" not in self.stderr, self.stderr[-3000:]
        assert len(self.errors) == 1, (self.errors, self.stderr[-3000:])
        return self.errors[0]


def strun(args: list[str], backend: str, cwd: Path, env: dict[str, str] | None = None,
          timeout: float = 600) -> Outcome:
    """Run ``strun <args>`` in a fresh Python process with this checkout's gpucal."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
    if backend == "device":
        full_env["GPUCAL_EMULATE_GPU"] = "1"
        flag = "--backend=gpu"
    else:
        full_env.pop("GPUCAL_EMULATE_GPU", None)
        flag = "--backend=cpu"
    cmd = [sys.executable, "-c", "from gpucal.cli import strun_main; strun_main()", *args, flag]
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("strun: error:")]
    return Outcome(proc.returncode, proc.stderr, errors)


def listing(directory: Path) -> list[str]:
    """Every file and folder under ``directory``, hidden ones included (relative paths)."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def fingerprints(*paths: Path) -> dict[str, str]:
    """sha256 of every file given, and of every file under each folder given."""
    out: dict[str, str] = {}
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@dataclass(frozen=True)
class Block:
    """One ASDF block as stored: where its data start, and its header fields."""

    header_at: int
    data_at: int
    used: int
    data_size: int
    compression: bytes
    checksum: bytes


def asdf_blocks(path: Path) -> list[Block]:
    """Walk the blocks of an ASDF file (ASDF standard 1.x block layout)."""
    buf = path.read_bytes()
    blocks = []
    at = buf.find(_BLOCK_MAGIC)
    while at != -1:
        (header_size,) = struct.unpack(">H", buf[at + 4 : at + 6])
        flags, comp, allocated, used, size, checksum = _HEADER.unpack(buf[at + 6 : at + 6 + _HEADER.size])
        data_at = at + 6 + header_size
        blocks.append(Block(at + 6, data_at, used, size, comp, checksum))
        at = buf.find(_BLOCK_MAGIC, data_at + allocated)
    return blocks


def flip_bit(path: Path, block: int = 0, fraction: float = 0.5, bit: int = 4) -> int:
    """Flip one bit of block ``block``'s stored data, ``fraction`` of the way in; return its offset."""
    blk = asdf_blocks(path)[block]
    buf = bytearray(path.read_bytes())
    at = blk.data_at + int(blk.used * fraction)
    buf[at] ^= 1 << bit
    path.write_bytes(bytes(buf))
    return at


def spoil_checksum(path: Path, block: int = 0) -> None:
    """Change block ``block``'s stored MD5 (its data untouched)."""
    blk = asdf_blocks(path)[block]
    buf = bytearray(path.read_bytes())
    at = blk.header_at + _HEADER.size - 16
    buf[at] ^= 0xFF
    path.write_bytes(bytes(buf))


def truncate(path: Path, fraction: float = 0.6) -> None:
    """Cut ``path`` to ``fraction`` of its size."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def private_cache(crds_path: Path, dest: Path) -> Path:
    """A writable copy of a CRDS cache (so a test can damage one of its references)."""
    shutil.copytree(crds_path, dest)
    return dest
