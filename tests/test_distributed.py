"""Distributed runs on real Dask clusters (CPU backend, small demo exposures).

A user's own ``LocalCluster`` of 2 worker processes calibrates 6 distinct exposures with
:func:`gpucal.calibrate_many` (products identical to one-file runs); a worker is killed
with SIGKILL while it holds a file; ``strun --workers 2`` with a truncated input among good
ones; a client killed mid-run and the same command run again (resume from the ledger),
then with ``--clobber``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

import gpucal
from gpucal.cli import run_strun
from gpucal.pipeline import ExposurePipeline
from gpucal.scale.ledger import LEDGER_NAME, Ledger
from gpucal.work import DONE, FAILED, SKIPPED, FileRecord, calibrate_file

distributed = pytest.importorskip("distributed", reason="needs gpucal[distributed]")

N_FILES = 6
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exposures(small_demo, tmp_path_factory):
    """6 distinct exposures (the demo's, a different constant added to each) and one-file products."""
    root = tmp_path_factory.mktemp("exposures")
    inputs = []
    with rdm.open(small_demo.uncal) as model:
        data = np.asarray(model.data).copy()
        for i in range(N_FILES):
            model.data = data + np.uint16(7 * i)
            path = root / f"e{i}_uncal.asdf"
            model.save(path)
            inputs.append(path)
    saved = dict(os.environ)
    os.environ.update(small_demo.environment)  # before any worker starts: workers inherit it
    single = root / "single"
    try:
        for path in inputs:
            record = calibrate_file(str(path), ExposurePipeline, {"backend": "cpu", "output_dir": str(single)})
            assert record.status == DONE, record.error
        yield inputs, single
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def client(exposures):
    """A user's own client: a plain ``distributed.LocalCluster`` of 2 worker processes."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0")
    with distributed.Client(cluster) as the_client:
        yield the_client
    cluster.close()


def arrays(path: Path) -> dict[str, np.ndarray]:
    with rdm.open(path) as model:
        return {k: np.asarray(v).copy() for k, v in model._instance.items() if hasattr(v, "shape") and hasattr(v, "dtype")}


def assert_same_products(out: Path, single: Path, names: list[str]) -> None:
    """The cal products' arrays (data, dq, err, ...) equal the one-file runs' byte for byte."""
    for name in [n for n in names if n.endswith("_cal.asdf")]:
        mine, ref = arrays(out / name), arrays(single / name)
        assert set(mine) == set(ref) and {"data", "dq", "err"} <= set(mine)
        for key in ref:
            assert mine[key].dtype == ref[key].dtype and mine[key].tobytes() == ref[key].tobytes(), (name, key)


def product_names(inputs: list[Path]) -> list[str]:
    stems = [p.name.removesuffix("_uncal.asdf") for p in inputs]
    return sorted([f"{s}_cal.asdf" for s in stems] + [f"{s}_wcs.asdf" for s in stems])


def listing(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden ones included, recursively."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_user_client_calibrates_six_exposures_like_one_file_runs(exposures, client, tmp_path):
    inputs, single = exposures
    out = tmp_path / "out"
    records = gpucal.calibrate_many(inputs, client, backend="cpu", output_dir=str(out))
    assert [r.input for r in records] == [str(p) for p in inputs]
    assert all(r.status == DONE and r.exit_code == 0 for r in records), [r.error for r in records]
    assert len({r.worker for r in records}) == 2  # both workers calibrated
    assert {r.backend for r in records} == {"cpu"} and all(r.step_seconds["rampfit"] > 0 for r in records)
    assert listing(out) == sorted([*product_names(inputs), LEDGER_NAME])
    assert_same_products(out, single, product_names(inputs))
    ledger = Ledger(out / LEDGER_NAME).latest()
    assert sorted(ledger) == sorted(str(p) for p in inputs) and {r["status"] for r in ledger.values()} == {DONE}

    again = gpucal.calibrate_many(inputs, client, backend="cpu", output_dir=str(out))
    assert [r.status for r in again] == [SKIPPED] * N_FILES


def test_worker_killed_while_holding_a_file(exposures, client, tmp_path):
    inputs, single = exposures
    out = tmp_path / "out"
    result: dict[str, list[FileRecord]] = {}
    run = threading.Thread(target=lambda: result.setdefault(
        "records", gpucal.calibrate_many(inputs, client, backend="cpu", output_dir=str(out))))
    run.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        for address, keys in client.processing().items():
            held = [k for k in keys if str(k).startswith("gpucal-")]
            if held:
                victim = address, held[0]
                break
        else:
            time.sleep(0.05)
    assert victim is not None, "no worker ever held a file"
    pid = client.run(os.getpid, workers=[victim[0]])[victim[0]]
    os.kill(pid, signal.SIGKILL)
    run.join(timeout=240)
    assert not run.is_alive()
    records = result["records"]
    assert [r.status for r in records] == [DONE] * N_FILES, [r.error for r in records]
    killed_input = next(r for r in records if str(victim[1]).startswith(f"gpucal-{Path(r.input).name}-"))
    assert killed_input.worker != victim[0]  # finished by another worker (or the restarted one)
    assert listing(out) == sorted([*product_names(inputs), LEDGER_NAME])  # nothing half-written
    assert_same_products(out, single, product_names(inputs))


def strun(*args: str) -> list[str]:
    return [sys.executable, "-c", "from gpucal.cli import strun_main; strun_main()", "roman_elp", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_truncated_input_fails_alone(exposures, tmp_path):
    inputs, single = exposures
    bad = tmp_path / "bad_uncal.asdf"
    bad.write_bytes(inputs[0].read_bytes()[:20000])
    out = tmp_path / "out"
    chosen = [inputs[1], bad, inputs[2]]
    proc = subprocess.run(strun(*map(str, chosen), "--backend=cpu", f"--output_dir={out}", "--workers", "2"),
                          capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("strun: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "truncated" in errors[0]
    assert "Traceback" not in proc.stderr
    assert "3 inputs: 2 done, 0 skipped, 1 failed (bad input: 1)" in proc.stderr
    assert "Dask dashboard: http" in proc.stderr
    assert listing(out) == sorted([*product_names([inputs[1], inputs[2]]), LEDGER_NAME])
    ledger = Ledger(out / LEDGER_NAME).latest()
    assert ledger[str(bad)]["status"] == FAILED and ledger[str(bad)]["cause"] == "bad input"
    assert_same_products(out, single, product_names([inputs[1], inputs[2]]))


def test_killed_client_then_resume_then_clobber(exposures, tmp_path):
    inputs, single = exposures
    out = tmp_path / "out"
    command = strun(*map(str, inputs), "--backend=cpu", f"--output_dir={out}", "--workers", "2",
                    "--files-per-worker", "1")
    ledger_path = out / LEDGER_NAME
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger_path.exists() and ledger_path.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        workers = descendants(proc.pid)
        assert workers, "the client started no worker processes"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 20  # the workers notice their parent is gone and exit at once
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "worker processes outlived the killed client"
    finished = Ledger(ledger_path).latest()
    assert 2 <= len(finished) < N_FILES
    cal_files = {p.name for p in out.glob("*_cal.asdf")}
    assert cal_files >= {f"{Path(i).name.removesuffix('_uncal.asdf')}_cal.asdf" for i in finished}

    resumed = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    n_skipped = len(finished)
    assert f"{N_FILES} inputs: {N_FILES - n_skipped} done, {n_skipped} skipped, 0 failed" in resumed.stderr
    ledger = Ledger(ledger_path).latest()
    assert {k for k, r in ledger.items() if r["status"] == SKIPPED} == set(finished)
    assert listing(out) == sorted([*product_names(inputs), LEDGER_NAME])
    assert_same_products(out, single, product_names(inputs))

    clobbered = subprocess.run([*command, "--clobber"], env=env(), capture_output=True, text=True, timeout=300)
    assert clobbered.returncode == 0, clobbered.stderr[-2000:]
    assert f"{N_FILES} inputs: {N_FILES} done, 0 skipped, 0 failed" in clobbered.stderr
    lines = [json.loads(line) for line in ledger_path.read_text().splitlines()]
    assert [r["status"] for r in lines[-N_FILES:]] == [DONE] * N_FILES
    assert_same_products(out, single, product_names(inputs))


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += children
            todo += children
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def test_workers_recycled_after_k_files(exposures, tmp_path):
    """On a cluster of its own: recycling restarts every worker, and they come back."""
    inputs, single = exposures
    out = tmp_path / "out"
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0")
    try:
        with distributed.Client(cluster) as own:
            records = gpucal.calibrate_many(inputs[:4], own, backend="cpu", output_dir=str(out), recycle_after=1)
            assert [r.status for r in records] == [DONE] * 4, [r.error for r in records]
            # each worker process calibrates one file and is replaced: more processes than workers
            assert len({(r.host, r.pid) for r in records}) >= 3
            own.wait_for_workers(2, timeout=120)
    finally:
        cluster.close()
    assert_same_products(out, single, product_names(inputs[:4]))


def test_options_need_the_extra_and_each_other(small_demo, tmp_path, capsys):
    src = str(small_demo.uncal)
    assert run_strun(["roman_elp", "-h"]) == 0
    usage = capsys.readouterr().out
    for option in ("--workers N", "--scheduler ADDRESS", "--scheduler-file PATH", "--files-per-worker N",
                   "--retries N", "--recycle-after K", "--clobber", "--dashboard-address"):
        assert option in usage, option
    assert run_strun(["roman_elp", src, "--clobber"]) == 2
    assert "--clobber needs --workers, --scheduler or --scheduler-file" in capsys.readouterr().err
    assert run_strun(["roman_elp", src, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert run_strun(["roman_elp", src, "--files-per-worker", "2"]) == 2
    # two inputs of one name would write one product: refused before any cluster starts
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "x_uncal.asdf").write_bytes(small_demo.uncal.read_bytes())
    status = run_strun(["roman_elp", str(tmp_path / "a/x_uncal.asdf"), str(tmp_path / "b/x_uncal.asdf"),
                        "--workers", "2", f"--output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert status == 2 and f"would both write {tmp_path / 'x_cal.asdf'}" in err, err
    # without Dask: one line naming the extra
    code = ("import sys; sys.modules['distributed'] = None\n"
            "from gpucal.cli import strun_main; strun_main()")
    proc = subprocess.run([sys.executable, "-c", code, "roman_elp", src, "--workers", "2"], capture_output=True,
                          text=True, env=env(), timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "strun: error: distributed runs (--workers, --scheduler, calibrate_many with a client) need Dask: "
        "pip install 'gpucal[distributed]'"]


def test_ledger_survives_a_torn_line(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_NAME)
    ledger.append(FileRecord(input="/x/a_uncal.asdf", status=DONE))
    with open(ledger.path, "a") as fh:
        fh.write('{"input": "/x/b_uncal.asdf", "sta')  # a client killed while writing
    ledger = Ledger(ledger.path)
    ledger.append(FileRecord(input="/x/c_uncal.asdf", status=FAILED))
    assert sorted(ledger.latest()) == ["/x/a_uncal.asdf", "/x/c_uncal.asdf"]


def test_workers_pinned_round_robin_to_gpus():
    from gpucal.scale.cluster import pinned_devices

    assert [pinned_devices(i, [0, 1]) for i in range(4)] == ["0,1", "1,0", "0,1", "1,0"]
    assert pinned_devices(2, [3, 5, 7]) == "7,3,5"


def test_more_workers_than_gpus_share_them_pinned():
    """Several worker processes per GPU, each pinned through CUDA_VISIBLE_DEVICES (a real
    SpecCluster; on a machine without a GPU the variable is all that can be checked)."""
    from gpucal.scale.cluster import start_local_cluster

    cluster = start_local_cluster(2, backend="gpu", gpus=[3], files_per_worker=1, dashboard_address=":0")
    try:
        with distributed.Client(cluster) as the_client:
            the_client.wait_for_workers(2, timeout=60)
            seen = the_client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
            assert sorted(seen.values()) == ["3", "3"]
            assert {w["nthreads"] for w in the_client.scheduler_info()["workers"].values()} == {1}
    finally:
        cluster.close()


def test_one_worker_per_gpu_needs_dask_cuda():
    from gpucal.scale import MissingExtraError
    from gpucal.scale.cluster import start_local_cluster

    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"pip install 'gpucal\[distributed-cuda\]'"):
            start_local_cluster(1, backend="gpu", gpus=[0])
    else:
        pytest.skip("dask-cuda is installed: its LocalCUDACluster needs a real GPU")


def test_strun_on_a_running_scheduler_by_address_and_by_file(exposures, client, tmp_path):
    """``--scheduler ADDRESS`` and ``--scheduler-file`` submit to a cluster someone else
    started (here the user's LocalCluster); the second run resumes from the first's ledger."""
    inputs, single = exposures
    out = tmp_path / "out"
    chosen = [str(p) for p in inputs[:2]]
    proc = subprocess.run(strun(*chosen, "--backend=cpu", f"--output_dir={out}", "--scheduler",
                                client.scheduler.address), capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 inputs: 2 done, 0 skipped, 0 failed" in proc.stderr
    assert_same_products(out, single, product_names(inputs[:2]))
    scheduler_file = tmp_path / "scheduler.json"
    # what `dask scheduler --scheduler-file` writes (the client reads its address)
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": client.scheduler.address}))
    again = subprocess.run(strun(*chosen, "--backend=cpu", f"--output_dir={out}", "--scheduler-file",
                                 str(scheduler_file)), capture_output=True, text=True, env=env(), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 inputs: 0 done, 2 skipped, 0 failed" in again.stderr


def test_extras_name_dask():
    """The extras the error lines name exist, and CI's test extra installs Dask."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("dask[distributed]") for req in extras["distributed"])
    assert any(req.startswith("dask-cuda") for req in extras["distributed-cuda"])
    assert any(req.startswith("dask[distributed]") for req in extras["test"])
