"""``gpucal preview`` and ``strun --preview``: a PNG quick look beside a cal product."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from gpucal.cli import run_strun
from gpucal.dq import PixelFlag

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _gpucal_main(args, capsys):
    from gpucal.cli import gpucal_main

    with pytest.raises(SystemExit) as info:
        gpucal_main.main(args=args, prog_name="gpucal")
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.fixture
def cal_file(crds_env, uncal_copy):
    assert run_strun(["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={uncal_copy.parent}"]) == 0
    cal = uncal_copy.parent / uncal_copy.name.replace("_uncal", "_cal")
    assert cal.is_file()
    assert not list(uncal_copy.parent.glob("*.png"))  # off by default
    return cal


def _pixels(png: Path) -> np.ndarray:
    import matplotlib.image

    return (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)


def test_preview_command(cal_file, capsys):
    import roman_datamodels.datamodels as rdm

    status, out, _ = _gpucal_main(["preview", str(cal_file)], capsys)
    png = cal_file.with_suffix(".png")
    assert status == 0 and out.strip() == str(png)
    assert png.read_bytes()[:8] == PNG_MAGIC
    pixels = _pixels(png)
    with rdm.open(cal_file) as cal:
        n_sat = int(np.count_nonzero(cal.dq & PixelFlag.SATURATED))
    assert n_sat > 0
    # the DQ panel paints saturated pixels red (217, 38, 38)
    assert np.any(np.all(np.abs(pixels - (217, 38, 38)) <= 2, axis=-1))
    status, out, _ = _gpucal_main(["preview", str(cal_file), "--stretch", "asinh", "-o",
                                   str(cal_file.parent / "asinh.png")], capsys)
    assert status == 0 and (cal_file.parent / "asinh.png").read_bytes()[:8] == PNG_MAGIC


def test_caption(cal_file):
    import roman_datamodels.datamodels as rdm

    from gpucal.preview import caption_lines

    with rdm.open(cal_file) as cal:
        lines = caption_lines(cal, {"dq_init": 0.5, "rampfit": 2.25})
    assert cal_file.name in lines[0] and "WFI01" in lines[0] and "F158" in lines[0] and "WFI_IMAGE" in lines[0]
    assert "gpucal" in lines[1] and "backend cpu" in lines[1]
    assert "dq_init 0.50s" in lines[2] and "rampfit 2.25s" in lines[2]


@pytest.mark.oracle
def test_preview_of_a_romancal_cal_file(crds_env, uncal_copy, tmp_path, monkeypatch):
    pytest.importorskip("romancal", minversion="1.1.0")
    import roman_datamodels.datamodels as rdm
    from romancal.pipeline import ExposurePipeline

    from gpucal.preview import caption_lines, write_preview
    from tests.test_parity_small import crds_environment, quiet_romancal

    monkeypatch.chdir(tmp_path)
    pipe = ExposurePipeline()
    for name in ("refpix", "dark_decay", "source_catalog", "tweakreg"):  # a 64 x 256 frame
        getattr(pipe, name).skip = True
    pipe.save_results = True
    pipe.output_dir = str(tmp_path)
    with crds_environment(crds_env.environment), quiet_romancal():
        pipe.run(str(uncal_copy))
    cal = tmp_path / uncal_copy.name.replace("_uncal", "_cal")
    png = write_preview(cal)
    assert png == cal.with_suffix(".png") and png.read_bytes()[:8] == PNG_MAGIC
    with rdm.open(cal) as model:
        assert caption_lines(model)[1] == "calibrated by RomanCAL 1.1.0"  # no gpucal backend recorded


def test_strun_preview_beside_the_product(crds_env, uncal_copy):
    out = uncal_copy.parent / "out"
    status = run_strun(["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={out}", "--preview",
                        "--steps.rampfit.save_results=true"])
    assert status == 0
    names = sorted(p.name for p in out.iterdir())
    root = uncal_copy.name.replace("_uncal.asdf", "")
    # every Level 2 image gets one (the cal product and the saved rampfit image), not the wcs
    assert names == sorted([f"{root}_cal.asdf", f"{root}_cal.png", f"{root}_rampfit.asdf", f"{root}_rampfit.png",
                            f"{root}_wcs.asdf"])


def test_without_matplotlib_one_line_names_the_extra(crds_env, uncal_copy, capsys, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    out = uncal_copy.parent / "out"
    status = run_strun(["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={out}", "--preview"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("strun: error:")]
    assert status == 1 and len(err) == 1 and "pip install 'gpucal[preview]'" in err[0]
    assert not out.exists()  # refused before calibrating
    status, _, stderr = _gpucal_main(["preview", str(uncal_copy)], capsys)
    assert status == 1 and "gpucal[preview]" in stderr and "Traceback" not in stderr


def test_preview_of_a_non_image_is_one_line(crds_env, uncal_copy, capsys):
    status, _, err = _gpucal_main(["preview", str(uncal_copy)], capsys)
    assert status == 1 and "ScienceRawModel" in err and "Level 2 ImageModel" in err and len(err.splitlines()) == 1


def test_strun_preview_refused_for_a_distributed_run(crds_env, uncal_copy, capsys):
    out = uncal_copy.parent / "out"
    status = run_strun(["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={out}", "--preview",
                        "--workers=2"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("strun: error:")]
    assert status == 1 and len(err) == 1 and "--preview works in one process" in err[0]
    assert not out.exists()


def test_strun_preview_in_a_batch(crds_env, uncal_copy):
    import shutil

    second = uncal_copy.parent / uncal_copy.name.replace("_0001_", "_0002_")
    shutil.copy(uncal_copy, second)
    out = uncal_copy.parent / "out"
    status = run_strun(["roman_elp", str(uncal_copy), str(second), "--backend=cpu", f"--output_dir={out}",
                        "--preview", "--preview-stretch=asinh"])
    assert status == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(p.name.replace("_uncal.asdf", "_cal.png") for p in (uncal_copy, second))
