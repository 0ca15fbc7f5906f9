"""run_batch from Python: an interrupt stops the batch the same way and then goes on as a
KeyboardInterrupt (``strun`` asks for the report instead)."""

from __future__ import annotations

import shutil
import signal

import pytest

from gpucal.batch import run_batch
from gpucal.pipeline.exposure import ExposurePipeline
from gpucal.work import new_step
from tests.reliability._harness import listing


class _CtrlCOnSecond(ExposurePipeline):
    """Ctrl-C arrives while the second input is calibrated (a fault injected at that moment)."""

    def process(self, input_model):  # noqa: ANN001, ANN201
        if str(self.input_path).endswith("b_uncal.asdf"):
            raise KeyboardInterrupt
        return super().process(input_model)


@pytest.mark.parametrize("report", [False, True])
def test_interrupt_in_a_python_batch(crds_env, tmp_path, report):
    inputs = []
    for name in ("a", "b", "c"):
        shutil.copy(crds_env.uncal, tmp_path / f"{name}_uncal.asdf")
        inputs.append(str(tmp_path / f"{name}_uncal.asdf"))
    out = tmp_path / "out"
    values = {"backend": "cpu", "output_dir": str(out)}

    def make_step():  # noqa: ANN202
        return new_step(_CtrlCOnSecond, values)

    if not report:
        with pytest.raises(KeyboardInterrupt):
            run_batch(inputs, make_step)
    else:
        result = run_batch(inputs, make_step, report_interrupt=True)
        assert result.interrupted == signal.SIGINT
        assert [r.input for r in result.done] == inputs[:1]
        assert result.not_done == inputs[1:]
    assert listing(out) == ["a_cal.asdf", "a_wcs.asdf"]
