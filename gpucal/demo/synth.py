"""Simulated Level 1 exposures (``*_uncal.asdf``) with a known truth.

:func:`make_exposure` simulates a Roman WFI ramp read by read from a demo
:class:`~gpucal.demo.references.ReferenceSet` and writes a ``ScienceRawModel``
(``wfi_science_raw-2.1.0``).  Read ``r`` happens at ``t = r * frame_time``; each resultant is
the mean of its reads, rounded and clipped to uint16.  Per read, for every pixel:

1. accumulated charge ``Q += Poisson(rate * gain * frame_time)`` (e-), plus cosmic-ray
   energies deposited at their read (a step from that read on);
2. linear DN ``lambda = bias + Q / gain``;
3. detector response ``w = P_lin^-1(lambda)`` (exact inverse of the LINEARITY polynomial,
   see :mod:`gpucal.demo._detector`), plus the dark-decay signal
   ``A exp(-(t0(y, x) + (r - 1.5) frame_time) / T)`` on science pixels, white read noise
   (READNOISE, DN per read) and correlated 1/f noise;
4. ADC integral non-linearity: ``u = w - INL(w - INL(w))`` so that ``u + INL(u) = w``;
5. saturation: ``u = min(u, S)`` with S the SATURATION threshold (65535 where NaN).

The 1/f noise is one series per read in read order (``n = (w + 12) y + j``, odd channels
reversed; algorithms.md §3 R2), the same for the 32 channels and amp33, so the demo REFPIX
file (amp33 subtraction) removes it.  Reference pixels and amp33 get bias and noise, no
signal; the dark decay is put on science pixels only so that refpix's trend fit on the
reference rows does not remove part of it before the dark_decay step does.

Scene (science pixels): sky 0.5-2 DN/s with a gentle gradient, Gaussian stars (FWHM
1.5-2 px; a power-law flux distribution from 10 DN/s plus a few bright enough to saturate),
multiplied by the flat (1 where the flat is NaN/0, 0 for DEAD pixels), plus the dark rate.
Cosmic rays hit ~1.1e-5 science pixels per second (1e-3 over a 91 s ramp) with energies
log-uniform in 20-5000 e-.  The frame is simulated in blocks of rows on a thread pool, each
block with its own child of ``SeedSequence(seed)``: equal seeds give equal files (but for
``meta.file_date``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpucal.demo._detector import (
    BORDER,
    NCHANNEL,
    PAD,
    amp33_read_order_index,
    check_geometry,
    default_read_pattern,
    delinearize,
    inl_lookup,
    read_order_index,
)
from gpucal.demo._l1meta import fill_meta
from gpucal.demo.references import ReferenceSet
from gpucal.dq import PixelFlag
from gpucal.readpattern import read_timing

__all__ = ["DEFAULT_ROOT", "Truth", "demo_paths", "make_exposure"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = "r0000101001001001001_0001_wfi01_f158"
FRAME_TIME = 3.04  # s
CR_RATE = 1.1e-5  # hits per science pixel per second (1e-3 over a 91 s ramp)
CR_ENERGY = (20.0, 5000.0)  # e-, log-uniform
ONEF_RMS = 3.0  # DN per read, correlated 1/f noise
AMP33_NOISE = 2.5  # DN per read, white noise of the amp33 output
BLOCK_ROWS = 128
_FULL_SCIENCE = 4088 * 4088
_CR_DTYPE = np.dtype([("y", "<i4"), ("x", "<i4"), ("read", "<i4"), ("energy_e", "<f4")])


def demo_paths(outdir: str | Path, root: str = DEFAULT_ROOT) -> tuple[Path, Path]:
    """``(<outdir>/<root>_uncal.asdf, <outdir>/<root>_truth.npz)``."""
    outdir = Path(outdir)
    return outdir / f"{root}_uncal.asdf", outdir / f"{root}_truth.npz"


@dataclass(frozen=True, eq=False)
class Truth:
    """What a simulated exposure contains.

    Attributes
    ----------
    rate : ndarray, shape (ny, nx), float32, DN/s
        Linear count rate a ramp fit should find: scene times flat response plus dark
        current (0 on the reference border).
    scene : ndarray, shape (ny, nx), float32, DN/s
        Illumination before flat response and dark: what the calibrated image (after dark
        subtraction and flat fielding) should show; 0 on the border.
    bias : ndarray, shape (ny, nx), float32, DN
        Pedestal (linear DN) included in ``lambda``.
    cosmic_rays : ndarray, shape (n,), structured
        Fields ``y``, ``x`` (frame pixel), ``read`` (1-based read from which the charge is
        present) and ``energy_e`` (e-).
    first_saturated : ndarray, shape (ny, nx), int16
        First resultant with ``data >= threshold`` (NaN thresholds never), -1 if none.
    first_full_well : ndarray, shape (ny, nx), int16
        First resultant holding a read at full well (``u >= S`` before the clip, step 5),
        -1 if none; a resultant can hold one while its average stays below the threshold.
    full_well_deficit : ndarray, shape (ny, nx), float32, DN
        How much the clip lowered that resultant (``mean(u - min(u, S))`` over its reads);
        0 where ``first_full_well < 0``.
    read_pattern : tuple of tuple of int
    frame_time : float
        Seconds between reads.
    seed : int
    """

    rate: np.ndarray
    scene: np.ndarray
    bias: np.ndarray
    cosmic_rays: np.ndarray
    first_saturated: np.ndarray
    first_full_well: np.ndarray
    full_well_deficit: np.ndarray
    read_pattern: tuple[tuple[int, ...], ...]
    frame_time: float
    seed: int

    def save(self, path: str | Path) -> Path:
        """Write the truth to an ``.npz`` file (uncompressed) and return its path."""
        path = Path(path)
        flat = np.concatenate([np.asarray(r, dtype=np.int32) for r in self.read_pattern])
        lengths = np.array([len(r) for r in self.read_pattern], dtype=np.int32)
        with open(path, "wb") as fh:
            np.savez(
                fh,
                rate=self.rate,
                scene=self.scene,
                bias=self.bias,
                cosmic_rays=self.cosmic_rays,
                first_saturated=self.first_saturated,
                first_full_well=self.first_full_well,
                full_well_deficit=self.full_well_deficit,
                read_pattern_reads=flat,
                read_pattern_lengths=lengths,
                frame_time=np.float64(self.frame_time),
                seed=np.int64(self.seed),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Truth:
        """Read a truth written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            reads = z["read_pattern_reads"].tolist()
            pattern, i = [], 0
            for n in z["read_pattern_lengths"].tolist():
                pattern.append(tuple(reads[i : i + n]))
                i += n
            return cls(
                rate=z["rate"],
                scene=z["scene"],
                bias=z["bias"],
                cosmic_rays=z["cosmic_rays"],
                first_saturated=z["first_saturated"],
                first_full_well=z["first_full_well"],
                full_well_deficit=z["full_well_deficit"],
                read_pattern=tuple(pattern),
                frame_time=float(z["frame_time"]),
                seed=int(z["seed"]),
            )


