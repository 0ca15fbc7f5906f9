"""Snowball flagging (romancal RampFitStep ``expand_large_events``): the flags against
stcal 1.20.0's ``flag_large_events`` on random snowball-like DQ cubes, and the whole
likely ramp fit against romancal 1.1.0's RampFitStep on a synthetic ramp with snowballs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

from cpu_fallback.snowball import flag_snowballs
from gpucal.backends.protocol import SnowballParams
from gpucal.dq import GroupFlag

SAT, JUMP = np.uint8(GroupFlag.SATURATED), np.uint8(GroupFlag.JUMP_DET)
PARAMS = {
    "defaults": SnowballParams(),
    "no_core_needed": SnowballParams(sat_required_snowball=False),
    "edge_and_growth": SnowballParams(edge_size=10, min_jump_area=3, sat_expand=3, expand_factor=2.5,
                                      min_sat_radius_extend=1.5),
    "large_cores": SnowballParams(min_sat_area=5),
}


def snowball_cube(seed: int, nres: int = 6, ny: int = 80, nx: int = 96) -> np.ndarray:
    """Group DQ with elliptical saturated cores (kept to the end) and ragged jump halos,
    some off the frame's edge, plus scattered single jumps and DO_NOT_USE."""
    rng = np.random.default_rng(seed)
    gdq = np.zeros((nres, ny, nx), np.uint8)
    yy, xx = np.mgrid[:ny, :nx]
    for _ in range(6):
        g = int(rng.integers(1, nres))
        cy, cx = rng.uniform(-3, ny + 3), rng.uniform(-3, nx + 3)
        core_r = rng.uniform(0.5, 4.0)
        dist = np.hypot((yy - cy) * rng.uniform(0.6, 1.4), xx - cx)
        gdq[g][(dist <= core_r + rng.uniform(1, 6)) & (rng.random((ny, nx)) < 0.8)] |= JUMP
        gdq[g:, dist <= core_r] |= SAT
    gdq[rng.random(gdq.shape) < 0.01] |= JUMP
    gdq[rng.random(gdq.shape) < 0.003] |= np.uint8(GroupFlag.DO_NOT_USE)
    return gdq


def stcal_flags(gdq: np.ndarray, p: SnowballParams) -> tuple[np.ndarray, int]:
    """stcal's flag_large_events with the JumpData fields romancal 1.1.0 sets."""
    from stcal.jump.jump import flag_large_events

    jump_data = SimpleNamespace(
        min_sat_area=p.min_sat_area, min_jump_area=p.min_jump_area, expand_factor=p.expand_factor,
        sat_required_snowball=p.sat_required_snowball, min_sat_radius_extend=p.min_sat_radius_extend,
        sat_expand=2 * p.sat_expand, edge_size=p.edge_size, max_extended_width=200, fl_sat=SAT, fl_jump=JUMP,
        mask_persist_grps_next_int=True, persist_grps_flagged=25,
    )
    out, total = flag_large_events(gdq[None].copy(), JUMP, SAT, jump_data)
    return out[0], total


@pytest.mark.oracle
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_flags_match_stcal(name):
    pytest.importorskip("stcal")
    p = PARAMS[name]
    changed = 0
    for seed in range(12):
        gdq = snowball_cube(seed)
        want, n_want = stcal_flags(gdq, p)
        got = gdq.copy()
        n_got = flag_snowballs(got, p)
        assert n_got == n_want, (seed, n_got, n_want)
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"seed {seed}: {len(bad)} flags differ, first at {tuple(bad[0])}"
        changed += int(np.count_nonzero(got != gdq))
    assert changed > 100, "the cubes should give snowballs to flag"


# ------------------------------------------------------------- the whole likely fit
def snowball_ramp(seed: int = 3, shape: tuple[int, int, int] = (8, 40, 48)) -> tuple[object, object, object]:
    """A RampModel (as after saturation) with snowballs: saturated cores from resultant
    4 on and a halo of jumps large enough for the likely search; and its gain/readnoise."""
    rng = np.random.default_rng(seed)
    nres, ny, nx = shape
    ramp = rdm.RampModel.create_fake_data(shape=shape)
    ramp.meta.exposure.read_pattern = [[1], [2, 3], [4], [5, 6], [7], [8, 9], [10], [11, 12]][:nres]
    ramp.meta.exposure.frame_time = 3.04
    ramp.meta.cal_step = {k: "INCOMPLETE" for k in ramp.schema_info("required")["roman"]["meta"]["cal_step"]["required"].info}
    times = np.array([np.mean(r) for r in ramp.meta.exposure.read_pattern]) * 3.04
    rate = rng.uniform(2.0, 8.0, (ny, nx))
    data = times[:, None, None] * rate + rng.normal(0, 5.0, shape)
    gdq = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[:ny, :nx]
    for cy, cx, g in ((12.0, 14.0, 4), (28.3, 33.6, 3), (2.0, 44.0, 5)):
        dist = np.hypot(yy - cy, xx - cx)
        core, halo = dist <= 2.2, (dist > 2.2) & (dist <= 5.5)
        data[g:, halo] += 400.0 * np.exp(-(dist[halo] - 2.2))[None] + 150.0
        data[g:, core] = 60000.0
        gdq[g:, core] |= SAT
    ramp.data = data.astype(np.float32)
    ramp.groupdq = gdq
    ramp.pixeldq = np.zeros((ny, nx), np.uint32)
    gain = rdm.GainRefModel.create_fake_data(shape=(ny, nx))
    gain.data = np.full((ny, nx), 2.0, np.float32)
    readnoise = rdm.ReadnoiseRefModel.create_fake_data(shape=(ny, nx))
    readnoise.data = np.full((ny, nx), 5.0, np.float32)
    return ramp, gain, readnoise


