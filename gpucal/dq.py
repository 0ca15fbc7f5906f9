"""Roman WFI data-quality flags as :class:`enum.IntFlag`.

Values are those of ``roman_datamodels.dqflags`` (rad 1.1): pixel flags are stored as
uint32 (``pixeldq``, ``dq``), group flags as uint8 (``groupdq``).  Group flags reuse the
pixel bit positions, so a group flag can be OR-ed straight into a pixel DQ array.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["PixelFlag", "GroupFlag", "PIXEL_DTYPE", "GROUP_DTYPE"]

PIXEL_DTYPE = np.uint32
GROUP_DTYPE = np.uint8


class PixelFlag(enum.IntFlag):
    """Pixel flags (uint32)."""

    GOOD = 0
    DO_NOT_USE = 1 << 0
    SATURATED = 1 << 1
    JUMP_DET = 1 << 2
    DROPOUT = 1 << 3
    GW_AFFECTED_DATA = 1 << 4
    PERSISTENCE = 1 << 5
    AD_FLOOR = 1 << 6
    OUTLIER = 1 << 7
    UNRELIABLE_ERROR = 1 << 8
    NON_SCIENCE = 1 << 9
    DEAD = 1 << 10
    HOT = 1 << 11
    WARM = 1 << 12
    LOW_QE = 1 << 13
    TELEGRAPH = 1 << 15
    NONLINEAR = 1 << 16
    BAD_REF_PIXEL = 1 << 17
    NO_FLAT_FIELD = 1 << 18
    NO_GAIN_VALUE = 1 << 19
    NO_LIN_CORR = 1 << 20
    NO_SAT_CHECK = 1 << 21
    UNRELIABLE_BIAS = 1 << 22
    UNRELIABLE_DARK = 1 << 23
    UNRELIABLE_SLOPE = 1 << 24
    UNRELIABLE_FLAT = 1 << 25
    RESERVED_5 = 1 << 26
    RESERVED_6 = 1 << 27
    UNRELIABLE_RESET = 1 << 28
    RESERVED_7 = 1 << 29
    OTHER_BAD_PIXEL = 1 << 30
    REFERENCE_PIXEL = 1 << 31


class GroupFlag(enum.IntFlag):
    """Group (resultant) flags (uint8)."""

    GOOD = 0
    DO_NOT_USE = 1 << 0
    SATURATED = 1 << 1
    JUMP_DET = 1 << 2
    DROPOUT = 1 << 3
    AD_FLOOR = 1 << 6
    WFI18_TRANSIENT = 1 << 7
