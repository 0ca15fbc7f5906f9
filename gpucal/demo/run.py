"""``gpucal demo``: synthetic exposure + references + local CRDS cache, then roman_elp.

Everything lands in the current directory:

* ``<root>_uncal.asdf`` (Level 1) and ``<root>_truth.npz`` (true rates, cosmic rays,
  saturation) beside it;
* ``gpucal-demo/references/*.asdf``: a full matching reference set;
* ``gpucal-demo/crds_cache/``: a CRDS cache through which the real crds client selects
  every reference offline;
* after the run, ``<root>_cal.asdf`` and ``<root>_wcs.asdf``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_ROOT", "DemoResult", "prepare_demo", "run_demo", "crds_command_env"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = "r0000101001001001001_0001_wfi01_f158"
DEMO_DIR = "gpucal-demo"
DETECTOR = "WFI01"
OPTICAL_ELEMENT = "F158"
EXPOSURE_TYPE = "WFI_IMAGE"


@dataclass
class DemoResult:
    """What the demo made and, if it ran the pipeline, what came out."""

    uncal: Path
    truth: Path
    references: dict[str, Path]
    crds_path: Path
    context: str
    environment: dict[str, str]
    generate_seconds: float
    status: int | None = None
    outputs: list[Path] = field(default_factory=list)
    step_seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def crds_command_env(result: DemoResult) -> str:
    """Shell prefix that points ``strun`` at the demo's CRDS cache."""
    keys = ("CRDS_PATH", "CRDS_SERVER_URL", "CRDS_CONTEXT", "CRDS_MODE")
    return " ".join(f"{k}={result.environment[k]}" for k in keys if k in result.environment)


def prepare_demo(
    workdir: str | os.PathLike[str] = ".",
    ny: int = 4096,
    nx: int = 4096,
    nresultants: int = 8,
    seed: int = 1,
    root: str = DEFAULT_ROOT,
    *,
    read_pattern: list[list[int]] | None = None,
    crowding: float = 1.0,
) -> DemoResult:
    """Write the exposure, its truth, the references and the CRDS cache.

    ``read_pattern`` (default: the demo's pattern of ``nresultants``) and ``crowding`` (star
    density multiplier) are :func:`gpucal.demo.synth.make_exposure`'s.
    """
    from gpucal.crds_local import CacheEntry, build_local_cache, offline_environment
    from gpucal.demo.references import make_references
    from gpucal.demo.synth import make_exposure

    start = time.perf_counter()
    workdir = Path(workdir)
    demo_dir = workdir / DEMO_DIR
    log.info("Writing demo references (%dx%d) to %s", ny, nx, demo_dir / "references")
    refs = make_references(demo_dir / "references", ny=ny, nx=nx, detector=DETECTOR,
                           optical_element=OPTICAL_ELEMENT, seed=seed)
    uncal = workdir / f"{root}_uncal.asdf"
    log.info("Simulating %d-resultant exposure %s", nresultants, uncal)
    truth = make_exposure(uncal, refs, read_pattern=read_pattern, nresultants=nresultants, seed=seed,
                          crowding=crowding)
    truth_path = workdir / f"{root}_truth.npz"
    truth.save(truth_path)
    entries = [
        CacheEntry(reftype=reftype, path=Path(path), detector=DETECTOR, optical_element=OPTICAL_ELEMENT,
                   exposure_type=EXPOSURE_TYPE)
        for reftype, path in refs.paths.items()
    ]
    cache = (demo_dir / "crds_cache").resolve()
    context = build_local_cache(cache, entries)
    env = offline_environment(cache, context)
    return DemoResult(
        uncal=uncal, truth=truth_path, references={k: Path(v) for k, v in refs.paths.items()},
        crds_path=cache, context=context, environment=env, generate_seconds=time.perf_counter() - start,
    )


def run_demo(result: DemoResult, backend: str = "auto") -> DemoResult:
    """Run roman_elp on the demo exposure as ``strun`` would (save on, CRDS offline)."""
    from gpucal.errors import GpucalError
    from gpucal.pipeline import ExposurePipeline

    for key in list(os.environ):
        if key.startswith(("CRDS_PATH_SINGLE", "CRDS_MAPPATH", "CRDS_REFPATH", "CRDS_CFGPATH")):
            del os.environ[key]
    os.environ.update(result.environment)
    pipeline = ExposurePipeline.from_values({"backend": backend, "save_results": True,
                                             "output_dir": str(result.uncal.parent)})
    try:
        pipeline.run(str(result.uncal))
    except GpucalError as exc:
        result.status, result.error = exc.exit_code, str(exc)
        return result
    result.status = 0
    result.step_seconds = dict(pipeline.timings)
    root = result.uncal.name.removesuffix("_uncal.asdf")
    result.outputs = [p for p in (result.uncal.parent / f"{root}_cal.asdf", result.uncal.parent / f"{root}_wcs.asdf")
                      if p.exists()]
    return result