@pytest.mark.oracle
@pytest.mark.parametrize("params", [
    {"expand_large_events": True},
    {"expand_large_events": True, "sat_required_snowball": False, "min_jump_area": 4.0},
    {"expand_large_events": True, "edge_size": 6, "sat_expand": 3, "expand_factor": 2.4},
])
def test_likely_fit_with_snowballs_matches_romancal(crds_env, params):
    pytest.importorskip("romancal", minversion="1.1.0")
    from romancal.ramp_fitting import RampFitStep as RomancalRampFit

    from gpucal.ramp_fitting import RampFitStep
    from tests.test_parity_small import array_differences, crds_environment, quiet_romancal

    ramp, gain, readnoise = snowball_ramp()
    with crds_environment(crds_env.environment):
        got = RampFitStep.call(ramp.copy(), algorithm="likely", override_gain=gain, override_readnoise=readnoise,
                               backend="cpu", **params)
        plain = RampFitStep.call(ramp.copy(), algorithm="likely", override_gain=gain,
                                 override_readnoise=readnoise, backend="cpu")
        with quiet_romancal():
            want = RomancalRampFit.call(ramp.copy(), algorithm="likely", override_gain=gain,
                                        override_readnoise=readnoise, **params)
    failures, _ = array_differences(got, want, ("data", "dq", "err", "var_poisson", "chisq", "dumo"))
    assert not failures, failures
    assert np.array_equal(np.asarray(got.jump_indices), np.asarray(want.jump_indices))
    # the snowballs changed the result (more jump pixels than the plain search flagged)
    assert np.count_nonzero(got.dq & JUMP) > np.count_nonzero(plain.dq & JUMP)


def test_snowballs_need_likely():
    from gpucal.errors import ParameterError
    from gpucal.ramp_fitting import RampFitStep

    ramp, gain, readnoise = snowball_ramp()
    with pytest.raises(ParameterError, match="works with algorithm=likely"):
        RampFitStep.call(ramp, algorithm="ols_cas22", expand_large_events=True, override_gain=gain,
                         override_readnoise=readnoise, backend="cpu")


def with_snowball(uncal):
    """A copy of the demo exposure hit by a snowball (saturated core, bright halo) at resultant 3."""
    raw = rdm.open(uncal)
    data = np.array(raw.data)
    _, ny, nx = data.shape
    yy, xx = np.mgrid[:ny, :nx]
    dist = np.hypot(yy - 30.0, xx - 120.0)
    halo = (dist > 2.5) & (dist <= 6.0)
    data[3:, dist <= 2.5] = 65000
    data[3:, halo] = np.minimum(data[3:, halo] + 3000.0 * np.exp(-(dist[halo] - 2.5))[None] + 800.0, 60000)
    raw.data = data.astype(np.uint16)
    out = uncal.parent / uncal.name.replace("_0001_", "_0002_")
    raw.save(out)
    return out


@pytest.mark.parametrize("kind", ["emulated", "gpu"])
def test_snowballs_on_a_device_backend_match_the_cpu(crds_env, uncal_copy, kind):
    """Through the pipeline on a device backend the snowball fit runs on the host, with the
    ramp downloaded once: the cal image is the CPU backend's, array for array."""
    from gpucal.backends.device.backend import DeviceBackend
    from gpucal.backends.emulated import EmulatedRuntime
    from gpucal.backends.select import probe_gpu
    from gpucal.pipeline.exposure import ExposurePipeline
    from tests.backends._compare import agreement

    if kind == "gpu":
        ok, reason = probe_gpu()
        if not ok:
            pytest.skip(f"GPU backend unavailable: {reason}")
        from gpucal.backends.cupy_backend import CupyBackend

        backend = CupyBackend()
    else:
        backend = DeviceBackend(EmulatedRuntime(), name="emulated")
    uncal = with_snowball(uncal_copy)
    steps = {"rampfit": {"algorithm": "likely", "expand_large_events": True}}
    cpu, _, _ = ExposurePipeline(steps=steps, backend="cpu").run(str(uncal))
    pipe = ExposurePipeline(steps=steps)
    pipe.backend = backend
    got, _, _ = pipe.run(str(uncal))
    plain, _, _ = ExposurePipeline(steps={"rampfit": {"algorithm": "likely"}}, backend="cpu").run(str(uncal))
    assert np.count_nonzero(cpu.dq & JUMP) > np.count_nonzero(plain.dq & JUMP)  # snowballs flagged
    ag = agreement(got, cpu)
    assert not ag.violations(), str(ag)  # the GPU/CPU contract (README)
    assert ag.dq_differ == 0 and ag.over == 0, str(ag)
