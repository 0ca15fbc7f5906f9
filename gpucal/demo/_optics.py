"""Optics of the demo reference set: the distortion model and the photometry table."""

from __future__ import annotations

import logging

import numpy as np

from gpucal.demo._detector import BORDER

__all__ = ["FILTERS", "PIXEL_SCALE", "distortion_model", "phot_table"]

log = logging.getLogger(__name__)

FILTERS = ("F062", "F087", "F106", "F129", "F146", "F158", "F184", "F213")
FILTER_WAVE = dict(zip(FILTERS, (0.62, 0.87, 1.06, 1.29, 1.46, 1.58, 1.84, 2.13), strict=True))  # micron
PIXEL_SCALE = 0.11  # arcsec / pixel


def distortion_model(nx: int, ny: int, v2v3: tuple[float, float], rng: np.random.Generator):
    """DISTORTION transform: pixel (x, y) of the trimmed image -> (v2, v3) in arcsec.

    0.11 arcsec/pixel, rotated by -60 degrees with vparity -1, plus small random quadratic
    and cubic terms (< ~1 arcsec at the corners); the image centre maps to ``v2v3``.

    Parameters
    ----------
    nx, ny : int
        Frame shape including the 4-pixel border; the trimmed image is (ny - 8, nx - 8).
    v2v3 : tuple of float
        (v2_ref, v3_ref) in arcsec.
    rng : numpy.random.Generator
        Source of the distortion coefficients.

    Returns
    -------
    astropy.modeling.CompoundModel
        With a fitted polynomial ``inverse`` (error ~1e-3 pixel) and the bounding box
        ``((-0.5, nx - 8.5), (-0.5, ny - 8.5))`` in (x, y) order.
    """
    from astropy.modeling import bind_bounding_box, fitting, models

    nxs, nys = nx - 2 * BORDER, ny - 2 * BORDER
    xc, yc = (nxs - 1) / 2.0, (nys - 1) / 2.0
    theta = np.deg2rad(-60.0)
    s = PIXEL_SCALE
    cs, sn = s * np.cos(theta), s * np.sin(theta)
    q2, q3 = rng.normal(0.0, 4e-8, 3), rng.normal(0.0, 1e-11, 4)
    # vparity -1: v2 decreases along the rotated x axis
    px = models.Polynomial2D(3, c1_0=-cs, c0_1=sn, c2_0=q2[0], c1_1=q2[1], c0_2=q2[2], c3_0=q3[0], c0_3=q3[1])
    py = models.Polynomial2D(3, c1_0=sn, c0_1=cs, c2_0=q2[1], c1_1=q2[2], c0_2=q2[0], c2_1=q3[2], c1_2=q3[3])
    shift_in = models.Shift(-xc) & models.Shift(-yc)
    shift_out = models.Shift(v2v3[0]) & models.Shift(v2v3[1])
    forward = shift_in | models.Mapping((0, 1, 0, 1)) | (px & py) | shift_out

    # polynomial inverse fitted on a grid covering the detector
    gx, gy = np.meshgrid(np.linspace(-xc - 2, xc + 2, 41), np.linspace(-yc - 2, yc + 2, 41))
    dv2, dv3 = px(gx, gy), py(gx, gy)
    fitter = fitting.LinearLSQFitter()
    ix = fitter(models.Polynomial2D(4), dv2, dv3, gx)
    iy = fitter(models.Polynomial2D(4), dv2, dv3, gy)
    err = np.hypot(ix(dv2, dv3) - gx, iy(dv2, dv3) - gy).max()
    log.debug("distortion inverse max error %.2e pixel", err)
    inverse = (
        (models.Shift(-v2v3[0]) & models.Shift(-v2v3[1]))
        | models.Mapping((0, 1, 0, 1))
        | (ix & iy)
        | (models.Shift(xc) & models.Shift(yc))
    )
    forward.inverse = inverse
    bind_bounding_box(forward, ((-0.5, nxs - 0.5), (-0.5, nys - 0.5)), order="F")
    return forward


def phot_table() -> dict:
    """PHOTOM ``phot_table``: numbers for F062-F213, null photometry for the dispersers and
    everything null for DARK and NOT_CONFIGURED (wfi_img_photom-2.0.0)."""
    wave = np.linspace(0.4, 2.6, 221).astype(np.float32)
    pixelareasr = float((PIXEL_SCALE / 206264.806) ** 2)
    table = {}
    for i, name in enumerate(FILTERS):
        centre = FILTER_WAVE[name]
        area = (3.2 * np.exp(-0.5 * ((wave - centre) / (0.08 * centre)) ** 6)).astype(np.float32)
        table[name] = {
            "photmjsr": 0.35 + 0.05 * i,
            "uncertainty": 0.01,
            "pixelareasr": pixelareasr,
            "collecting_area": 3.60,
            "wavelength": wave.copy(),
            "effective_area": area,
        }
    for name in ("GRISM", "GRISM_0", "PRISM"):
        table[name] = {
            "photmjsr": None,
            "uncertainty": None,
            "pixelareasr": None,
            "collecting_area": 3.60,
            "wavelength": wave.copy(),
            "effective_area": np.full(wave.shape, 1.5, dtype=np.float32),
        }
    for name in ("DARK", "NOT_CONFIGURED"):
        table[name] = dict.fromkeys(
            ("photmjsr", "uncertainty", "pixelareasr", "collecting_area", "wavelength", "effective_area")
        )
    return table
