"""Full well reached inside a resultant, found by the default ramp fit from the SATURATION
threshold (issue 12), end to end through ``strun roman_elp`` on a small crowded exposure.

The exposure (512 x 512, 6 resultants, the last one of 6 reads, 16x the demo's star
density) has pixels whose reads reach full well inside their last unflagged resultant
while its average stays below the threshold, so the saturation step cannot flag them.  The
pipeline carries the threshold, anchored on each pixel's last clean resultant, through
linearity into the ramp fit (``saturation_headroom``, ``linearity_threshold``), and gls
flags them.  Checked against the simulation's truth on the CPU backend and on the device
backend (emulated device in CI, the GPU where there is one), which must agree:

* every pixel whose reads at full well moved its resultant by >= 1 sigma of read noise
  (:func:`gpucal.demo.score.required_saturated`) carries SATURATED, and at least a few of
  them were not flagged by the saturation step (this path is exercised);
* SATURATED on at most 1e-5 of the pixels that never reached full well (the issue's bound;
  a 3-sigma margin on the prediction of the last read flags a few that end just below it);
* the ramp-fit step run on its own (``strun ramp_fit`` on the saved calibrated ramp) has no
  saturation level and misses some of them: what the pipeline's level adds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpucal.dq import PixelFlag

PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15, 16, 17], [18, 19, 20, 21, 22, 23]]
SAT = int(PixelFlag.SATURATED)
NO_SAT_CHECK = int(PixelFlag.NO_SAT_CHECK)


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    from gpucal.demo.run import prepare_demo
    from gpucal.demo.synth import Truth

    demo = prepare_demo(tmp_path_factory.mktemp("crowded"), ny=512, nx=512, nresultants=6, seed=4242,
                        read_pattern=PATTERN, crowding=16.0)
    return demo, Truth.load(demo.truth)


def _strun(args: list[str], demo, cwd: Path, emulate: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}
    env.update(demo.environment)
    if emulate:
        env["GPUCAL_EMULATE_GPU"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from gpucal.cli import strun_main; strun_main(sys.argv[1:])", *args],
        cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(crowded, tmp_path_factory):
    """backend -> (cal dq, cal path), and the dq of ``strun ramp_fit`` on the CPU run's ramp."""
    from gpucal.demo.score import read_cal

    demo, _ = crowded
    out: dict[str, tuple[np.ndarray, Path | None]] = {}
    for backend in ("cpu", "emulated"):
        where = tmp_path_factory.mktemp(backend)
        args = ["roman_elp", str(demo.uncal), f"--output_dir={where}",
                "--backend=gpu" if backend == "emulated" else "--backend=cpu"]
        if backend == "cpu":
            args.append("--save_calibrated_ramp=true")
        _strun(args, demo, where, emulate=backend == "emulated")
        path = where / demo.uncal.name.replace("_uncal", "_cal")
        out[backend] = (read_cal(path).dq, path)
        if backend == "cpu":
            ramp = where / demo.uncal.name.replace("_uncal", "_ramp")
            alone = tmp_path_factory.mktemp("alone")
            _strun(["ramp_fit", str(ramp), f"--output_dir={alone}", "--backend=cpu"], demo, alone, emulate=False)
            (fit,) = alone.glob("*.asdf")
            import asdf

            with asdf.open(fit, lazy_load=False, memmap=False) as af:
                out["rampfit_alone"] = (np.asarray(af["roman"]["dq"]), None)  # trimmed already
    return out


def _truth_sets(crowded, dq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from gpucal.demo.score import TRIM, required_saturated

    demo, truth = crowded
    import asdf

    with asdf.open(demo.references["readnoise"], lazy_load=False, memmap=False) as af:
        readnoise = np.asarray(af["roman"]["data"], dtype=np.float64)
    checked = (dq & NO_SAT_CHECK) == 0
    required = required_saturated(truth, readnoise)[TRIM] & checked
    hidden = required & (truth.first_saturated[TRIM] < 0)  # no resultant reached the threshold
    never = (truth.first_full_well[TRIM] < 0) & checked
    return required, hidden, never


@pytest.mark.parametrize("backend", ["cpu", "emulated"])
def test_full_well_inside_a_resultant_is_flagged(crowded, runs, backend):
    dq, _ = runs[backend]
    required, hidden, never = _truth_sets(crowded, dq)
    flagged = (dq & SAT) != 0
    assert required.sum() > 50 and hidden.sum() >= 3, (required.sum(), hidden.sum())
    assert flagged[required].all(), f"{np.count_nonzero(~flagged[required])} of {required.sum()} missed"
    false = np.count_nonzero(flagged[never])  # the margin's price: pixels ending just below full well
    assert false <= 1e-5 * never.sum(), f"SATURATED on {false} of {never.sum()} never-saturated pixels"


def test_backends_agree(runs):
    """The GPU/CPU contract (README, "GPU and CPU agreement"), and the flags identical."""
    from tests.backends._compare import agreement

    (dq_c, cal_c), (dq_e, cal_e) = runs["cpu"], runs["emulated"]
    np.testing.assert_array_equal(dq_e, dq_c)
    result = agreement(str(cal_e), str(cal_c))
    assert not result.violations(), str(result)


def test_the_ramp_fit_alone_has_no_level_and_misses_some(crowded, runs):
    dq, _ = runs["rampfit_alone"]
    _, hidden, never = _truth_sets(crowded, runs["cpu"][0])
    flagged = (dq & SAT) != 0
    assert np.count_nonzero(~flagged[hidden]) > 0, "the shortfall test alone found every hidden full well"
    assert np.count_nonzero(flagged[never]) <= 1e-5 * never.sum()
