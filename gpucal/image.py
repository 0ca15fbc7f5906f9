"""Building the Level 2 ImageModel from a fitted ramp, and its statistics.

Mirrors romancal 1.1.0's ramp-fit image assembly: the 4-pixel reference border is
trimmed, ``err``/``var_*``/``chisq``/``dumo`` are float16, ``meta.cal_step`` is rebuilt
from the ramp's, photometry gets placeholders until photom runs.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from gpucal.dq import GroupFlag, PixelFlag
from gpucal.stepbase import CAL_STEP_KEYS

__all__ = ["create_image_model", "image_statistics", "fully_saturated_image", "jump_indices", "BORDER"]

BORDER = 4
_TRIM = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
_RAMP_COPIES = (
    "amp33",
    "border_ref_pix_left",
    "border_ref_pix_right",
    "border_ref_pix_top",
    "border_ref_pix_bottom",
    "dq_border_ref_pix_left",
    "dq_border_ref_pix_right",
    "dq_border_ref_pix_top",
    "dq_border_ref_pix_bottom",
)


def jump_indices(groupdq: np.ndarray) -> np.ndarray:
    """(N, 3) int16 (resultant, y, x) of JUMP_DET flags in the science area, trimmed coords."""
    science = groupdq[:, BORDER:-BORDER, BORDER:-BORDER]
    k, y, x = np.nonzero(science & np.uint8(GroupFlag.JUMP_DET))
    return np.stack([k, y, x], axis=1).astype(np.int16) if k.size else np.zeros((0, 3), dtype=np.int16)


def create_image_model(
    ramp: Any,
    slope: np.ndarray,
    dq: np.ndarray,
    err: np.ndarray,
    var_poisson: np.ndarray,
    var_rnoise: np.ndarray,
    chisq: np.ndarray | None,
    slope_uniform: np.ndarray,
    include_var_rnoise: bool = False,
    record_jumps: np.ndarray | None = None,
) -> Any:
    """A WfiImage model from full-frame ramp-fit products (all ``(ny, nx)``)."""
    import roman_datamodels.datamodels as rdm

    im = rdm.ImageModel()
    im.meta = copy.deepcopy(ramp["meta"])
    im.meta.model_type = "ImageModel"
    im.meta.product_type = "l2"
    old = ramp.meta.cal_step if "cal_step" in ramp.meta else {}
    cal_step = {key: old.get(key, "INCOMPLETE") for key in CAL_STEP_KEYS}
    for key in old:
        cal_step.setdefault(key, old[key])  # gpucal's extra keys (jump)
    im.meta.cal_step = cal_step
    im.meta.cal_logs = []
    im.meta.photometry = {
        "conversion_megajanskys": -999999,
        "conversion_megajanskys_uncertainty": -999999,
        "pixel_area": -999999,
    }
    if "wcs" not in im.meta:
        im.meta.wcs = None
    # array methods only: the arrays may live on the device (they come back in one go
    # when the pipeline ends), so no NumPy functions that would pull them to the host
    for name in _RAMP_COPIES:
        im[name] = ramp[name].copy()
    im.data = slope[_TRIM].astype(np.float32, order="C")
    im.dq = dq[_TRIM].astype(np.uint32, order="C")
    im.err = err[_TRIM].astype(np.float16)
    im.var_poisson = var_poisson[_TRIM].astype(np.float16)
    if include_var_rnoise:
        im.var_rnoise = var_rnoise[_TRIM].astype(np.float16)
    im.chisq = (chisq[_TRIM] if chisq is not None else np.zeros_like(im.data)).astype(np.float16)
    im.dumo = (slope_uniform[_TRIM] - im.data).astype(np.float16)
    if record_jumps is not None:
        im["jump_indices"] = record_jumps
    return im


def fully_saturated_image(ramp: Any, slope_uniform: np.ndarray) -> Any:
    """romancal's product for an exposure whose every pixel is saturated."""
    shape = ramp.pixeldq.shape
    zeros = np.zeros(shape, dtype=np.float32)
    dq = ramp.pixeldq | ramp.groupdq[0] | np.uint32(PixelFlag.SATURATED)
    im = create_image_model(ramp, zeros, dq, zeros, zeros, zeros, None, slope_uniform)
    im.meta.cal_step.ramp_fit = "SKIPPED"
    return im


def image_statistics(model: Any) -> dict[str, float]:
    """``meta.statistics``: median and MAD-based rms of good pixels, good fraction."""
    data = np.asarray(model.data)
    dq = np.asarray(model.dq)
    err = np.asarray(model.err, dtype=np.float32)
    good = np.isfinite(data) & ((dq & PixelFlag.DO_NOT_USE) == 0) & (err > 0)
    n = int(good.sum())
    if n == 0:
        return {"zodiacal_light": -1.0, "image_median": float("nan"), "image_rms": float("nan"), "good_pixel_fraction": 0.0}
    values = data[good]
    median = float(np.median(values))
    rms = float(1.482602218505602 * np.median(np.abs(values - median)))
    return {
        "zodiacal_light": -1.0,
        "image_median": median,
        "image_rms": rms,
        "good_pixel_fraction": n / data.size,
    }
