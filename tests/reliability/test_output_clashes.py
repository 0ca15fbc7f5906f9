"""Issue 11 items 1, 2, 7, 11: outputs refused before any work, with one line.

Every case runs the real ``strun`` in a subprocess (CPU backend and emulated device) and
checks the status, the one error line (no traceback), that no calibration started, every
file left in the output folder (hidden ones included) and the sha256 of every input and
reference.
"""

from __future__ import annotations

import shutil

import pytest

from tests.reliability._harness import listing, one_error

STARTED = "running with backend"


def _refused(ws, proc, status, *fragments, folders=()):
    line = one_error(proc, status, *fragments)
    assert STARTED not in proc.stderr, "calibration started before the refusal"
    ws.assert_untouched()
    return line


@pytest.mark.parametrize("case", ["suffix", "step_suffix", "wcs_partner", "output_file", "batch_input"])
def test_a_product_never_replaces_an_input(ws, case):
    """Item 1: every way a product is named, refused (exit 2) when it is an input."""
    x = ws.add_input("x_uncal.asdf")
    if case == "suffix":  # the case: the cal product named like the input, in its folder
        args = [x.name, "--suffix=uncal"]
    elif case == "step_suffix":  # an intermediate product named like the input
        args = [x.name, "--steps.dq_init.save_results=true", "--steps.dq_init.suffix=uncal"]
    elif case == "wcs_partner":  # the wcs partner of y_uncal.asdf is y_wcs.asdf, another input
        y = ws.add_input("y_uncal.asdf")
        w = ws.add_input("y_wcs.asdf")
        args = [y.name, w.name]
    elif case == "output_file":  # --output_file names a step's product
        args = [x.name, "--steps.jump.save_results=true", "--output_file=x_uncal.asdf", "--steps.jump.suffix=uncal"]
    else:  # batch: the cal product of a is the input a_cal.asdf of the same batch
        a = ws.add_input("a_uncal.asdf")
        b = ws.add_input("a_cal.asdf")
        args = [a.name, b.name]
    before = listing(ws.root)
    proc = ws.strun("roman_elp", *args)
    _refused(ws, proc, 2, "would overwrite")
    assert listing(ws.root) == before


def test_a_product_never_replaces_a_reference_or_side_file(ws):
    """Item 1: an override reference, the log file and the parameter file are never a product's target."""
    x = ws.add_input("x_uncal.asdf")
    flat = ws.root / "x_cal.asdf"
    shutil.copy(ws.demo.references["flat"], flat)
    ws.protect(flat)
    before = listing(ws.root)
    proc = ws.strun("roman_elp", x.name, f"--steps.flatfield.override_flat={flat.name}")
    _refused(ws, proc, 2, "x_cal.asdf", "reference file given as override_flat")
    proc = ws.strun("roman_elp", x.name, "--log-file=x_uncal.asdf")
    _refused(ws, proc, 2, "--log-file x_uncal.asdf is the input x_uncal.asdf: it would be overwritten")
    proc = ws.strun("roman_elp", x.name, "--save-parameters=x_uncal.asdf")
    _refused(ws, proc, 2, "--save-parameters x_uncal.asdf is the input")
    proc = ws.strun("roman_elp", x.name, f"--steps.flatfield.override_flat={flat.name}", "--output_dir=out",
                    f"--log-file={flat.name}")
    _refused(ws, proc, 2, f"--log-file {flat.name} is the reference file given as override_flat")
    cached = next((ws.demo.crds_path / "references").rglob("*dark*.asdf"))
    proc = ws.strun("roman_elp", x.name, f"--log-file={cached}")
    _refused(ws, proc, 2, "is in the CRDS cache")
    proc = ws.strun("roman_elp", x.name, "--log-file=x_wcs.asdf")
    _refused(ws, proc, 2, "x_wcs.asdf", "file given as --log-file")
    assert listing(ws.root) == before


