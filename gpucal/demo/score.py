"""A demo exposure's cal file scored against its truth: the ramp-fit science figures.

Used by the full-frame truth tests (``tests/fullframe``) and ``bench/ramp_science.py``.
Cal arrays are the trimmed 4088 x 4088 science area (any frame trimmed by 4 pixels);
truth arrays are cut ``[4:-4, 4:-4]`` to match.  Definitions:

* **Unflagged pixel**: cal ``dq`` without DO_NOT_USE, SATURATED or JUMP_DET, finite data
  and positive finite err.  **Pull** ``(data - scene) / err`` (``Truth.scene``: the
  pipeline's dark subtraction and flat field make this ``(slope - rate) / err_slope``).
* **Detectable cosmic ray**: a hit after the first read of resultant 0, on a pixel that
  never reaches full well and is not DO_NOT_USE; found if the pixel has JUMP_DET.
  *Recorded* charge: a hit at read ``m`` (0-based) of the last resultant's ``N`` reads
  raises only ``N - m`` of them, so the ramp records ``(N - m) / N`` of its energy (all of
  it for a hit in any other resultant); ``cr_found_recorded`` counts the hits whose
  recorded charge is >= 100 e-.
* **False jump**: JUMP_DET on a *clean* pixel (no cosmic ray at it or its 8 neighbours).
* **Full-well pixel**: one with a read at full well (``Truth.first_full_well >= 0``)
  and a saturation check (no NO_SAT_CHECK).  It **must** carry SATURATED when a resultant
  reached the threshold (``first_saturated >= 0``) or when the reads at full well lowered
  the resultant holding them by at least that resultant's read noise
  (``full_well_deficit >= readnoise / sqrt(N_k)``); the *recall* counts all full-well
  pixels; a *false* SATURATED is one on a checked pixel that never reached full well.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from gpucal.demo.synth import Truth
from gpucal.dq import PixelFlag

__all__ = ["Cal", "Score", "read_cal", "pulls", "robust_std", "clean_pixels", "score", "pull_by_rate"]

TRIM = (slice(4, -4), slice(4, -4))
DNU, SAT, JUMP = int(PixelFlag.DO_NOT_USE), int(PixelFlag.SATURATED), int(PixelFlag.JUMP_DET)
NO_SAT_CHECK = int(PixelFlag.NO_SAT_CHECK)
UNFLAGGED_EXCLUDES = DNU | SAT | JUMP
CR_MIN_ENERGY = 100.0  # e-


class Cal(NamedTuple):
    """The arrays of a cal file that the scores read (trimmed science area)."""

    data: np.ndarray  # float32 DN/s
    err: np.ndarray  # float32
    dq: np.ndarray  # uint32


class Score(NamedTuple):
    """The science figures of one cal file (the module docstring defines them)."""

    pull_median: float
    pull_std: float  # 1.4826 MAD
    n_pull: int
    cr_found: float  # detectable hits >= 100 e-
    cr_found_100_300: float
    n_cr: int
    cr_found_recorded: float  # detectable hits whose recorded charge is >= 100 e-
    n_cr_recorded: int
    false_jumps: int
    n_clean: int
    sat_required_found: float
    n_sat_required: int
    sat_recall: float
    n_full_well: int
    sat_false: int
    n_never: int


def read_cal(path: str | Path) -> Cal:
    """The data, err and dq of a cal file."""
    import asdf

    with asdf.open(path, lazy_load=False, memmap=False) as af:
        roman = af["roman"]
        return Cal(
            data=np.asarray(roman["data"], dtype=np.float32),
            err=np.asarray(roman["err"], dtype=np.float32),
            dq=np.asarray(roman["dq"], dtype=np.uint32),
        )


def unflagged(cal: Cal) -> np.ndarray:
    """(ny, nx) bool: the pixels the pull statistics use."""
    return ((cal.dq & UNFLAGGED_EXCLUDES) == 0) & np.isfinite(cal.data) & np.isfinite(cal.err) & (cal.err > 0)


def pulls(cal: Cal, truth: Truth) -> np.ndarray:
    """``(data - scene) / err`` on the unflagged pixels."""
    scene = truth.scene[TRIM]
    use = unflagged(cal)
    return (cal.data[use] - scene[use]) / cal.err[use]


def robust_std(x: np.ndarray) -> float:
    """1.4826 times the median absolute deviation."""
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def clean_pixels(truth: Truth) -> np.ndarray:
    """(trimmed) bool: no cosmic ray at the pixel or any of its 8 neighbours."""
    cr = truth.cosmic_rays
    hit = np.zeros((truth.scene.shape[0] + 2, truth.scene.shape[1] + 2), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            hit[cr["y"] + 1 + dy, cr["x"] + 1 + dx] = True
    return ~hit[1:-1, 1:-1][TRIM]


def required_saturated(truth: Truth, readnoise: np.ndarray) -> np.ndarray:
    """(full frame) bool: full-well pixels whose saturation moved a resultant by >= 1 sigma."""
    first = truth.first_full_well
    nreads = np.array([len(r) for r in truth.read_pattern], dtype=np.float64)
    k = np.where(first >= 0, first, 0)
    sigma = readnoise / np.sqrt(nreads[k])
    return (first >= 0) & ((truth.first_saturated >= 0) | (truth.full_well_deficit >= sigma))


def score(cal: Cal, truth: Truth, readnoise: np.ndarray, clean: np.ndarray | None = None) -> Score:
    """Score ``cal`` against ``truth`` (``readnoise``: the READNOISE reference, full frame, DN)."""
    pull = pulls(cal, truth)
    cr = truth.cosmic_rays
    y, x = cr["y"] - 4, cr["x"] - 4
    first_read = truth.read_pattern[0][0]
    detectable = (
        (cr["read"] > first_read)
        & (truth.first_full_well[cr["y"], cr["x"]] < 0)
        & ((cal.dq[y, x] & DNU) == 0)
        & (cr["energy_e"] >= CR_MIN_ENERGY)
    )
    found = (cal.dq[y, x] & JUMP) != 0
    band = detectable & (cr["energy_e"] < 300.0)
    last = truth.read_pattern[-1]
    index = np.searchsorted(np.asarray(last), cr["read"])  # position among the last resultant's reads
    in_last = cr["read"] >= last[0]
    recorded = np.where(in_last, cr["energy_e"] * (len(last) - index) / len(last), cr["energy_e"])
    seen = detectable & (recorded >= CR_MIN_ENERGY)
    clean = clean_pixels(truth) if clean is None else clean
    checked = (cal.dq & NO_SAT_CHECK) == 0
    full = (truth.first_full_well[TRIM] >= 0) & checked
    required = required_saturated(truth, readnoise)[TRIM] & checked
    never = (truth.first_full_well[TRIM] < 0) & checked
    flagged = (cal.dq & SAT) != 0

    def frac(mask: np.ndarray, of: np.ndarray) -> float:
        return float(mask[of].mean()) if of.any() else float("nan")

    return Score(
        pull_median=float(np.median(pull)),
        pull_std=robust_std(pull),
        n_pull=int(pull.size),
        cr_found=frac(found, detectable),
        cr_found_100_300=frac(found, band),
        n_cr=int(detectable.sum()),
        cr_found_recorded=frac(found, seen),
        n_cr_recorded=int(seen.sum()),
        false_jumps=int(np.count_nonzero(cal.dq[clean] & JUMP)),
        n_clean=int(clean.sum()),
        sat_required_found=frac(flagged, required),
        n_sat_required=int(required.sum()),
        sat_recall=frac(flagged, full),
        n_full_well=int(full.sum()),
        sat_false=int(np.count_nonzero(flagged & never)),
        n_never=int(never.sum()),
    )


def pull_by_rate(cal: Cal, truth: Truth, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median pull, its robust width and the pixel count in bins of the true rate (DN/s)."""
    rate = truth.rate[TRIM]
    use = unflagged(cal)
    pull = (cal.data[use] - truth.scene[TRIM][use]) / cal.err[use]
    idx = np.digitize(rate[use], edges) - 1
    med, width, count = (np.full(edges.size - 1, np.nan) for _ in range(3))
    for b in range(edges.size - 1):
        p = pull[idx == b]
        count[b] = p.size
        if p.size >= 50:
            med[b] = np.median(p)
            width[b] = robust_std(p)
    return med, width, count
