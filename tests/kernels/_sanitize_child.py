"""Run kernels once through the ASan/UBSan-built CPU shim; executed in a subprocess.

``python -m tests.kernels._sanitize_child CASE [SOURCE_DIR]`` with the environment of
``gpucal.kernels.cpu_shim.sanitizer_environment()``.  Frames are small and odd-sized so
the last block has threads past the end (the bounds guard is exercised).  Prints ``OK``;
any sanitizer report ends the process with a non-zero status.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gpucal.backends.protocol import InlTable, JumpParams
from gpucal.readpattern import read_timing
from tests.kernels import _drivers as drv
from tests.kernels._data import APPENDIX_PATTERN, FRAME_TIME, random_ramps
from tests.kernels._runtime import cpu_runtime

RT = cpu_runtime(sanitize=True)
SHAPE = (13, 21)
TIMING = read_timing(APPENDIX_PATTERN, FRAME_TIME)


def _saturation(grow: int) -> None:
    rng = np.random.default_rng(5)
    data = random_ramps(rng, SHAPE, TIMING)
    thr = rng.normal(50000, 3000, SHAPE).astype(np.float32)
    thr[0, 0] = np.nan
    zeros = np.zeros(SHAPE, np.uint32)
    drv.saturation(RT, data, np.zeros(data.shape, np.uint8), zeros, thr, zeros, TIMING, grow, 2)


def _linearity(read_level: bool, with_inl: bool) -> None:
    rng = np.random.default_rng(6)
    data = random_ramps(rng, SHAPE, TIMING)
    lin = np.zeros((3, *SHAPE), np.float32)
    lin[1], lin[2] = 1.0, 2e-6
    ilin = np.zeros((4, *SHAPE), np.float32)
    ilin[1], ilin[2], ilin[3] = 1.0, -2e-6, 8e-12
    lin[2, 1, 1] = np.nan
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[5:, 2, :] = 2
    grid = np.arange(0, 65536, 4096, dtype=np.float32)
    inl = InlTable(grid, rng.normal(0, 1, (3, grid.size)), channel_width=8) if with_inl else None
    zeros = np.zeros(SHAPE, np.uint32)
    drv.linearity(RT, data, groupdq, zeros, lin, ilin if read_level else None, zeros, inl, TIMING)


def _saturation_level() -> None:
    """saturation_headroom, then linearity_threshold with and without a polynomial."""
    rng = np.random.default_rng(8)
    data = random_ramps(rng, SHAPE, TIMING)
    thr = rng.normal(50000, 3000, SHAPE).astype(np.float32)
    thr[0, 0] = np.nan
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[4:, 3, :] = 2
    groupdq[:, 4, :] = 1  # no usable resultant
    zeros = np.zeros(SHAPE, np.uint32)
    headroom = drv.saturation_headroom(RT, data, groupdq, zeros, thr, zeros)
    lin = np.zeros((3, *SHAPE), np.float32)
    lin[1], lin[2] = 1.0, 2e-6
    lin[2, 1, 1] = np.nan
    drv.linearity_threshold(RT, data, groupdq, headroom, lin, zeros)
    drv.linearity_threshold(RT, data, groupdq, headroom, None, None)


def _dq_init() -> None:
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 65536, (4, *SHAPE), dtype=np.uint16)
    ref = rng.integers(0, 65536, SHAPE, dtype=np.uint16)
    mask = rng.integers(0, 2**32, SHAPE, dtype=np.uint32)
    drv.dq_init(RT, raw, ref, 100, mask, (2, 9, 1, 5), 3)
    drv.dq_init(RT, raw, None, 0, None, None, 0)


def _jump(reference_rate: str, nres: int) -> None:
    """Jump detection with its neighbour pass, the search mode found on the device."""
    timing = TIMING if nres == TIMING.nresultants else read_timing([[r] for r in range(1, nres + 1)], FRAME_TIME)
    rng = np.random.default_rng(8)
    data = random_ramps(rng, SHAPE, timing)
    data[nres // 2 :, 4:6, 7] += 5000.0
    data[1, 2, 3] = np.nan
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[0] = 1  # DO_NOT_USE on every pixel: counts against the usable resultants
    groupdq[-1, 6, :] = 2  # SATURATED
    gain = np.full(SHAPE, 2.0, np.float32)
    gain[0, 0] = 0.0
    readnoise = np.full(SHAPE, 6.0, np.float32)
    drv.jump(RT, data, groupdq, readnoise, gain, timing, JumpParams(), reference_rate=reference_rate)


def _gls() -> None:
    """The gls ramp fit on a random frame with jump-step flags, an odd shape and bad pixels."""
    rng = np.random.default_rng(9)
    data = random_ramps(rng, SHAPE, TIMING)
    data[4:, 3, 5] += 3000.0
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[-2:, 6, :] = 2  # SATURATED
    groupdq[3, 7, :] = 4  # JUMP_DET from the jump step
    gain = np.full(SHAPE, 2.0, np.float32)
    gain[0, :3] = (0.0, -1.0, np.nan)
    readnoise = np.full(SHAPE, 6.0, np.float32)
    readnoise[1, 1] = 0.0
    pixeldq = np.zeros(SHAPE, np.uint32)
    drv.gls(RT, data, groupdq, pixeldq, readnoise, gain, TIMING)
    one = read_timing([[1]], FRAME_TIME)
    drv.gls(RT, data[:1].copy(), groupdq[:1].copy(), pixeldq, readnoise, gain, one)


def _planted_out_of_bounds(source_dir: str) -> None:
    """A kernel that reads one element past its input: ASan must stop the process."""
    from gpucal.kernels.cpu_shim import load_cpu_module

    mod = load_cpu_module("oob", sanitize=True, source_dir=Path(source_dir))
    src = np.zeros(1000, np.float32)
    dst = np.zeros(1000, np.float32)
    mod.get_function("shifted_copy")((4,), (256,), (src, dst, np.int32(1000)))


CASES: dict[str, Callable[[], None]] = {
    "saturation": lambda: _saturation(0),
    "saturation_grow": lambda: _saturation(2),
    "linearity_classic": lambda: _linearity(False, False),
    "linearity_read_level": lambda: _linearity(True, False),
    "linearity_read_level_inl": lambda: _linearity(True, True),
    "saturation_level": _saturation_level,
    "dq_init": _dq_init,
    "jump_weighted_iterative": lambda: _jump("weighted", TIMING.nresultants),
    "jump_median_single": lambda: _jump("median", 13),
    "ramp_fit_gls": _gls,
}


def main(argv: list[str]) -> int:
    case = argv[1]
    if case == "planted_out_of_bounds":
        _planted_out_of_bounds(argv[2])
    else:
        CASES[case]()
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
