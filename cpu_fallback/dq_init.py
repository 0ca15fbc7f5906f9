"""dq_init: raw resultants to float DN and the initial pixel DQ (algorithms.md §1).

For raw uint16 resultants ``R`` (K, ny, nx), the reference read ``r`` (ny, nx) uint16 that
the L1 file had subtracted, and the data encoding offset ``o``::

    D = float32(R) + r - o

all in float32 (exact: every value is an integer below 2**24).  The pixel DQ starts at zero;
a guide window (xs, xe, ys, ye) inside the frame first *assigns* GW_AFFECTED_DATA to the
columns ``xs:xe`` of every row, then, after an optional expansion by ``n`` pixels clipped to
``[0, ny]``, ORs DO_NOT_USE | GW_AFFECTED_DATA into the box ``[ys:ye, xs:xe]``.  Python
slice semantics apply, as in romancal (a negative stop counts from the end when there is
no expansion).  Finally the MASK reference DQ is OR-ed in when its shape matches.

romancal tests "inside the frame" and clips against the number of *rows* for both axes
(``pixeldq.shape[0]``); that is kept here so that non-square test frames behave the same.
"""

from __future__ import annotations

import logging

import numpy as np

from gpucal.backends.protocol import DQInitResult
from gpucal.dq import PixelFlag

__all__ = ["dq_init"]

log = logging.getLogger(__name__)

_GW_BOX = np.uint32(PixelFlag.DO_NOT_USE | PixelFlag.GW_AFFECTED_DATA)


def dq_init(
    data: np.ndarray,
    reference_read: np.ndarray | None,
    encoding_offset: int,
    mask_dq: np.ndarray | None,
    guide_window: tuple[int, int, int, int] | None,
    expand_gw_flagging: int,
) -> DQInitResult:
    """Convert raw resultants to DN and build the initial pixel DQ.

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), uint16 (or already float32)
        Raw resultants (DN, reference read subtracted, encoding offset added).
    reference_read : ndarray, shape (ny, nx), uint16, or None
        The L1 ``reference_read``, added back to every resultant.
    encoding_offset : int
        ``meta.instrument.data_encoding_offset`` (DN), subtracted.
    mask_dq : ndarray, shape (ny, nx), uint32, or None
        MASK reference DQ, OR-ed into the pixel DQ when its shape matches.  A mismatch is
        ignored (the step then marks ``dq_init`` SKIPPED, as romancal does).
    guide_window : (xstart, xstop, ystart, ystop) or None
        Guide-window bounds in frame pixels.
    expand_gw_flagging : int
        Pixels by which the DO_NOT_USE box is grown on every side.

    Returns
    -------
    DQInitResult
        ``data`` (K, ny, nx) float32 DN and ``pixeldq`` (ny, nx) uint32.
    """
    out = np.asarray(data).astype(np.float32, copy=data.dtype != np.float32)
    if out.ndim != 3:
        raise ValueError(f"data must be (K, ny, nx), got shape {out.shape}")
    ny, nx = out.shape[1:]
    pixeldq = np.zeros((ny, nx), dtype=np.uint32)

    if guide_window is not None:
        _flag_guide_window(pixeldq, guide_window, int(expand_gw_flagging))

    if reference_read is not None:
        out += reference_read
    offset = int(encoding_offset)
    if offset:
        out -= offset

    if mask_dq is not None:
        if mask_dq.shape == pixeldq.shape:
            pixeldq |= mask_dq.astype(np.uint32, copy=False)
        else:
            log.warning("MASK dq shape %s differs from the data's %s; mask not applied", mask_dq.shape, pixeldq.shape)
    return DQInitResult(out, pixeldq)


def _flag_guide_window(pixeldq: np.ndarray, window: tuple[int, int, int, int], expand: int) -> None:
    xs, xe, ys, ye = (int(v) for v in window)
    npix = pixeldq.shape[0]
    if not (0 <= xs < npix and 0 <= ys < npix):
        log.info("Invalid guide window location: %d, %d, %d, %d", xs, xe, ys, ye)
        return
    pixeldq[:, xs:xe] = PixelFlag.GW_AFFECTED_DATA
    if expand > 0:
        xs, xe, ys, ye = (min(max(v, 0), npix) for v in (xs - expand, xe + expand, ys - expand, ye + expand))
    pixeldq[ys:ye, xs:xe] |= _GW_BOX
