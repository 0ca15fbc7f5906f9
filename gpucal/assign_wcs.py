"""assign_wcs: attach a gwcs (detector -> v2v3 -> v2v3vacorr -> world) (ref: DISTORTION).

Frames and transforms as romancal 1.1.0: the distortion model of the reference file
(trimmed-image pixels -> V2/V3 arcsec), a velocity-aberration scale about the reference
point, then the rotation V2/V3 -> sky from ``meta.wcsinfo`` (Euler sequence z-y-x-y-z
with angles v2_ref, -v3_ref, roll_ref, dec_ref, -ra_ref).  ``meta.wcsinfo.s_region`` gets
the footprint of the bounding-box corners.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.params import StepParams, param
from gpucal.refs import open_reference
from gpucal.stepbase import Step

__all__ = ["AssignWcsStep", "AssignWcsParams", "build_wcs", "s_region"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssignWcsParams(StepParams):
    override_distortion: str | None = param(None, "DISTORTION reference file to use instead of CRDS's choice.")


def _v2v3_to_sky(wcsinfo: Any) -> Any:
    from astropy.modeling.models import RotationSequence3D, Scale
    from gwcs.geometry import CartesianToSpherical, SphericalToCartesian

    angles = np.array(
        [
            wcsinfo.v2_ref / 3600.0,
            -wcsinfo.v3_ref / 3600.0,
            wcsinfo.roll_ref,
            wcsinfo.dec_ref,
            -wcsinfo.ra_ref,
        ]
    )
    model = (
        (Scale(1 / 3600) & Scale(1 / 3600))
        | SphericalToCartesian(wrap_lon_at=180)
        | RotationSequence3D(angles, axes_order="zyxyz")
        | CartesianToSpherical(wrap_lon_at=360)
    )
    model.name = "v23tosky"
    return model


def _velocity_aberration(scale: float | None, v2_ref: float | None, v3_ref: float | None) -> Any:
    from astropy.modeling.models import Identity, Scale, Shift

    if scale is None or scale == 1:
        return Identity(2)
    if scale <= 0:
        log.warning("Velocity aberration scale %s is not positive; using 1.0", scale)
        scale = 1.0
    model = Scale(scale, name="dva_scale_v2") & Scale(scale, name="dva_scale_v3")
    v2_ref = v2_ref or 0.0
    v3_ref = v3_ref or 0.0
    if v2_ref == 0 and v3_ref == 0:
        return model
    model = model | (Shift((1 - scale) * v2_ref, name="dva_v2_shift") & Shift((1 - scale) * v3_ref, name="dva_v3_shift"))
    model.name = "DVA_Correction"
    return model


def build_wcs(model: Any, distortion_model: Any) -> Any:
    """The gwcs of an image ``model`` (trimmed) from the reference distortion transform."""
    import astropy.coordinates as coord
    import astropy.units as u
    from astropy.modeling import bind_bounding_box
    from gwcs import coordinate_frames as cf
    from gwcs.wcs import WCS
    from gwcs.wcs import Step as WcsStep

    ny, nx = model.data.shape
    distortion = distortion_model.copy()
    try:
        box = distortion_model.bounding_box.bounding_box(order="F")
    except NotImplementedError:
        box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    bind_bounding_box(distortion, box, order="F")
    distortion.inputs = ("x", "y")
    distortion.outputs = ("v2", "v3")
    wcsinfo = model.meta.wcsinfo
    vacorr = _velocity_aberration(model.meta.velocity_aberration.scale_factor, wcsinfo.v2_ref, wcsinfo.v3_ref)
    vacorr.inputs = ("v2", "v3")
    vacorr.outputs = ("v2", "v3")
    tel2sky = _v2v3_to_sky(wcsinfo)
    tel2sky.inputs = ("v2", "v3")
    tel2sky.outputs = ("ra", "dec")
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(name="v2v3", axes_order=(0, 1), axes_names=("v2", "v3"), unit=(u.arcsec, u.arcsec))
    v2v3vacorr = cf.Frame2D(
        name="v2v3vacorr", axes_order=(0, 1), axes_names=("v2", "v3"), unit=(u.arcsec, u.arcsec)
    )
    world = cf.CelestialFrame(reference_frame=coord.ICRS(), name="world")
    wcs = WCS(
        [
            WcsStep(detector, distortion),
            WcsStep(v2v3, vacorr),
            WcsStep(v2v3vacorr, tel2sky),
            WcsStep(world, None),
        ]
    )
    if wcs.bounding_box is None:
        wcs.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    return wcs


def s_region(wcs: Any) -> str | None:
    """``POLYGON ICRS  ...`` of the bounding-box corners, or None if any is NaN."""
    footprint = wcs.footprint(wcs.bounding_box, center=False, axis_type="spatial")
    footprint = np.array(footprint, dtype=np.float64)[:, :2]
    ra = footprint[:, 0]
    ra[ra < 0] += 360.0
    if not np.isfinite(footprint).all():
        return None
    return "POLYGON ICRS  " + " ".join(f"{v:.9f}" for v in footprint.ravel())


class AssignWcsStep(Step[AssignWcsParams]):
    """Attach the exposure's world coordinate system."""

    class_alias = "assign_wcs"
    cal_step_key = "assign_wcs"
    reference_file_types = ("distortion",)
    Params = AssignWcsParams
    default_suffix = "assignwcs"
    accepts = ("ImageModel",)

    def process(self, model: Any) -> Any:
        refs = self.resolve_references(model)
        if not refs["distortion"].available:
            log.warning("No DISTORTION reference: no WCS assigned")
            model.meta.wcs = None
            model.meta.cal_step.assign_wcs = "SKIPPED"
            return model
        ref = open_reference(refs["distortion"], model)
        wcs = build_wcs(model, ref.coordinate_distortion_transform)
        model.meta.wcs = wcs
        region = s_region(wcs)
        if region is None:
            log.info("There are NaNs in s_region, S_REGION not updated.")
        else:
            model.meta.wcsinfo.s_region = region
            log.info("Update S_REGION to %s", region)
        model.meta.cal_step.assign_wcs = "COMPLETE"
        return model