def _scene(rng: np.random.Generator, ny: int, nx: int, crowding: float = 1.0) -> np.ndarray:
    """Sky plus stars (DN/s), shape (ny, nx) float64, zero on the border; ``crowding``
    multiplies the number of stars."""
    from scipy.special import erf

    scene = np.zeros((ny, nx), dtype=np.float64)
    yy = (np.arange(ny) - ny / 2) / ny
    xx = (np.arange(nx) - nx / 2) / nx
    level = rng.uniform(0.8, 1.5)
    gy, gx = rng.uniform(-0.3, 0.3, 2)
    scene[:] = level * (1 + gy * yy[:, None] + gx * xx[None, :])

    n_sci = (ny - 2 * BORDER) * (nx - 2 * BORDER)
    n_faint = max(8, int(round(1000 * crowding * n_sci / _FULL_SCIENCE)))
    n_bright = max(2, int(round(30 * crowding * n_sci / _FULL_SCIENCE)))
    flux = np.concatenate(
        [
            np.minimum(10.0 * rng.uniform(0.0, 1.0, n_faint) ** (-1 / 0.6), 3e5),  # N(>F) ~ F^-0.6
            np.exp(rng.uniform(np.log(2e4), np.log(3e5), n_bright)),
        ]
    )
    n = flux.size
    xs = rng.uniform(BORDER + 1, nx - BORDER - 2, n)
    ys = rng.uniform(BORDER + 1, ny - BORDER - 2, n)
    sigma = rng.uniform(1.5, 2.0, n) / (2 * np.sqrt(2 * np.log(2)))
    half = 5
    off = np.arange(-half, half + 1)
    ix = np.floor(xs + 0.5).astype(np.int64)[:, None] + off  # (n, 11)
    iy = np.floor(ys + 0.5).astype(np.int64)[:, None] + off
    s2 = (np.sqrt(2) * sigma)[:, None]

    def frac(i, c):
        return 0.5 * (erf((i + 0.5 - c[:, None]) / s2) - erf((i - 0.5 - c[:, None]) / s2))

    stamp = flux[:, None, None] * frac(iy, ys)[:, :, None] * frac(ix, xs)[:, None, :]
    yi = np.broadcast_to(iy[:, :, None], stamp.shape)
    xi = np.broadcast_to(ix[:, None, :], stamp.shape)
    ok = (yi >= BORDER) & (yi < ny - BORDER) & (xi >= BORDER) & (xi < nx - BORDER)
    np.add.at(scene, (yi[ok], xi[ok]), stamp[ok])
    scene[:BORDER], scene[-BORDER:], scene[:, :BORDER], scene[:, -BORDER:] = 0, 0, 0, 0
    log.debug("scene: sky %.2f DN/s, %d stars, brightest %.3g DN/s", level, n, flux.max())
    return scene


