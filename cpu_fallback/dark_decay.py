"""dark_decay: subtract the decaying dark signal, and the per-pixel read-time model.

Per-pixel read times (romancal ``lib.basic_utils.frame_read_times``, algorithms.md §4):
the frame is read by 32 channels of ``c = nx // 32`` columns, row by row, with 14 pad
clocks per row of a channel, so pixel (y, j) of a channel is read at clock
``j + (c + 14) y``.  The guide window is read every 256 rows; its clocks, the frame's
``frame_time / 4.915263e-6`` clocks less the science ones, are spread over the
``ny // 256`` excursions and inflated by 1.5, and the clocks are then scaled so that the
frame, plus one last excursion, lasts ``frame_time``.  Even channels read left to right,
odd ones right to left; SCAs with ``sca % 3 == 0`` then flip the columns, the others the
rows.  For a full 4096 x 4096 frame this is romancal's map, bit for bit; smaller frames
(``nx`` a multiple of 32) use the same model with their own row and column counts, and
frames of fewer than 256 rows one excursion.

Dark decay (``dark_decay/dark_decay.py``): with amplitude A (DN), time constant T (s) and
``t_r(y, x) = t_0(y, x) + (r - 1.5) * frame_time`` the read time of read r::

    D_k -= mean_{r in P_k} A exp(-t_r / T)

The map repeats every two channels, so the exponentials are evaluated on one
``(ny, 2c)`` block and subtracted from each of the 16 column tiles: the same float64
values as romancal's full-frame evaluation, 16 times fewer exponentials.
"""

from __future__ import annotations

import numpy as np

from gpucal.readpattern import ReadTiming

__all__ = ["frame_read_times", "dark_decay"]

NCHANNEL = 32
PAD_CLOCKS = 14
PIXEL_TIME = 4.915263e-06  # s per clock
STRIDE_GW = 256  # science rows between guide-window excursions
GW_PSEUDOTIME_FACTOR = 1.5
FRAME_OFFSET = 1.5  # the amplitude refers to the middle of the first read


def _two_channel_times(frame_time: float, sca: int, ny: int, nx: int) -> np.ndarray:
    """Read times (s) of the first two channels, (ny, 2 * nx // 32) float64, flipped as the SCA."""
    if nx % NCHANNEL or nx <= 0 or ny <= 0:
        raise ValueError(f"frame must have a positive multiple of {NCHANNEL} columns, got {ny} x {nx}")
    ncol = nx // NCHANNEL
    icol, irow = np.meshgrid(np.arange(ncol), np.arange(ny))
    clock = (icol + irow * (ncol + PAD_CLOCKS)).astype(np.float64)
    gw_clocks = frame_time / PIXEL_TIME - np.amax(clock)
    n_gw = max(ny // STRIDE_GW, 1)
    per_gw = gw_clocks / n_gw * GW_PSEUDOTIME_FACTOR
    # repeated addition, not i * per_gw, to round as romancal does
    for i in range(1, n_gw):
        clock[i * STRIDE_GW :] += per_gw
    one = frame_time * clock
    one /= np.amax(clock) + per_gw
    two = np.concatenate([one, one[:, ::-1]], axis=1)
    # flipping the tiled frame's columns equals tiling the flipped two-channel block
    return two[:, ::-1] if sca % 3 == 0 else two[::-1, :]


def frame_read_times(
    frame_time: float, sca: int, ny: int = 4096, nx: int = 4096, frame_number: float = 0
) -> np.ndarray:
    """Read time of every pixel of one frame.

    Parameters
    ----------
    frame_time : float
        Seconds per frame.
    sca : int
        WFI detector number (1-18).
    ny, nx : int
        Frame shape; ``nx`` must be a multiple of 32.
    frame_number : float
        Frames elapsed before this one (adds ``frame_number * frame_time``).

    Returns
    -------
    ndarray, shape (ny, nx), float64
        Read times (s).
    """
    times = np.tile(_two_channel_times(frame_time, sca, ny, nx), (1, NCHANNEL // 2))
    times += frame_number * frame_time
    return times


def dark_decay(data: np.ndarray, timing: ReadTiming, amplitude: float, time_constant: float, sca: int) -> np.ndarray:
    """Subtract the dark-decay signal from every resultant, in place.

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), float32
        Resultants (DN), corrected in place.
    timing : ReadTiming
        Read pattern and frame time.
    amplitude : float
        Decay amplitude A (DN) of this detector.
    time_constant : float
        Decay time constant T (s).
    sca : int
        WFI detector number (1-18).

    Returns
    -------
    ndarray, shape (K, ny, nx), float32
        ``data``.
    """
    nres, ny, nx = data.shape
    if len(timing.read_pattern) != nres:
        raise ValueError(f"read pattern has {len(timing.read_pattern)} resultants, data has {nres}")
    frame_time = timing.frame_time
    base = _two_channel_times(frame_time, sca, ny, nx)
    width = base.shape[1]
    for k, reads in enumerate(timing.read_pattern):
        # summed in read order, then divided: romancal's np.mean over the reads' axis
        total = np.zeros_like(base)
        for read in reads:
            times = base + (read - FRAME_OFFSET) * frame_time
            total += amplitude * np.exp(-times / time_constant)
        mean = total / len(reads)
        plane = data[k]
        for j in range(NCHANNEL // 2):
            plane[:, j * width : (j + 1) * width] -= mean
    return data
