"""Issue 11 item 12: an exposure with every sample at 65535 follows romancal 1.1.0's rule.

romancal (``ExposurePipeline``, after the saturation step) writes its zeroed, fully
saturated image only when every resultant of every pixel is flagged SATURATED (or every
pixel's pixeldq is).  A pixel whose saturation threshold is NaN (or flagged NO_SAT_CHECK)
is never flagged (stcal sets its threshold above the A/D limit), so one such pixel means
the exposure is calibrated as usual, its saturated pixels DO_NOT_USE.  gpucal does the
same on both backends; the oracle test checks the verdict against romancal's own code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

from gpucal.dq import PixelFlag
from tests.reliability._faults import BACKENDS, fingerprints, listing, strun


def _all_65535(crds_env, tmp_path: Path) -> Path:
    raw = rdm.open(crds_env.uncal)
    raw.data = np.full(np.shape(raw.data), 65535, dtype=np.uint16)
    path = tmp_path / "in" / "full_uncal.asdf"
    path.parent.mkdir()
    raw.save(path)
    return path


def _checked_saturation(crds_env, tmp_path: Path) -> Path:
    """The demo's SATURATION reference with its NaN (no-check) thresholds made finite."""
    sat = rdm.open(crds_env.references["saturation"])
    data = np.array(sat.data)
    assert np.isnan(data).any()  # the demo's reference exempts a pixel
    data[np.isnan(data)] = 50000.0
    sat.data = data
    sat.dq = np.zeros(np.shape(sat.dq), dtype=np.uint32)
    path = tmp_path / "refs" / "checked_saturation.asdf"
    path.parent.mkdir()
    sat.save(path)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("thresholds", ["all checked", "one NaN"])
def test_every_sample_at_65535(crds_env, tmp_path, backend, thresholds):
    uncal = _all_65535(crds_env, tmp_path)
    args = ["roman_elp", str(uncal), f"--output_dir={tmp_path / 'out'}"]
    sat_path = crds_env.references["saturation"]
    if thresholds == "all checked":
        sat_path = _checked_saturation(crds_env, tmp_path)
        args.append(f"--steps.saturation.override_saturation={sat_path}")
    before = fingerprints(uncal, sat_path, crds_env.crds_path)
    result = strun(args, backend, tmp_path)
    assert result.status == 0, result.stderr[-3000:]
    assert result.errors == [] and "Traceback" not in result.stderr
    assert fingerprints(uncal, sat_path, crds_env.crds_path) == before
    out = tmp_path / "out"
    cal = rdm.open(out / "full_cal.asdf")
    cal.validate()
    dq, data = np.asarray(cal.dq), np.asarray(cal.data)
    saturated = (dq & PixelFlag.SATURATED) != 0
    if thresholds == "all checked":  # romancal's zeroed image; no WCS, so no wcs file
        assert listing(out) == ["full_cal.asdf"]
        assert "All pixels are saturated" in result.stderr
        assert np.all(data == 0) and np.all(np.asarray(cal.err) == 0) and saturated.all()
        for key in ("refpix", "linearity", "dark", "ramp_fit", "assign_wcs", "flat_field", "photom"):
            assert cal.meta.cal_step[key] == "SKIPPED", key
    else:  # one exempt pixel: not fully saturated, so calibrated as usual
        assert listing(out) == ["full_cal.asdf", "full_wcs.asdf"]
        assert "All pixels are saturated" not in result.stderr
        assert cal.meta.cal_step.ramp_fit == "COMPLETE" and cal.meta.cal_step.flat_field == "COMPLETE"
        with rdm.open(crds_env.references["saturation"]) as ref:
            sat = np.array(ref.data)[4:-4, 4:-4]
        exempt = np.isnan(sat)
        assert exempt.sum() == 1
        assert not saturated[exempt].any() and np.all(dq[exempt] & PixelFlag.NO_SAT_CHECK)
        assert np.all(dq[~exempt] & (PixelFlag.SATURATED | PixelFlag.DO_NOT_USE)
                      == (PixelFlag.SATURATED | PixelFlag.DO_NOT_USE))


@pytest.mark.oracle
def test_romancal_gives_the_same_verdict(crds_env, tmp_path):
    """romancal 1.1.0's own dq_init + saturation + ``_is_fully_saturated`` on the same files."""
    pytest.importorskip("romancal", minversion="1.1.0")
    from romancal.dq_init import DQInitStep
    from romancal.pipeline.exposure_pipeline import _is_fully_saturated
    from romancal.saturation import SaturationStep

    uncal = _all_65535(crds_env, tmp_path)
    verdicts = {}
    for name, sat in (("all checked", _checked_saturation(crds_env, tmp_path)),
                      ("one NaN", crds_env.references["saturation"])):
        ramp = DQInitStep.call(str(uncal), override_mask=str(crds_env.references["mask"]))
        ramp = SaturationStep.call(ramp, override_saturation=str(sat))
        verdicts[name] = bool(_is_fully_saturated(ramp))
    assert verdicts == {"all checked": True, "one NaN": False}
