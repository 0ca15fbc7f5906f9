"""Snowball flagging on the group DQ of one exposure (host side, NumPy + scikit-image).

What romancal 1.1.0's ``RampFitStep(algorithm="likely", expand_large_events=True)`` does
with stcal 1.20.0 (``jump.flag_large_events``), between the likely fit's jump search and
its final fit.  A snowball is a large cosmic-ray hit: a saturated core surrounded by a halo
of jumps the per-pixel search only partly finds.  For each resultant ``g >= 1``:

1. Connected regions (8-connectivity) of the newly saturated pixels (SATURATED in ``g``
   but not ``g - 1``) with at least ``min_sat_area`` pixels (area with holes filled), and
   of the JUMP_DET pixels of ``g`` with at least ``min_jump_area``, each summarised by the
   ellipse of its second moments: centre (column, row), full axes (minor - 1, major - 1)
   and orientation (degrees).
2. With ``sat_required_snowball``, a jump region is a snowball when its centre is within
   ``edge_size`` of the frame (rows *and* columns compared with the row count, as stcal
   does), or it contains the centre of a new saturated region of ``g``, or of ``g + 1``
   (new there relative to ``g``).  Each saturated region whose smaller axis exceeds
   ``min_sat_radius_extend`` is then drawn enlarged by ``sat_expand`` (romancal passes
   twice the parameter) on each axis, capped at 200 pixels, and the pixels inside are
   *set* to SATURATED (other bits cleared) in ``g`` and every later resultant.  Without
   ``sat_required_snowball`` every large jump region is a snowball.
3. Each snowball's ellipse is enlarged by ``expand_factor`` (both axes grow by
   ``(expand_factor - 1)`` times the minor axis; capped at 200) and its pixels get
   JUMP_DET in ``g``, except those SATURATED there.

Regions, centres and pixel rounding follow stcal's arithmetic (Python's ``round``, which
rounds halves to even; ``skimage.draw.ellipse`` for the filled ellipses), so the flags are
the same pixel for pixel.  The likely fit then drops every difference whose later
resultant carries JUMP_DET and refits with the rates of its jump search.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np

from gpucal.backends.protocol import SnowballParams
from gpucal.dq import GroupFlag

__all__ = ["SnowballParams", "Region", "find_regions", "flag_snowballs"]

log = logging.getLogger(__name__)

SAT = np.uint8(GroupFlag.SATURATED)
JUMP = np.uint8(GroupFlag.JUMP_DET)
#: stcal's cap on an enlarged ellipse's full axis (pixels)
MAX_EXTENDED_WIDTH = 200.0


class Region(NamedTuple):
    """A flagged region's moment ellipse: centre (col, row), full axes, angle (degrees).

    ``axes`` are (minor length - 1, major length - 1), in that order, as stcal keeps them.
    """

    col: float
    row: float
    axes: tuple[float, float]
    angle: float


def find_regions(mask: np.ndarray, min_area: float) -> list[Region]:
    """The 8-connected regions of ``mask`` (2-D, nonzero = set) with a filled area of at
    least ``min_area`` pixels, as moment ellipses (in scikit-image's label order)."""
    from skimage.measure import label, regionprops

    found = []
    for region in regionprops(label(mask)):
        if region.area_filled < min_area:
            continue
        row, col = region.centroid
        found.append(Region(float(col), float(row),
                            (region.axis_minor_length - 1, region.axis_major_length - 1),
                            float(np.degrees(region.orientation))))
    return found


def _contains(outer: Region, col: float, row: float) -> bool:
    """Whether (col, row) lies inside ``outer``'s ellipse (stcal's rotated-frame test)."""
    theta = math.radians(180.0 - outer.angle)
    dx, dy = col - outer.col, row - outer.row
    u = dx * math.cos(theta) - dy * math.sin(theta)
    v = dx * math.sin(theta) + dy * math.cos(theta)
    major, minor = max(outer.axes) * 0.5, min(outer.axes) * 0.5
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate (1-pixel-wide) regions
        return bool(np.float64(u) ** 2 / np.float64(major) ** 2 + np.float64(v) ** 2 / np.float64(minor) ** 2 <= 1)


def _near_edge(region: Region, low: int, high: int) -> bool:
    # stcal compares both the column and the row with the row-count threshold
    return region.col < low or region.row < low or region.col > high or region.row > high


def _filled_ellipse(region: Region, axis1: float, axis2: float, shape: tuple[int, int]
                    ) -> tuple[tuple[slice, slice], np.ndarray]:
    """The pixels of an ellipse centred on ``region`` with full axes ``axis1``/``axis2``
    (first along columns before rotation), as a window of ``shape`` and a bool mask in it."""
    from skimage.draw import ellipse

    col, row = round(region.col), round(region.row)
    half1, half2 = round(axis1 / 2), round(axis2 / 2)
    margin = max(half1, half2) + 2
    c0, c1 = max(col - margin, 0), min(col + margin + 1, shape[1])
    r0, r1 = max(row - margin, 0), min(row + margin + 1, shape[0])
    inside = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    if half1 != 0 and half2 != 0:
        rr, cc = ellipse(row - r0, col - c0, half2, half1, inside.shape, np.radians(region.angle))
        inside[rr, cc] = True
    return (slice(r0, r1), slice(c0, c1)), inside


def _expanded_axes(region: Region, factor: float) -> tuple[float, float]:
    """Full axes of a snowball grown by ``factor`` (both by the minor axis' growth),
    rounded to even pixel counts as stcal does."""
    a, b = region.axes
    if b < a:
        axis1, axis2 = a + (factor - 1.0) * b, b * factor
    else:
        axis1, axis2 = a * factor, b + (factor - 1.0) * a
    axis1, axis2 = min(axis1, MAX_EXTENDED_WIDTH), min(axis2, MAX_EXTENDED_WIDTH)
    return 2 * round(axis1 / 2), 2 * round(axis2 / 2)


def flag_snowballs(gdq: np.ndarray, params: SnowballParams) -> int:
    """Flag snowballs in ``gdq`` (K, ny, nx) uint8, in place; return how many were found.

    ``gdq`` holds the exposure's group flags with the jump search's JUMP_DET already set.
    """
    nres, nrows, ncols = gdq.shape
    low, high = params.edge_size, max(0, nrows - params.edge_size)
    sat_grow = 2 * params.sat_expand  # romancal doubles sat_expand before stcal sees it
    total = 0
    for g in range(1, nres):
        sat_now = (gdq[g] & SAT) != 0
        new_sat = sat_now & ((gdq[g - 1] & SAT) == 0)
        sat_regions = find_regions(new_sat, params.min_sat_area)
        jump_regions = find_regions((gdq[g] & JUMP) != 0, params.min_jump_area)
        if params.sat_required_snowball:
            next_regions: list[Region] = []
            if g < nres - 1:
                next_regions = find_regions(((gdq[g + 1] & SAT) != 0) & ~sat_now, params.min_sat_area)
            snowballs: list[Region] = []
            for jump in jump_regions:
                if _near_edge(jump, low, high):
                    snowballs.append(jump)  # its core may lie off the detector
                elif any(_contains(jump, s.col, s.row) for s in (*sat_regions, *next_regions)):
                    if jump not in snowballs:
                        snowballs.append(jump)
            for sat in sat_regions:
                if min(sat.axes) <= params.min_sat_radius_extend:
                    continue
                axis1 = min(sat.axes[0] + sat_grow, MAX_EXTENDED_WIDTH)
                axis2 = min(sat.axes[1] + sat_grow, MAX_EXTENDED_WIDTH)
                window, inside = _filled_ellipse(sat, axis1, axis2, (nrows, ncols))
                for later in range(g, nres):
                    gdq[later][window][inside] = SAT  # set, not OR: stcal clears the other bits
        else:
            snowballs = jump_regions
        total += len(snowballs)
        for snow in snowballs:
            axis1, axis2 = _expanded_axes(snow, params.expand_factor)
            window, inside = _filled_ellipse(snow, axis1, axis2, (nrows, ncols))
            plane = gdq[g][window]
            plane |= np.where(inside & ((plane & SAT) == 0), JUMP, np.uint8(0))
    log.info("Snowballs flagged: %d", total)
    return total
