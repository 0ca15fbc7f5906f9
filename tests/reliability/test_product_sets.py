"""Issue 11 items 10 and 11: the products of one input are installed together or not at
all, never mixed across runs; an unwritable output folder is found before calibrating.

Real ``strun`` processes (CPU backend and emulated device).  The full disk and the
read-only folder are small tmpfs mounts (skipped, with the reason, where this machine
cannot mount); the kill between two renames is a real ``kill -9`` of the process, sent by
the process itself at the k-th rename of the commit.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.reliability._harness import listing, one_error

PRODUCTS = ["x_cal.asdf", "x_jump.asdf", "x_ramp.asdf", "x_wcs.asdf"]
EXTRA = ["--steps.jump.save_results=true", "--save_calibrated_ramp=true"]


@pytest.fixture
def tmpfs(tmp_path):
    """A 64 MiB tmpfs (its size and mode are changed by the test with ``remount``)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True,
                              text=True, check=False)
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True)

    try:
        yield mnt, remount
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _used_bytes(path) -> int:
    import os

    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_disk_full_after_the_cal_file_keeps_the_previous_set(ws, tmpfs):
    """The issue's case: room for the new cal file but not its wcs partner."""
    mnt, remount = tmpfs
    x = ws.add_input("x_uncal.asdf")
    out = mnt / "out"
    first = ws.strun("roman_elp", x.name, f"--output_dir={out}")
    assert first.returncode == 0, first.stderr[-2000:]
    old = {n: (out / n).read_bytes() for n in listing(out)}
    assert sorted(old) == ["x_cal.asdf", "x_wcs.asdf"]
    cal_pages = -(-len(old["x_cal.asdf"]) // 4096)
    remount(f"size={_used_bytes(mnt) + (cal_pages + 2) * 4096}")  # the cal fits, the wcs does not
    proc = ws.strun("roman_elp", x.name, f"--output_dir={out}", "--steps.rampfit.algorithm=likely")
    # the new cal file was written (staged); its partner was not
    one_error(proc, 1, f"cannot write {out / 'x_wcs.asdf'}", "No space left on device")
    assert listing(out) == sorted(old)  # no temporary left, nothing new
    assert {n: (out / n).read_bytes() for n in listing(out)} == old
    ws.assert_untouched()


_KILL_AT_RENAME = (
    "import os, signal, sys; _replace = os.replace; _n = [0]; _k = int(os.environ['KILL_AT_RENAME'])\n"
    "def _rename(src, dst):\n"
    "    if '.gpucal-' in str(src):\n"
    "        _n[0] += 1\n"
    "        if _n[0] == _k: os.kill(os.getpid(), signal.SIGKILL)\n"
    "    return _replace(src, dst)\n"
    "os.replace = _rename"
)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_kill_between_renames_never_mixes_two_runs(ws, k):
    """kill -9 at the k-th rename of a commit (1: the manifest; 2-4: partners; 5: the cal
    file).  Whenever a cal file exists, its partners are of its run; the next run into the
    folder completes a committed set (k >= 2) or drops an uncommitted one (k = 1)."""
    if ws.backend != "cpu" and k != 3:
        pytest.skip("the commit is backend-independent: the emulated device runs the middle case only")
    x = ws.add_input("x_uncal.asdf")
    out = ws.root / "out"
    out.mkdir()
    for name in PRODUCTS:  # the previous run's set
        (out / name).write_bytes(b"old " + name.encode())
    old = {name: (out / name).read_bytes() for name in PRODUCTS}
    env = ws.env(KILL_AT_RENAME=str(k))
    proc = subprocess.run(ws.command(["roman_elp", x.name, "--output_dir=out", *EXTRA], pre=[_KILL_AT_RENAME]),
                          cwd=ws.root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    present = {n: (out / n).read_bytes() for n in PRODUCTS if (out / n).exists()}
    if "x_cal.asdf" in present:
        is_old = present["x_cal.asdf"] == old["x_cal.asdf"]
        assert all((data == old[n]) == is_old for n, data in present.items()), f"mixed set after kill at {k}"
    hidden = [n for n in listing(out) if n.startswith(".gpucal-")]
    assert hidden and (k == 1) != any(n.endswith("/MANIFEST") for n in hidden)
    # the next run into the folder (here one whose input is bad: it only gets as far as
    # checking the folder) completes or drops the dead run's set
    bad = ws.root / "bad_uncal.asdf"
    bad.write_bytes(b"")
    ws.protect(bad)
    after = ws.strun("roman_elp", bad.name, "--output_dir=out")
    one_error(after, 1, "input file is empty")
    assert listing(out) == PRODUCTS
    now = {n: (out / n).read_bytes() for n in PRODUCTS}
    if k == 1:
        assert now == old
    else:
        assert all(now[n] != old[n] for n in PRODUCTS), "not all of the new set installed"
    ws.assert_untouched()


def test_read_only_output_folder_is_one_line_before_calibrating(ws, tmpfs):
    mnt, remount = tmpfs
    inputs = [ws.add_input(f"{n}_uncal.asdf") for n in "abc"]
    (mnt / "out").mkdir()
    remount("ro")
    proc = ws.strun("roman_elp", *[p.name for p in inputs], f"--output_dir={mnt / 'out'}")
    one_error(proc, 1, f"cannot write into {mnt / 'out'}", "Read-only file system")
    assert "running with backend" not in proc.stderr
    assert listing(mnt) == ["out/"]
    ws.assert_untouched()


def test_commit_never_installs_over_a_protected_file(small_demo, tmp_path):
    """The last guard (references CRDS chose during the run, a batch's inputs): a staged
    product whose final name is a protected file is refused, and nothing is installed."""
    import roman_datamodels.datamodels as rdm

    from gpucal.errors import GpucalError
    from gpucal.products import ProductSet

    reference = tmp_path / "ref.asdf"
    reference.write_bytes(b"a reference")
    products = ProductSet(protected=[reference])
    with rdm.open(small_demo.uncal) as model:
        products.stage(model, tmp_path / "x_cal.asdf", primary=True)
        products.stage(model, tmp_path / "ref.asdf")
    with pytest.raises(GpucalError, match="refusing to write .*ref.asdf: it is the input or reference file"):
        products.commit()
    assert listing(tmp_path) == ["ref.asdf"]
    assert reference.read_bytes() == b"a reference"
