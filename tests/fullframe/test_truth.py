"""The full-frame demo's cal files against the demo's truth (slow; romancal comparisons: oracle).

For romancal's two rampfit algorithms (``ols_cas22``, with gpucal's jump step, and
``likely``, which finds its own jumps; the default, ``gls``, has ``test_truth_gls.py``) on the 4096 x 4096, 8-resultant demo exposure
(``tests/fullframe/conftest.py``).  Definitions (cal arrays are the trimmed 4088 x 4088
science area, truth arrays are cut ``[4:-4, 4:-4]`` to match):

* **Truth of the cal image**: ``Truth.scene``.  The simulated count rate is
  ``rate = scene * flat + dark`` (flat = the FLAT reference, 1 where it is NaN or 0; dark =
  the DARK reference's ``dark_slope``), and the pipeline computes
  ``data = (slope - dark) / flat`` and ``err = err_slope / flat``, so
  ``(data - scene) / err = (slope - rate) / err_slope``.
* **Unflagged pixel** (pull statistics): cal ``dq`` has none of DO_NOT_USE (no valid
  slope), SATURATED (fitted on fewer resultants, bright stars) and JUMP_DET (a fit
  split or with differences dropped), and finite ``data`` and positive finite ``err``.
  Other bits (guide window, HOT, WARM, LOW_QE, NO_FLAT_FIELD, ...) stay in: their dark and
  flat are simulated exactly as the references say, so they must calibrate as well.
  Undetected cosmic rays stay in too: that is what "left unflagged" means.
* **Pull** ``(data - scene) / err``: median within +-0.01 and robust standard deviation
  ``1.4826 * MAD`` within 0.95-1.05.
* **Detectable cosmic ray**: a hit at a read after the first read of resultant 0 (a hit
  at or before it is in every resultant, indistinguishable from bias), on a pixel that
  never saturates (``first_saturated < 0``) and is not DO_NOT_USE in the cal file.  A hit
  of >= 100 e- is found if the cal ``dq`` of its pixel has JUMP_DET; >= 98% must be.
* **Clean pixel**: a science pixel with no cosmic ray (any energy, any read) at it or at
  any of its 8 neighbours.  The fraction of clean pixels with JUMP_DET must not exceed
  romancal 1.1.0's ``likely`` on the same exposure (oracle).
* **Saturating pixel**: ``first_saturated >= 0`` (the first resultant whose raw data
  reach the SATURATION threshold, as the saturation step compares) without NO_SAT_CHECK
  in the cal dq (no check was possible there).  ``likely`` sets SATURATED if any resultant
  saturated: >= 99% of them.  ``ols_cas22`` sets it, as romancal 1.1.0's and stcal's
  ``ols_cas22`` do, only where every resultant saturated: >= 99% of those
  (``first_saturated == 0``).  Pixels that never saturate must not carry SATURATED.

Measured (seed 2026; gpucal's jump step with its weighted test at 4.5 sigma):

============================  ==============  ==============  ================
quantity                      ols_cas22       likely          romancal likely
============================  ==============  ==============  ================
pull median / robust std      +0.026 / 1.025  -0.003 / 1.025  -0.003 / 1.025
CR found 100-150 e-           96.4%           99.0%           99.0%
CR found >= 100 e-            99.6%           99.9%           99.9%
clean pixels with JUMP_DET    2.0e-4          3.9e-4          3.9e-4
saturating pixels flagged     38/38 (all-sat) 564/564         564/564
============================  ==============  ==============  ================

``ols_cas22``'s median pull (+0.026) is the algorithm's, not the jump step's: romancal
1.1.0's own ``ols_cas22`` gives +0.0263 on this exposure, and gpucal's without the jump step
the same.  It comes from sky pixels near 1 DN/s, where Casertano's weight exponent switches
with the measured signal-to-noise (about 10 there), which correlates the weights with the
noise (median +0.03 at 0.8-1.2 DN/s, 0.00 at 1.2-1.5 DN/s).  That case is an expected
failure (strict), with a looser bound kept as a regression guard.  The widths (1.025) reflect
read noise that the reference-pixel correction adds beyond READNOISE.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from gpucal.demo.synth import Truth
from gpucal.dq import PixelFlag

pytestmark = pytest.mark.slow

ALGORITHMS = ("ols_cas22", "likely")
UNFLAGGED_EXCLUDES = int(PixelFlag.DO_NOT_USE | PixelFlag.SATURATED | PixelFlag.JUMP_DET)
DNU, SAT, JUMP = int(PixelFlag.DO_NOT_USE), int(PixelFlag.SATURATED), int(PixelFlag.JUMP_DET)
NO_SAT_CHECK = int(PixelFlag.NO_SAT_CHECK)
TRIM = (slice(4, -4), slice(4, -4))
CR_MIN_ENERGY = 100.0  # e-
CR_FOUND_MIN = 0.98
CR_BINS = (100.0, 150.0, 300.0, 1000.0, np.inf)
PULL_MEDIAN_MAX = 0.01
PULL_STD_RANGE = (0.95, 1.05)
OLS_CAS22_PULL_MEDIAN_GUARD = 0.035  # its own +0.026 bias, with room for noise (docstring)
SATURATED_FOUND_MIN = 0.99


class Cal(NamedTuple):
    """The arrays of a cal file that these tests read, (4088, 4088)."""

    data: np.ndarray  # float32 DN/s (after dark and flat)
    err: np.ndarray  # float32 (stored as float16)
    dq: np.ndarray  # uint32


def read_cal(path) -> Cal:
    import asdf

    with asdf.open(path, lazy_load=False, memmap=False) as af:
        roman = af["roman"]
        return Cal(
            data=np.asarray(roman["data"], dtype=np.float32),
            err=np.asarray(roman["err"], dtype=np.float32),
            dq=np.asarray(roman["dq"], dtype=np.uint32),
        )


@pytest.fixture(scope="module")
def truth(full_demo) -> Truth:
    return Truth.load(full_demo.truth)


@pytest.fixture(scope="module")
def cal(gpucal_cal):
    """Callable: algorithm -> gpucal's :class:`Cal` for the demo (read once per module)."""
    cache: dict[str, Cal] = {}

    def get(algorithm: str) -> Cal:
        if algorithm not in cache:
            cache[algorithm] = read_cal(gpucal_cal(algorithm))
        return cache[algorithm]

    return get


