"""Running the real ``strun`` in a subprocess, and what the fault tests check after it.

``Workspace`` copies the small demo exposure into a fresh folder, runs ``strun`` there on
the CPU backend or on the emulated device (``--backend=gpu`` with ``GPUCAL_EMULATE_GPU=1``),
and records the sha256 of every input and reference file, to compare before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("cpu", "emulated")
STRUN_CPU = "from gpucal.cli import strun_main; strun_main()"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (hidden ones included)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            out[str(path)] = sha256(path)
    return out


def listing(folder: Path) -> list[str]:
    """Every name under ``folder`` (relative, hidden ones included; folders end in '/')."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in folder.rglob("*"))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("strun: error:")]


@dataclass
class Workspace:
    demo: object  # the small demo (gpucal.demo.run.DemoResult)
    root: Path
    backend: str
    protected: list[Path] = field(default_factory=list)
    before: dict[str, str] = field(default_factory=dict)

    def add_input(self, relative: str) -> Path:
        """A copy of the demo exposure at ``root/relative`` (an input, hashed)."""
        dest = self.root / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.demo.uncal, dest)
        self.protect(dest)
        return dest

    def protect(self, path: Path) -> None:
        self.protected.append(path)
        self.before.update(tree_hashes(path))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        for key in list(env):
            if key.startswith(("CRDS_PATH_SINGLE", "CRDS_MAPPATH", "CRDS_REFPATH", "CRDS_CFGPATH")):
                del env[key]
        env.update(self.demo.environment)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        if self.backend == "emulated":
            env["GPUCAL_EMULATE_GPU"] = "1"
        env.update(extra)
        return env

    def command(self, args: Sequence[str], pre: Sequence[str] = ()) -> list[str]:
        """The ``strun`` command line for this workspace's backend (``pre``: python code run first)."""
        code = "; ".join([*pre, STRUN_CPU])
        return [sys.executable, "-c", code, *args, "--backend=cpu" if self.backend == "cpu" else "--backend=gpu"]

    def strun(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None,
              pre: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(args, pre), cwd=self.root, env=env or self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def popen(self, *args: str, pre: Sequence[str] = ()) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(args, pre), cwd=self.root, env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def assert_untouched(self) -> None:
        """Every input and reference file has the bytes it had before."""
        after = tree_hashes(*self.protected)
        assert after == self.before


def one_error(proc: subprocess.CompletedProcess[str], status: int, *fragments: str) -> str:
    """Assert exit ``status``, exactly one ``strun: error:`` line holding ``fragments``, no traceback."""
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen[str] | None = None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")
