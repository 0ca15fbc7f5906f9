"""Demo reference files: a consistent, realistic set of Roman WFI CRDS reference files.

:func:`make_references` writes one ASDF file per reference type the ExposurePipeline reads
(mask, saturation, refpix, darkdecaysignal, linearity, inverselinearity,
integralnonlinearity, readnoise, gain, dark, distortion, photom, flat) with roman_datamodels
1.1 reference models (schema set 2.0.0), and returns a :class:`ReferenceSet` with their paths
and the per-pixel detector parameters :mod:`gpucal.demo.synth` needs to simulate an
exposure the pipeline calibrates back to the truth.

Content (full frame; defect counts scale with the science area, at least one each):

* mask: REFERENCE_PIXEL on the border, ~340 DEAD/HOT/WARM/LOW_QE/TELEGRAPH/OTHER_BAD
  science pixels, ~8 BAD_REF_PIXEL border pixels;
* saturation: whole numbers 55000-62000 DN (raw, bias included), a few NaN with
  NO_SAT_CHECK;
* linearity ``[0, 1, b]`` with ``b`` 1.0e-6-2.0e-6 /DN (exact, see ``_detector``), and
  inverselinearity its degree-6 fit (|lin(ilin(x)) - x| < 0.01 DN up to 65535 raw DN); a few
  pixels with a NaN coefficient and a few with NO_LIN_CORR;
* integralnonlinearity: grid 0..65280 step 256 DN, per channel two sinusoids, |INL| < 1 DN;
* refpix: gamma = zeta = 0, alpha = L / (L + 2): R6 then subtracts the amp33 series;
* readnoise 5-7 DN per read; gain 1.8-2.1 e-/DN; dark 0.002-0.01 DN/s plus HOT/WARM pixels;
* darkdecaysignal for WFI01-WFI18: amplitude 1-5 DN, time constant 20-30 s;
* distortion: 0.11 arcsec/pixel affine plus a small cubic around (v2_ref, v3_ref), with a
  fitted polynomial inverse and the trimmed-image bounding box;
* photom for every optical element; flat 1 +- 2 % with LOW_QE pixels at ~0.6 and a few
  NaN/0 pixels (NO_FLAT_FIELD).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpucal.demo._detector import BORDER, NCHANNEL, PAD, check_geometry, fit_inverse_poly
from gpucal.demo._optics import FILTERS, distortion_model, phot_table
from gpucal.dq import PixelFlag

__all__ = ["REFTYPES", "ReferenceSet", "make_references", "load_references", "DETECTOR_V2V3"]

log = logging.getLogger(__name__)

REFTYPES = (
    "mask",
    "saturation",
    "refpix",
    "darkdecaysignal",
    "linearity",
    "inverselinearity",
    "integralnonlinearity",
    "readnoise",
    "gain",
    "dark",
    "distortion",
    "photom",
    "flat",
)
_PER_FILTER = ("dark", "distortion", "flat")

#: Approximate (v2_ref, v3_ref) of WFI01_FULL (arcsec): romanisim's WFI_CEN plus GalSim's
#: SCA-centre offset of SCA 1.  Other detectors reuse it; only the demo geometry needs it.
DETECTOR_V2V3 = (1301.82, -1257.81)
LIN_B_RANGE = (1.0e-6, 2.0e-6)  # 1/DN
ILIN_DEGREE = 6
INL_STEP = 256
_FULL_SCIENCE = 4088 * 4088
_USEAFTER = "2020-01-01T00:00:00.000"


@dataclass(frozen=True, eq=False)
class ReferenceSet:
    """Paths of a demo reference set and the detector parameters behind it.

    Attributes
    ----------
    paths : dict of str to Path
        Reference file per CRDS reftype (keys :data:`REFTYPES`).
    ny, nx : int
        Frame shape including the reference border.
    detector, optical_element : str
        ``WFInn`` and the filter the per-filter files (dark, distortion, flat) are for.
    nonlin_b : ndarray, shape (ny, nx), float32, 1/DN
        Effective LINEARITY parameter (``lambda = u + b u**2``); 0 where the pipeline
        replaces the coefficients by the identity (NaN coefficient or NO_LIN_CORR).
    gain : ndarray, shape (ny, nx), float32, e-/DN
    readnoise : ndarray, shape (ny, nx), float32, DN per read
    saturation : ndarray, shape (ny, nx), float32, raw DN (NaN = no saturation check)
    dark_slope : ndarray, shape (ny, nx), float32, DN/s (0 on the border)
    flat : ndarray, shape (ny - 8, nx - 8), float32 (NaN or 0 = no flat)
    mask_dq : ndarray, shape (ny, nx), uint32
    inl_grid : ndarray, shape (M,), float32, DN
    inl_correction : ndarray, shape (32, M), float64, DN
    dark_decay : tuple of float
        ``(amplitude DN, time_constant s)`` of ``detector``.
    v2v3_ref : tuple of float
        (v2_ref, v3_ref) of the detector's reference point (arcsec).
    """

    paths: dict[str, Path]
    ny: int
    nx: int
    detector: str
    optical_element: str
    nonlin_b: np.ndarray
    gain: np.ndarray
    readnoise: np.ndarray
    saturation: np.ndarray
    dark_slope: np.ndarray
    flat: np.ndarray
    mask_dq: np.ndarray
    inl_grid: np.ndarray
    inl_correction: np.ndarray
    dark_decay: tuple[float, float]
    v2v3_ref: tuple[float, float] = field(default=DETECTOR_V2V3)

    @property
    def channel_width(self) -> int:
        """Columns per detector channel (``nx // 32``)."""
        return self.nx // NCHANNEL


def _count(full: int, n_sci: int, minimum: int = 1) -> int:
    return max(minimum, int(round(full * n_sci / _FULL_SCIENCE)))


def _ref_meta(reftype: str, detector: str, description: str) -> dict:
    from astropy.time import Time

    return {
        "reftype": reftype,
        "author": "gpucal demo",
        "description": description,
        "pedigree": "DUMMY",
        "useafter": Time(_USEAFTER, format="isot", scale="utc"),
        "telescope": "ROMAN",
        "origin": "gpucal",
        "instrument": {"name": "WFI", "detector": detector},
    }


def _save(model, meta: Mapping, path: Path) -> Path:
    for key, value in meta.items():
        if isinstance(value, dict) and key in model.meta:
            model.meta[key].update(value)
        else:
            model.meta[key] = value
    model.save(path)
    log.debug("wrote %s", path)
    return path


def _nonlinearity(rng, shape, w) -> np.ndarray:
    """Per-pixel b (1/DN): a per-channel level plus pixel scatter, within LIN_B_RANGE."""
    lo, hi = LIN_B_RANGE
    chan = rng.uniform(lo + 0.15 * (hi - lo), hi - 0.15 * (hi - lo), NCHANNEL)
    b = np.repeat(chan, w)[None, :] + rng.normal(0.0, 0.08 * (hi - lo), shape)
    return np.clip(b, lo, hi).astype(np.float32)


def _ilin_coeffs(b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """INVERSELINEARITY coefficients ``c_j = d_j b**(j-1)``, shape (n, ny, nx) float32."""
    out = np.empty((d.size,) + b.shape, dtype=np.float32)
    b64 = b.astype(np.float64)
    out[0] = d[0]
    power = np.ones_like(b64)
    for j in range(1, d.size):
        out[j] = d[j] * power
        power *= b64
    return out


def _inl_tables(rng, m: int) -> tuple[np.ndarray, np.ndarray]:
    grid = (np.arange(m) * INL_STEP).astype(np.uint16)
    g = grid.astype(np.float64)
    amp1 = rng.uniform(0.3, 0.6, (NCHANNEL, 1))
    amp2 = rng.uniform(0.1, 0.35, (NCHANNEL, 1))
    per1 = rng.uniform(15000.0, 40000.0, (NCHANNEL, 1))
    per2 = rng.uniform(4000.0, 9000.0, (NCHANNEL, 1))
    ph1, ph2 = rng.uniform(0, 2 * np.pi, (2, NCHANNEL, 1))
    corr = amp1 * np.sin(2 * np.pi * g / per1 + ph1) + amp2 * np.sin(2 * np.pi * g / per2 + ph2)
    return grid, corr


def make_references(
    outdir: str | Path,
    ny: int = 4096,
    nx: int = 4096,
    detector: str = "WFI01",
    optical_element: str = "F158",
    seed: int = 0,
) -> ReferenceSet:
    """Write a demo reference set and return it.

    Parameters
    ----------
    outdir : str or Path
        Directory for the files (created); names are
        ``gpucal_demo_<detector>[_<filter>]_<reftype>.asdf``, lower case.
    ny, nx : int
        Frame shape including the 4-pixel border (``nx % 32 == 0``, ``nx // 32 >= 8``,
        ``ny >= 16``); romancal itself needs 4096 x 4096.
    detector : str
        ``WFI01`` ... ``WFI18``.
    optical_element : str
        Filter of the dark, distortion and flat files.
    seed : int
        Seed of :func:`numpy.random.default_rng`; equal seeds give equal files.

    Returns
    -------
    ReferenceSet
    """
    from roman_datamodels import datamodels as dm

    w = check_geometry(ny, nx)
    if not (detector.startswith("WFI") and detector[3:].isdigit() and 1 <= int(detector[3:]) <= 18):
        raise ValueError(f"detector must be WFI01..WFI18, got {detector!r}")
    if optical_element not in FILTERS:
        raise ValueError(f"optical_element must be one of {FILTERS}, got {optical_element!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (ny, nx)
    det, filt = detector.lower(), optical_element.lower()

    def path(reftype: str) -> Path:
        tag = f"{det}_{filt}" if reftype in _PER_FILTER else det
        return outdir / f"gpucal_demo_{tag}_{reftype}.asdf"

    paths: dict[str, Path] = {}
    science = np.zeros(shape, dtype=bool)
    science[BORDER:-BORDER, BORDER:-BORDER] = True
    n_sci = int(science.sum())

    # --- defect pixels: disjoint random science pixels per category -------------------
    full_counts = {
        "dead": 80, "hot": 120, "warm": 60, "low_qe": 40, "telegraph": 20, "other": 20,
        "sat_nan": 10, "lin_nan": 8, "lin_flag": 8, "flat_nan": 6, "flat_zero": 6,
    }  # fmt: skip
    counts = {k: _count(v, n_sci) for k, v in full_counts.items()}
    sci_flat = np.flatnonzero(science.ravel())
    picks = rng.choice(sci_flat, size=sum(counts.values()), replace=False)
    defects, start = {}, 0
    for key, n in counts.items():
        defects[key] = np.unravel_index(picks[start : start + n], shape)
        start += n
    border_flat = np.flatnonzero(~science.ravel())
    bad_ref = np.unravel_index(rng.choice(border_flat, size=_count(8, n_sci, 2), replace=False), shape)

    # --- mask -------------------------------------------------------------------------
    mask_dq = np.where(science, 0, PixelFlag.REFERENCE_PIXEL).astype(np.uint32)
    mask_dq[bad_ref] |= np.uint32(PixelFlag.BAD_REF_PIXEL)
    for key, flag in (
        ("dead", PixelFlag.DEAD | PixelFlag.DO_NOT_USE),
        ("hot", PixelFlag.HOT),
        ("warm", PixelFlag.WARM),
        ("low_qe", PixelFlag.LOW_QE),
        ("telegraph", PixelFlag.TELEGRAPH),
        ("other", PixelFlag.OTHER_BAD_PIXEL | PixelFlag.DO_NOT_USE),
    ):
        mask_dq[defects[key]] |= np.uint32(flag)
    model = dm.MaskRefModel.create_fake_data(shape=(8, 8))
    model.dq = mask_dq
    paths["mask"] = _save(model, _ref_meta("MASK", detector, "gpucal demo bad-pixel mask"), path("mask"))

    # --- saturation ---------------------------------------------------------------------
    saturation = np.rint(rng.uniform(55000.0, 62000.0, shape)).astype(np.float32)
    saturation[defects["sat_nan"]] = np.nan
    sat_dq = np.zeros(shape, dtype=np.uint32)
    sat_dq[defects["sat_nan"]] = np.uint32(PixelFlag.NO_SAT_CHECK)
    model = dm.SaturationRefModel.create_fake_data(shape=(8, 8))
    model.data, model.dq = saturation, sat_dq
    paths["saturation"] = _save(
        model, _ref_meta("SATURATION", detector, "gpucal demo saturation (raw DN)"), path("saturation")
    )

    # --- linearity / inverse linearity -----------------------------------------------------
    b = _nonlinearity(rng, shape, w)
    lam_max = 65535.0 * (1.0 + LIN_B_RANGE[1] * 65535.0)  # linearize(65535) at the largest b
    d = fit_inverse_poly(LIN_B_RANGE[1] * lam_max, ILIN_DEGREE)
    lin = np.zeros((3,) + shape, dtype=np.float32)
    lin[1], lin[2] = 1.0, b
    ilin = _ilin_coeffs(b, d)
    lin[2][defects["lin_nan"]] = np.nan
    ilin[2][defects["lin_nan"]] = np.nan
    lin_dq = np.zeros(shape, dtype=np.uint32)
    lin_dq[defects["lin_flag"]] = PixelFlag.NO_LIN_CORR
    model = dm.LinearityRefModel.create_fake_data(shape=(3, 8, 8))
    model.coeffs, model.dq = lin, lin_dq
    paths["linearity"] = _save(
        model, _ref_meta("LINEARITY", detector, "gpucal demo linearity: u + b u^2"), path("linearity")
    )
    del lin
    model = dm.InverselinearityRefModel.create_fake_data(shape=(3, 8, 8))
    model.coeffs, model.dq = ilin, np.zeros(shape, dtype=np.uint32)
    paths["inverselinearity"] = _save(
        model,
        _ref_meta("INVERSELINEARITY", detector, f"gpucal demo inverse linearity: degree-{ILIN_DEGREE} fit"),
        path("inverselinearity"),
    )
    del ilin, model
    nonlin_b = b.copy()
    nonlin_b[defects["lin_nan"]] = 0.0
    nonlin_b[defects["lin_flag"]] = 0.0

    # --- integral non-linearity ---------------------------------------------------------
    inl_grid, inl_corr = _inl_tables(rng, 65536 // INL_STEP)
    model = dm.IntegralnonlinearityRefModel.create_fake_data(shape=(8,))
    model.value = inl_grid
    model.inl_table = {
        f"science_channel_{c + 1:02d}": {"instrument_channel": c, "correction": inl_corr[c].copy()}
        for c in range(NCHANNEL)
    }
    meta = _ref_meta("INTEGRALNONLINEARITY", detector, "gpucal demo integral non-linearity")
    meta.update(n_channels=NCHANNEL, n_pixels_per_channel=w * ny)
    paths["integralnonlinearity"] = _save(model, meta, path("integralnonlinearity"))

    # --- refpix ------------------------------------------------------------------------------
    length = ny * (w + PAD)
    nfreq = length // 2 + 1
    model = dm.RefpixRefModel.create_fake_data(shape=(8, 8))
    model.gamma = np.zeros((NCHANNEL, nfreq), dtype=np.complex128)
    model.zeta = np.zeros((NCHANNEL, nfreq), dtype=np.complex128)
    model.alpha = np.full((NCHANNEL, nfreq), length / (length + 2.0), dtype=np.complex128)
    paths["refpix"] = _save(
        model, _ref_meta("REFPIX", detector, "gpucal demo refpix: subtract amp33 only"), path("refpix")
    )
    del model

    # --- dark decay -----------------------------------------------------------------------------
    amps = rng.uniform(1.0, 5.0, 18)
    taus = rng.uniform(20.0, 30.0, 18)
    table = {f"WFI{i + 1:02d}": {"amplitude": float(amps[i]), "time_constant": float(taus[i])} for i in range(18)}
    model = dm.DarkdecaysignalRefModel.create_fake_data()
    model.decay_table = table
    paths["darkdecaysignal"] = _save(
        model, _ref_meta("DARKDECAYSIGNAL", detector, "gpucal demo dark decay signal"), path("darkdecaysignal")
    )
    sca = int(detector[3:])
    dark_decay = (float(amps[sca - 1]), float(taus[sca - 1]))

    # --- read noise, gain ---------------------------------------------------------------------
    exposure = {"type": "WFI_IMAGE", "p_exptype": "WFI_IMAGE|"}
    readnoise = np.clip(rng.normal(6.0, 0.35, shape), 5.0, 7.0).astype(np.float32)
    model = dm.ReadnoiseRefModel.create_fake_data(shape=(8, 8))
    model.data = readnoise
    meta = _ref_meta("READNOISE", detector, "gpucal demo read noise (DN per read)")
    meta["exposure"] = dict(exposure)
    paths["readnoise"] = _save(model, meta, path("readnoise"))
    chan_gain = rng.uniform(1.85, 2.05, NCHANNEL)
    gain = np.clip(np.repeat(chan_gain, w)[None, :] + rng.normal(0.0, 0.02, shape), 1.8, 2.1).astype(np.float32)
    model = dm.GainRefModel.create_fake_data(shape=(8, 8))
    model.data = gain
    paths["gain"] = _save(model, _ref_meta("GAIN", detector, "gpucal demo gain (e-/DN)"), path("gain"))

    # --- dark ------------------------------------------------------------------------------------
    dark = np.where(science, rng.uniform(0.002, 0.01, shape), 0.0).astype(np.float32)
    dark_dq = np.zeros(shape, dtype=np.uint32)
    hot, warm = defects["hot"], defects["warm"]
    dark[hot] = np.exp(rng.uniform(np.log(0.5), np.log(20.0), hot[0].size))
    dark[warm] = rng.uniform(0.05, 0.5, warm[0].size)
    dark_dq[hot] = PixelFlag.HOT
    dark_dq[warm] = PixelFlag.WARM
    model = dm.DarkRefModel.create_fake_data(shape=(8, 8))
    model.dark_slope, model.dq = dark, dark_dq
    model.dark_slope_error = np.where(science, 0.001, 0.0).astype(np.float32)
    meta = _ref_meta("DARK", detector, "gpucal demo dark rate (DN/s)")
    meta["instrument"]["optical_element"] = optical_element
    meta["exposure"] = dict(exposure)
    paths["dark"] = _save(model, meta, path("dark"))

    # --- distortion ---------------------------------------------------------------------------------
    model = dm.DistortionRefModel.create_fake_data()
    model.coordinate_distortion_transform = distortion_model(nx, ny, DETECTOR_V2V3, rng)
    meta = _ref_meta("DISTORTION", detector, "gpucal demo distortion (pixel -> v2, v3 arcsec)")
    meta["instrument"]["optical_element"] = optical_element
    paths["distortion"] = _save(model, meta, path("distortion"))

    # --- photom ---------------------------------------------------------------------------------------
    model = dm.WfiImgPhotomRefModel.create_fake_data()
    model.phot_table = phot_table()
    paths["photom"] = _save(model, _ref_meta("PHOTOM", detector, "gpucal demo photometry"), path("photom"))

    # --- flat -------------------------------------------------------------------------------------------
    flat = rng.normal(1.0, 0.02, (ny - 2 * BORDER, nx - 2 * BORDER)).astype(np.float32)
    flat_dq = np.zeros(flat.shape, dtype=np.uint32)
    low = (defects["low_qe"][0] - BORDER, defects["low_qe"][1] - BORDER)
    flat[low] = rng.uniform(0.5, 0.7, low[0].size)
    for key, value in (("flat_nan", np.nan), ("flat_zero", 0.0)):
        idx = (defects[key][0] - BORDER, defects[key][1] - BORDER)
        flat[idx] = value
        flat_dq[idx] = PixelFlag.NO_FLAT_FIELD
    model = dm.FlatRefModel.create_fake_data(shape=(8, 8))
    model.data, model.dq = flat, flat_dq
    model.err = np.full(flat.shape, 0.005, dtype=np.float32)
    meta = _ref_meta("FLAT", detector, "gpucal demo flat field")
    meta["instrument"]["optical_element"] = optical_element
    paths["flat"] = _save(model, meta, path("flat"))

    log.info(
        "wrote %d demo reference files (%d x %d, %s, %s) to %s", len(paths), ny, nx, detector, optical_element, outdir
    )
    return ReferenceSet(
        paths=paths,
        ny=ny,
        nx=nx,
        detector=detector,
        optical_element=optical_element,
        nonlin_b=nonlin_b,
        gain=gain,
        readnoise=readnoise,
        saturation=saturation,
        dark_slope=dark,
        flat=flat,
        mask_dq=mask_dq,
        inl_grid=inl_grid.astype(np.float32),
        inl_correction=inl_corr,
        dark_decay=dark_decay,
    )


def load_references(paths: Mapping[str, str | Path], optical_element: str | None = None) -> ReferenceSet:
    """Rebuild a :class:`ReferenceSet` from files written by :func:`make_references`.

    Parameters
    ----------
    paths : mapping of str to path
        File per reftype; all of :data:`REFTYPES` are needed.
    optical_element : str, optional
        Defaults to the flat file's ``meta.instrument.optical_element``.

    Returns
    -------
    ReferenceSet
        ``nonlin_b`` is taken from the linearity ``c2`` coefficient, set to 0 where the
        pipeline would use the identity (NaN coefficient, ``c1 == 0`` or NO_LIN_CORR).
    """
    from roman_datamodels import datamodels as dm

    missing = [r for r in REFTYPES if r not in paths]
    if missing:
        raise ValueError(f"missing reference files for {missing}")
    p = {k: Path(v) for k, v in paths.items()}

    def arr(x) -> np.ndarray:
        return np.asarray(x).copy()

    with dm.open(p["linearity"]) as m:
        coeffs = np.asarray(m.coeffs)
        detector = str(m.meta.instrument.detector)
        ny, nx = coeffs.shape[1:]
        b = arr(coeffs[2]) if coeffs.shape[0] > 2 else np.zeros((ny, nx), np.float32)
        ident = np.isnan(coeffs).any(axis=0) | (coeffs[1] == 0) | ((np.asarray(m.dq) & PixelFlag.NO_LIN_CORR) != 0)
        if coeffs.shape[0] > 3:
            ident |= (coeffs[3:] != 0).any(axis=0)  # not the demo's form: treat as linear
        b[ident] = 0.0
    with dm.open(p["gain"]) as m:
        gain = arr(m.data)
    with dm.open(p["readnoise"]) as m:
        readnoise = arr(m.data)
    with dm.open(p["saturation"]) as m:
        saturation = arr(m.data)
    with dm.open(p["dark"]) as m:
        dark = arr(m.dark_slope)
    with dm.open(p["flat"]) as m:
        flat = arr(m.data)
        optical_element = optical_element or str(m.meta.instrument.optical_element)
    with dm.open(p["mask"]) as m:
        mask_dq = arr(m.dq)
    with dm.open(p["integralnonlinearity"]) as m:
        grid = arr(m.value).astype(np.float32)
        corr = np.stack([arr(m.inl_table[f"science_channel_{c + 1:02d}"]["correction"]) for c in range(NCHANNEL)])
    with dm.open(p["darkdecaysignal"]) as m:
        entry = m.decay_table[detector]
        dark_decay = (float(entry["amplitude"]), float(entry["time_constant"]))
    return ReferenceSet(
        paths=p,
        ny=int(ny),
        nx=int(nx),
        detector=detector,
        optical_element=optical_element,
        nonlin_b=b.astype(np.float32),
        gain=gain,
        readnoise=readnoise,
        saturation=saturation,
        dark_slope=dark,
        flat=flat,
        mask_dq=mask_dq,
        inl_grid=grid,
        inl_correction=corr,
        dark_decay=dark_decay,
    )