@pytest.fixture(scope="module")
def clean(truth) -> np.ndarray:
    """(4088, 4088) bool: no cosmic ray at the pixel or any of its 8 neighbours."""
    cr = truth.cosmic_rays
    hit = np.zeros((truth.scene.shape[0] + 2, truth.scene.shape[1] + 2), bool)  # one-pixel margin
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            hit[cr["y"] + 1 + dy, cr["x"] + 1 + dx] = True
    return ~hit[1:-1, 1:-1][TRIM]


def pulls(c: Cal, truth: Truth) -> np.ndarray:
    """``(data - scene) / err`` on the unflagged pixels (module docstring)."""
    scene = truth.scene[TRIM]
    use = ((c.dq & UNFLAGGED_EXCLUDES) == 0) & np.isfinite(c.data) & np.isfinite(c.err) & (c.err > 0)
    return (c.data[use] - scene[use]) / c.err[use]


def robust_std(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pull_width(cal, truth, algorithm):
    pull = pulls(cal(algorithm), truth)
    assert pull.size > 0.98 * 4088**2
    width = robust_std(pull)
    assert PULL_STD_RANGE[0] <= width <= PULL_STD_RANGE[1], f"{algorithm}: robust std {width:.4f}"


@pytest.mark.parametrize(
    "algorithm",
    [
        pytest.param(
            "ols_cas22",
            marks=pytest.mark.xfail(
                strict=True,
                reason="ols_cas22's SNR-switched weights bias slopes near 1 DN/s by +0.026 sigma "
                "(romancal 1.1.0's ols_cas22: +0.0263 on this exposure; module docstring)",
            ),
        ),
        "likely",
    ],
)
def test_pull_median(cal, truth, algorithm):
    median = float(np.median(pulls(cal(algorithm), truth)))
    assert abs(median) <= PULL_MEDIAN_MAX, f"{algorithm}: median pull {median:+.4f}"


def test_ols_cas22_pull_median_stays_at_the_fits_own_bias(cal, truth):
    """Regression guard while the strict bound above is an expected failure."""
    median = float(np.median(pulls(cal("ols_cas22"), truth)))
    assert abs(median) <= OLS_CAS22_PULL_MEDIAN_GUARD, f"median pull {median:+.4f}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_detectable_cosmic_rays_are_flagged(cal, truth, algorithm):
    c = cal(algorithm)
    cr = truth.cosmic_rays
    y, x = cr["y"] - 4, cr["x"] - 4
    first_read = truth.read_pattern[0][0]
    detectable = (
        (cr["read"] > first_read)
        & (truth.first_saturated[cr["y"], cr["x"]] < 0)
        & ((c.dq[y, x] & DNU) == 0)
        & (cr["energy_e"] >= CR_MIN_ENERGY)
    )
    found = (c.dq[y, x] & JUMP) != 0
    by_bin = []
    for lo, hi in zip(CR_BINS[:-1], CR_BINS[1:], strict=True):
        sel = detectable & (cr["energy_e"] >= lo) & (cr["energy_e"] < hi)
        by_bin.append(f"{lo:g}-{hi:g} e-: {found[sel].mean():.4f} of {sel.sum()}")
    assert detectable.sum() > 5000  # the demo has ~11 500
    rate = found[detectable].mean()
    assert rate >= CR_FOUND_MIN, f"{algorithm}: {rate:.4f} found; " + "; ".join(by_bin)


@pytest.mark.oracle
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_clean_pixel_jump_flags_not_above_romancal(cal, clean, romancal_cal, algorithm):
    ours = np.count_nonzero(cal(algorithm).dq[clean] & JUMP)
    theirs = np.count_nonzero(read_cal(romancal_cal("likely")).dq[clean] & JUMP)
    assert theirs > 0
    n = clean.sum()
    assert ours <= theirs, f"{algorithm}: {ours / n:.3e} of clean pixels flagged, romancal likely {theirs / n:.3e}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_saturated_pixels_are_flagged(cal, truth, algorithm):
    c = cal(algorithm)
    first = truth.first_saturated[TRIM]
    checked = (c.dq & NO_SAT_CHECK) == 0
    saturating = (first >= 0) & checked
    expected = saturating if algorithm == "likely" else (first == 0) & checked
    flagged = (c.dq & SAT) != 0
    assert expected.sum() > 10
    rate = flagged[expected].mean()
    assert rate >= SATURATED_FOUND_MIN, f"{algorithm}: {rate:.4f} of {expected.sum()} saturating pixels flagged"
    assert not flagged[(first < 0) & checked].any(), "SATURATED on a pixel that never saturates"