def test_a_product_never_goes_into_the_crds_cache(cpu_ws):
    x = cpu_ws.add_input("x_uncal.asdf")
    proc = cpu_ws.strun("roman_elp", x.name, f"--output_dir={cpu_ws.demo.crds_path / 'references'}")
    _refused(cpu_ws, proc, 2, "into the CRDS cache")


@pytest.mark.parametrize("how", ["arguments", "list_file"])
def test_two_inputs_with_one_name_are_refused_before_the_run(ws, how):
    """Item 2: visitA/x_uncal.asdf and visitB/x_uncal.asdf into one folder: one line naming both, exit 2."""
    a = ws.add_input("visitA/x_uncal.asdf")
    b = ws.add_input("visitB/x_uncal.asdf")
    c = ws.add_input("c_uncal.asdf")
    if how == "list_file":
        (ws.root / "inputs.txt").write_text("c_uncal.asdf\nvisitA/x_uncal.asdf\nvisitB/x_uncal.asdf\n")
        args = ["inputs.txt"]
        names = ("visitA/x_uncal.asdf", "visitB/x_uncal.asdf")
    else:
        args = [str(c), str(a), str(b)]
        names = (str(a), str(b))
    proc = ws.strun("roman_elp", *args, "--output_dir=out")
    _refused(ws, proc, 2, *names, "out/x_cal.asdf")
    assert listing(ws.root / "out") == []


def test_two_products_of_one_input_with_one_name_are_refused(ws):
    x = ws.add_input("x_uncal.asdf")
    proc = ws.strun("roman_elp", x.name, "--suffix=wcs", "--output_dir=out")
    _refused(ws, proc, 2, "two products of x_uncal.asdf would both be out/x_wcs.asdf")
    assert listing(ws.root / "out") == []


@pytest.mark.parametrize("case", ["log_file", "save_parameters", "crds_context"])
def test_one_line_errors(ws, case):
    """Item 7: no traceback for a missing folder of --log-file/--save-parameters or an unknown context."""
    x = ws.add_input("x_uncal.asdf")
    if case == "log_file":
        proc = ws.strun("roman_elp", x.name, "--log-file=nodir/run.log", "--output_dir=out")
        _refused(ws, proc, 1, "--log-file nodir/run.log: the folder nodir does not exist")
    elif case == "save_parameters":
        proc = ws.strun("roman_elp", x.name, "--save-parameters=nodir/p.asdf", "--output_dir=out")
        _refused(ws, proc, 1, "--save-parameters nodir/p.asdf: the folder nodir does not exist")
    else:
        env = ws.env(CRDS_CONTEXT="roman_9999.pmap")
        proc = ws.strun("roman_elp", x.name, "--output_dir=out", env=env)
        one_error(proc, 1, "CRDS_CONTEXT=roman_9999.pmap is not in the CRDS cache", "roman_0001.pmap")
        ws.assert_untouched()
    assert not (ws.root / "nodir").exists()
    assert listing(ws.root / "out") == []


def test_output_name_taken_by_a_folder_is_found_before_calibrating(ws):
    """Item 11: one line, before any calibration, once for the batch."""
    inputs = [ws.add_input(f"{n}_uncal.asdf") for n in "abc"]
    (ws.root / "out" / "b_wcs.asdf").mkdir(parents=True)
    proc = ws.strun("roman_elp", *[p.name for p in inputs], "--output_dir=out")
    _refused(ws, proc, 1, "out/b_wcs.asdf: a folder has that name")
    assert listing(ws.root / "out") == ["b_wcs.asdf/"]


def test_output_folder_that_is_a_file(ws):
    x = ws.add_input("x_uncal.asdf")
    (ws.root / "out").write_text("not a folder")
    proc = ws.strun("roman_elp", x.name, "--output_dir=out/sub")
    _refused(ws, proc, 1, "cannot write into out/sub", "is a file, not a folder")
