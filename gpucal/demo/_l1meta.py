"""Level 1 metadata of a demo exposure (``meta/common-2.1.0``, formats.md §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gpucal.demo._detector import BORDER

if TYPE_CHECKING:
    from gpucal.demo.references import ReferenceSet
    from gpucal.readpattern import ReadTiming

__all__ = ["fill_meta"]


def fill_meta(
    model,
    refs: ReferenceSet,
    pattern: tuple[tuple[int, ...], ...],
    timing: ReadTiming,
    frame_time: float,
    start_time: str,
    filename: str,
) -> None:
    """Fill a ``ScienceRawModel``'s metadata with realistic values, in place.

    Parameters
    ----------
    model : ScienceRawModel
        Model made by ``create_fake_data`` (every required key present).
    refs : ReferenceSet
        Detector, optical element, frame shape and (v2_ref, v3_ref).
    pattern : tuple of tuple of int
        Read pattern (1-based reads per resultant).
    timing : ReadTiming
        Its timing (for exposure and effective exposure times).
    frame_time : float
        Seconds between reads.
    start_time : str
        ISO UTC exposure start.
    filename : str
        ``meta.filename`` (the output basename).
    """
    from astropy.time import Time

    import gpucal

    ny, nx = refs.ny, refs.nx
    start = Time(start_time, format="isot", scale="utc")
    duration = float(timing.last_read[-1]) * frame_time
    end = Time(start.mjd + duration / 86400.0, format="mjd", scale="utc")
    end.format = "isot"
    nres = len(pattern)
    ra_ref, dec_ref, roll_ref = 80.5, -30.25, 60.0
    v2_ref, v3_ref = refs.v2v3_ref
    gw = max(4, min(16, (ny - 2 * BORDER) // 4, (nx - 2 * BORDER) // 8))
    gx0, gy0 = int(nx * 0.6), int(ny * 0.7)

    meta = model.meta
    meta.filename = filename
    meta.product_type = "l1"
    meta.calibration_software_version = gpucal.__version__
    meta.sdf_software_version = "gpucal-demo"
    meta.prd_version = "demo"
    meta.exposure.update(
        type="WFI_IMAGE",
        start_time=start,
        end_time=end,
        engineering_quality="OK",
        ma_table_id=f"DEMO{nres:02d}",
        nresultants=nres,
        data_problem=None,
        frame_time=float(frame_time),
        exposure_time=duration,
        effective_exposure_time=float(timing.tbar[-1] - timing.tbar[0]),
        ma_table_name=f"DEMO_IMAGING_{nres}_RESULTANTS",
        ma_table_number=1000 + nres,
        read_pattern=[list(res) for res in pattern],
        truncated=False,
        hga_move=False,
    )
    meta.instrument.update(name="WFI", detector=refs.detector, optical_element=refs.optical_element)
    meta.guide_star.update(
        guide_window_id="GW0001",
        guide_mode="WIM-TRACK",
        window_xstart=gx0,
        window_xstop=gx0 + gw,
        window_ystart=gy0,
        window_ystop=gy0 + gw,
        guide_star_id="DEMO-GS-0001",
        epoch="2016.0",
    )
    meta.observation.update(
        observation_id="0000101001001001001",
        visit_id="0000101001001001001",
        program=1,
        execution_plan=1,
        segment=1,
        observation=1,
        visit=1,
        visit_file_group=1,
        visit_file_sequence=1,
        visit_file_activity="01",
        exposure=1,
        wfi_parallel=False,
    )
    meta.observation["pass"] = 1
    meta.pointing.update(
        pa_aperture=roll_ref,
        pointing_engineering_source="CALCULATED",
        ra_v1=ra_ref - 0.42,
        dec_v1=dec_ref + 0.31,
        pa_v3=roll_ref,
        target_aperture="WFI_CEN",
        target_ra=ra_ref,
        target_dec=dec_ref,
    )
    meta.program.update(
        title="gpucal demo exposure",
        investigator_name="gpucal",
        category="GO",
        subcategory="None",
        science_category="demo",
    )
    meta.rcs.update(active=False, electronics=None, bank=None, led=None, counts=0)
    meta.velocity_aberration.update(ra_reference=ra_ref, dec_reference=dec_ref, scale_factor=1.0000123)
    meta.visit.update(
        dither={"primary_name": None, "subpixel_name": None, "executed_pattern": None},
        type="GENERAL",
        start_time=start,
        nexposures=1,
        internal_target=False,
    )
    meta.ephemeris.update(
        ephemeris_reference_frame="EME2000",
        type="DEFINITIVE",
        time=float(start.mjd),
        spatial_x=1.21e6,
        spatial_y=8.5e5,
        spatial_z=3.1e5,
        velocity_x=-0.21,
        velocity_y=0.33,
        velocity_z=0.12,
    )
    meta.wcsinfo.update(
        aperture_name=f"{refs.detector}_FULL",
        v2_ref=float(v2_ref),
        v3_ref=float(v3_ref),
        vparity=-1,
        v3yangle=-60.0,
        ra_ref=ra_ref,
        dec_ref=dec_ref,
        roll_ref=roll_ref,
        s_region=_s_region(ra_ref, dec_ref, roll_ref, ny, nx),
    )


def _s_region(ra: float, dec: float, roll: float, ny: int, nx: int) -> str:
    """Approximate footprint polygon (tangent-plane, 0.11 arcsec/pixel)."""
    hx, hy = (nx - 2 * BORDER) * 0.11 / 7200.0, (ny - 2 * BORDER) * 0.11 / 7200.0  # deg
    c, s = np.cos(np.deg2rad(roll)), np.sin(np.deg2rad(roll))
    pts = []
    for dx, dy in ((-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)):
        east, north = c * dx + s * dy, -s * dx + c * dy
        pts.append(f"{ra + east / np.cos(np.deg2rad(dec)):.6f} {dec + north:.6f}")
    return "POLYGON ICRS " + " ".join(pts)
