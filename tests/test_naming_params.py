"""Output naming (stpipe/romancal suffix rules) and parameter value parsing."""

from __future__ import annotations

import pytest

from gpucal.errors import ParameterError
from gpucal.naming import output_name, remove_suffix
from gpucal.params import build_params, parse_value
from gpucal.ramp_fitting import RampFitStepParams


@pytest.mark.parametrize(
    ("base", "suffix", "expected"),
    [
        ("r0000101001001001001_0001_wfi01_f158_uncal.asdf", "cal", "r0000101001001001001_0001_wfi01_f158_cal.asdf"),
        ("a-dqinit.asdf", "cal", "a-cal.asdf"),  # separator found is reused
        ("x_uncal_cal.asdf", "dqinit", "x_uncal_dqinit.asdf"),  # only one known suffix goes
        ("t_dark_current.asdf", "cal", "t_cal.asdf"),
        ("x_wcs.asdf", "cal", "x_wcs_cal.asdf"),  # wcs is not a known suffix
        ("/some/dir/foo.asdf", "dqinit", "foo_dqinit.asdf"),  # only the basename
        ("mine_odd.asdf", "saturation", "mine_odd_saturation.asdf"),  # unknown suffix kept
    ],
)
def test_output_name(base, suffix, expected):
    assert output_name(base, suffix) == expected


def test_remove_suffix_keeps_root_without_known_suffix():
    assert remove_suffix("exposure") == ("exposure", None)
    assert remove_suffix("exposure_rampfit") == ("exposure", "_")


@pytest.mark.parametrize("text", ["true", "True", "YES", "on", "1"])
def test_booleans_true(text):
    assert parse_value("x", text, bool) is True


@pytest.mark.parametrize("text", ["false", "No", "OFF", "0"])
def test_booleans_false(text):
    assert parse_value("x", text, bool) is False


def test_numbers_and_optional():
    assert parse_value("n", "3", int) == 3
    assert parse_value("f", "2.5e1", float) == 25.0
    assert parse_value("o", "None", float | None) is None
    with pytest.raises(ParameterError, match="not a valid int"):
        parse_value("n", "three", int)
    with pytest.raises(ParameterError, match="not a valid bool"):
        parse_value("b", "maybe", bool)


def test_choices_and_unknown_names():
    params = build_params(RampFitStepParams, {"algorithm": "likely", "include_var_rnoise": "yes"})
    assert params.algorithm == "likely" and params.include_var_rnoise is True
    with pytest.raises(ParameterError, match="not one of"):
        build_params(RampFitStepParams, {"algorithm": "ols"})
    with pytest.raises(ParameterError, match="unknown parameter"):
        build_params(RampFitStepParams, {"no_such_thing": 1})
