"""Pieces shared by the NumPy ramp fits: row blocking, input checks and DQ compression."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gpucal.dq import GroupFlag, PixelFlag

__all__ = [
    "BLOCK_PIXELS",
    "row_blocks",
    "check_inputs",
    "compress_dq",
    "count_good_resultants",
    "pixel_bit",
]

#: Pixels per block: small enough that the (nresultants, npix) float64 temporaries of one
#: block stay in the CPU caches, large enough that NumPy's per-call overhead is negligible.
BLOCK_PIXELS = 16384


def row_blocks(ny: int, nx: int, block_pixels: int | None = None) -> Iterator[slice]:
    """Yield row slices covering ``ny`` rows, each about ``block_pixels`` pixels."""
    rows = max(1, (block_pixels or BLOCK_PIXELS) // max(nx, 1))
    for r0 in range(0, ny, rows):
        yield slice(r0, min(ny, r0 + rows))


def check_inputs(
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    nresultants: int,
) -> None:
    """Raise ValueError unless the ramp-fit inputs have consistent shapes."""
    if data.ndim != 3:
        raise ValueError(f"data must be (nresultants, ny, nx), got shape {data.shape}")
    if groupdq.shape != data.shape:
        raise ValueError(f"groupdq shape {groupdq.shape} differs from data shape {data.shape}")
    for name, arr in (("pixeldq", pixeldq), ("readnoise", readnoise), ("gain", gain)):
        if arr.shape != data.shape[1:]:
            raise ValueError(f"{name} shape {arr.shape} differs from the frame shape {data.shape[1:]}")
    if data.shape[0] != nresultants:
        raise ValueError(f"read pattern has {nresultants} resultants but data has {data.shape[0]}")


def compress_dq(groupdq: np.ndarray, pixeldq: np.ndarray, saturated_if_all: bool) -> np.ndarray:
    """Group flags folded into the pixel DQ, for a block: groupdq (K, P), pixeldq (P,).

    JUMP_DET if any resultant has it; SATURATED if any (likely) or all (ols_cas22, when
    ``saturated_if_all``) resultants are saturated; DO_NOT_USE if every resultant is
    SATURATED or DO_NOT_USE.  Returns a new (P,) uint32 array.
    """
    sat, dnu, jump = np.uint8(GroupFlag.SATURATED), np.uint8(GroupFlag.DO_NOT_USE), np.uint8(GroupFlag.JUMP_DET)
    any_bits = np.bitwise_or.reduce(groupdq, axis=0)
    all_bits = np.bitwise_and.reduce(groupdq, axis=0)
    all_bad = np.logical_and.reduce((groupdq & (sat | dnu)) != 0, axis=0)
    dq = np.asarray(pixeldq, dtype=np.uint32).copy()
    dq |= pixel_bit((any_bits & jump) != 0, PixelFlag.JUMP_DET)
    dq |= pixel_bit(((all_bits if saturated_if_all else any_bits) & sat) != 0, PixelFlag.SATURATED)
    dq |= pixel_bit(all_bad, PixelFlag.DO_NOT_USE)
    return dq


def count_good_resultants(groupdq: np.ndarray) -> np.ndarray:
    """Number of resultants flagged neither SATURATED nor DO_NOT_USE (over axis 0)."""
    bad = np.uint8(GroupFlag.SATURATED | GroupFlag.DO_NOT_USE)
    return np.count_nonzero((groupdq & bad) == 0, axis=0)


def pixel_bit(mask: np.ndarray, flag: PixelFlag) -> np.ndarray:
    """``flag`` where ``mask`` is true, else 0, as uint32."""
    return np.where(mask, np.uint32(flag), np.uint32(0))