def _onef_series(rng: np.random.Generator, nreads: int, length: int, rms: float) -> np.ndarray:
    """Independent 1/f noise series per read, shape (nreads, length) float32, DN."""
    out = np.empty((nreads, length), dtype=np.float32)
    nf = length // 2 + 1
    scale = np.zeros(nf)
    scale[1:] = 1 / np.sqrt(np.arange(1, nf))
    for r in range(nreads):
        spec = (rng.standard_normal(nf) + 1j * rng.standard_normal(nf)) * scale
        series = np.fft.irfft(spec, n=length)
        out[r] = series * (rms / series.std())
    return out


def _normalize_pattern(read_pattern, nresultants) -> tuple[tuple[int, ...], ...]:
    pattern = default_read_pattern(nresultants) if read_pattern is None else read_pattern
    return tuple(tuple(int(r) for r in res) for res in pattern)


def make_exposure(
    path: str | Path,
    refs: ReferenceSet,
    read_pattern: Sequence[Sequence[int]] | None = None,
    nresultants: int = 8,
    seed: int = 0,
    *,
    frame_time: float = FRAME_TIME,
    start_time: str = "2027-03-15T12:00:00.000",
    dark_decay: bool = True,
    onef_rms: float = ONEF_RMS,
    cr_rate: float = CR_RATE,
    crowding: float = 1.0,
    workers: int | None = None,
) -> Truth:
    """Simulate one exposure, write it as a Level 1 ASDF file and return its truth.

    Parameters
    ----------
    path : str or Path
        Output file (``.asdf``); ``meta.filename`` is its basename.
    refs : ReferenceSet
        Detector model and geometry (from :func:`~gpucal.demo.make_references`).
    read_pattern : sequence of sequence of int, optional
        1-based reads per resultant; default :func:`~gpucal.demo.default_read_pattern`
        of ``nresultants``.
    nresultants : int
        Used only without ``read_pattern``.
    seed : int
        Seed; equal seeds give equal data.
    frame_time : float
        Seconds between reads.
    start_time : str
        ISO UTC start of the exposure.
    dark_decay : bool
        Add the DARKDECAYSIGNAL signal (which the pipeline subtracts).
    onef_rms : float
        RMS (DN per read) of the correlated 1/f noise.
    cr_rate : float
        Cosmic-ray hits per science pixel per second.
    crowding : float
        Multiplies the number of stars (1: the demo's field).
    workers : int, optional
        Threads (default: CPU count, at most 8).

    Returns
    -------
    Truth
    """
    from roman_datamodels import datamodels as dm

    from cpu_fallback.dark_decay import frame_read_times

    ny, nx = refs.ny, refs.nx
    w = check_geometry(ny, nx)
    pattern = _normalize_pattern(read_pattern, nresultants)
    timing = read_timing(pattern, frame_time)
    nres, last_read = len(pattern), int(timing.last_read[-1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    workers = workers or min(os.cpu_count() or 1, 8)

    ss = np.random.SeedSequence(seed)
    s_scene, s_bias, s_cr, s_onef, s_amp, s_blocks = ss.spawn(6)

    # --- rates (DN/s) ---------------------------------------------------------------------
    scene = _scene(np.random.default_rng(s_scene), ny, nx, crowding)
    response = np.ones((ny, nx), dtype=np.float64)
    flat = refs.flat.astype(np.float64)
    good_flat = np.isfinite(flat) & (flat != 0)
    response[BORDER:-BORDER, BORDER:-BORDER] = np.where(good_flat, flat, 1.0)
    dead = (refs.mask_dq & PixelFlag.DEAD) != 0
    response[dead] = 0.0
    science = np.zeros((ny, nx), dtype=bool)
    science[BORDER:-BORDER, BORDER:-BORDER] = True
    rate = np.where(science & ~dead, scene * response + refs.dark_slope, 0.0).astype(np.float32)
    del response

    # --- pedestal ---------------------------------------------------------------------------
    rng = np.random.default_rng(s_bias)
    bias = (
        np.repeat(rng.uniform(4500.0, 5500.0, NCHANNEL), w)[None, :]
        + rng.normal(0.0, 30.0, nx)[None, :]
        + rng.normal(0.0, 120.0, (ny, nx))
    )
    bias = np.clip(bias, 4000.0, 6000.0).astype(np.float32)
    amp_bias = np.clip(rng.uniform(4500.0, 5500.0) + rng.normal(0.0, 120.0, (ny, w)), 4000.0, 6000.0)

    # --- cosmic rays ---------------------------------------------------------------------------
    rng = np.random.default_rng(s_cr)
    n_cr = rng.poisson(cr_rate * int(science.sum()) * last_read * frame_time)
    cr = np.zeros(n_cr, dtype=_CR_DTYPE)
    cr["y"] = rng.integers(BORDER, ny - BORDER, n_cr)
    cr["x"] = rng.integers(BORDER, nx - BORDER, n_cr)
    cr["read"] = rng.integers(1, last_read + 1, n_cr)
    cr["energy_e"] = np.exp(rng.uniform(np.log(CR_ENERGY[0]), np.log(CR_ENERGY[1]), n_cr))
    cr = cr[~dead[cr["y"], cr["x"]]]
    cr = cr[np.lexsort((cr["x"], cr["y"], cr["read"]))]

    # --- correlated noise and amp33 ---------------------------------------------------------------
    length = ny * (w + PAD)
    onef = _onef_series(np.random.default_rng(s_onef), last_read, length, onef_rms)
    amp33 = _amp33(np.random.default_rng(s_amp), amp_bias, onef, pattern, ny, w)

    # --- per-pixel constants for the read loop -------------------------------------------------------
    sat = refs.saturation
    plateau = np.where(np.isfinite(sat), sat, np.float32(65535.0)).astype(np.float32)
    threshold = np.where(np.isfinite(sat), sat, np.float32(65536.0)).astype(np.float32)
    amplitude, tau = refs.dark_decay
    if dark_decay:
        t0 = frame_read_times(frame_time, int(refs.detector[3:]), ny, nx)
        decay0 = np.where(science, amplitude * np.exp(-t0 / tau), 0.0).astype(np.float32)
        del t0
    else:
        decay0 = None
    ctx = _Context(
        pattern=pattern,
        last_read=last_read,
        frame_time=frame_time,
        tau=tau,
        electrons=(rate * refs.gain * np.float32(frame_time)).astype(np.float32),
        inv_gain=(1.0 / refs.gain).astype(np.float32),
        bias=bias,
        nonlin_b=refs.nonlin_b.astype(np.float32),
        readnoise=refs.readnoise.astype(np.float32),
        plateau=plateau,
        threshold=threshold,
        decay0=decay0,
        onef=onef,
        onef_index=read_order_index(ny, nx).astype(np.int32),
        inl_table=np.ascontiguousarray(refs.inl_correction, dtype=np.float32),
        inl_grid0=float(refs.inl_grid[0]),
        inl_step=float(refs.inl_grid[1] - refs.inl_grid[0]),
        chan_base=(np.arange(nx) // w) * refs.inl_correction.shape[1],
        cr=cr,
    )
    grid = refs.inl_grid.astype(np.float64)
    if not np.allclose(np.diff(grid), grid[1] - grid[0]):
        raise ValueError("the demo simulator needs a uniform INL grid")

    data = np.empty((nres, ny, nx), dtype=np.uint16)
    first_sat = np.empty((ny, nx), dtype=np.int16)
    full_well = np.full((ny, nx), -1, dtype=np.int16)
    deficit = np.zeros((ny, nx), dtype=np.float32)
    starts = list(range(0, ny, BLOCK_ROWS))
    seeds = s_blocks.spawn(len(starts))
    log.info(
        "simulating %d x %d, %d resultants (%d reads), %d cosmic rays, %d threads",
        ny, nx, nres, last_read, cr.size, workers,
    )  # fmt: skip
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_simulate_block, ctx, y0, min(y0 + BLOCK_ROWS, ny), np.random.default_rng(s), data, first_sat,
                        full_well, deficit)
            for y0, s in zip(starts, seeds, strict=True)
        ]
        for f in futures:
            f.result()
    del ctx

    model = dm.ScienceRawModel.create_fake_data(shape=(nres, 8, 8))
    model.data = data
    model.amp33 = amp33
    fill_meta(model, refs, pattern, timing, frame_time, start_time, path.name)
    model.save(path)
    log.info("wrote %s", path)
    return Truth(
        rate=rate,
        scene=np.where(science, scene, 0.0).astype(np.float32),
        bias=bias,
        cosmic_rays=cr,
        first_saturated=first_sat,
        first_full_well=full_well,
        full_well_deficit=deficit,
        read_pattern=pattern,
        frame_time=float(frame_time),
        seed=int(seed),
    )


@dataclass(frozen=True, eq=False)
class _Context:
    """Full-frame inputs of the read loop (read-only, shared by the block workers)."""

    pattern: tuple[tuple[int, ...], ...]
    last_read: int
    frame_time: float
    tau: float
    electrons: np.ndarray  # expected e- per read
    inv_gain: np.ndarray
    bias: np.ndarray
    nonlin_b: np.ndarray
    readnoise: np.ndarray
    plateau: np.ndarray
    threshold: np.ndarray
    decay0: np.ndarray | None
    onef: np.ndarray
    onef_index: np.ndarray
    inl_table: np.ndarray
    inl_grid0: float
    inl_step: float
    chan_base: np.ndarray
    cr: np.ndarray


def _simulate_block(
    ctx: _Context,
    y0: int,
    y1: int,
    rng: np.random.Generator,
    data: np.ndarray,
    first_sat: np.ndarray,
    full_well: np.ndarray,
    deficit: np.ndarray,
) -> None:
    """Simulate rows ``y0:y1`` read by read; write their resultants, first saturation and
    first resultant at full well with its deficit (``full_well``/``deficit`` arrive -1/0)."""
    sl = slice(y0, y1)
    shape = (y1 - y0, data.shape[2])
    electrons, inv_gain, bias = ctx.electrons[sl], ctx.inv_gain[sl], ctx.bias[sl]
    b, rn, plateau = ctx.nonlin_b[sl], ctx.readnoise[sl], ctx.plateau[sl]
    decay0 = None if ctx.decay0 is None else ctx.decay0[sl]
    index = ctx.onef_index[sl]
    in_block = (ctx.cr["y"] >= y0) & (ctx.cr["y"] < y1)
    cr = ctx.cr[in_block]
    resultant_of = {r: k for k, res in enumerate(ctx.pattern) for r in res}
    last_of = {res[-1]: k for k, res in enumerate(ctx.pattern)}

    charge = np.zeros(shape, dtype=np.float32)
    acc = np.zeros(shape, dtype=np.float64)
    clip = np.zeros(shape, dtype=np.float64)  # DN the full-well clip took off this resultant
    ever = np.zeros(shape, dtype=bool)  # a read at full well in this resultant
    for r in range(1, ctx.last_read + 1):
        charge += rng.poisson(electrons).astype(np.float32)
        hits = cr[cr["read"] == r]
        if hits.size:
            np.add.at(charge, (hits["y"] - y0, hits["x"]), hits["energy_e"])
        k = resultant_of.get(r)
        if k is None:
            continue
        u = delinearize(bias + charge * inv_gain, b)
        if decay0 is not None:
            u += decay0 * np.float32(np.exp(-(r - 1.5) * ctx.frame_time / ctx.tau))
        u += rn * rng.standard_normal(shape, dtype=np.float32)
        u += ctx.onef[r - 1][index]
        inl = inl_lookup(u, ctx.inl_grid0, ctx.inl_step, ctx.inl_table, ctx.chan_base)
        inl = inl_lookup(u - inl, ctx.inl_grid0, ctx.inl_step, ctx.inl_table, ctx.chan_base)
        u -= inl
        over = u - plateau
        at_well = over >= 0
        ever |= at_well
        clip += np.where(at_well, over, 0.0)
        np.minimum(u, plateau, out=u)
        acc += u
        if r in last_of:
            n = len(ctx.pattern[k])
            mean = acc / n
            data[k, sl] = np.clip(np.rint(mean), 0, 65535).astype(np.uint16)
            new = ever & (full_well[sl] < 0)
            full_well[sl][new] = k
            deficit[sl][new] = (clip[new] / n).astype(np.float32)
            acc[:] = 0.0
            clip[:] = 0.0
            ever[:] = False

    saturated = data[:, sl] >= ctx.threshold[sl][None]
    first_sat[sl] = np.where(saturated.any(axis=0), saturated.argmax(axis=0), -1).astype(np.int16)


def _amp33(
    rng: np.random.Generator,
    amp_bias: np.ndarray,
    onef: np.ndarray,
    pattern: tuple[tuple[int, ...], ...],
    ny: int,
    w: int,
) -> np.ndarray:
    """amp33 resultants: bias, white noise and the shared 1/f noise, (K, ny, w) uint16."""
    index = amp33_read_order_index(ny, w)
    out = np.empty((len(pattern), ny, w), dtype=np.uint16)
    for k, res in enumerate(pattern):
        acc = np.zeros((ny, w), dtype=np.float64)
        for r in res:
            acc += amp_bias + AMP33_NOISE * rng.standard_normal((ny, w)) + onef[r - 1][index]
        out[k] = np.clip(np.rint(acc / len(res)), 0, 65535).astype(np.uint16)
    return out
