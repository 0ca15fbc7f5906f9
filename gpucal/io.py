"""Reading Roman ASDF models with clear errors, and writing them atomically.

Reading checks everything the pipeline relies on before any science runs, so a bad input
fails with one line and nothing is written.  Writing goes to a hidden temporary directory
beside the target and is renamed into place: an interrupted or failed run never leaves a
half-written file under the final name, and a re-run replaces the old file in one step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gpucal.asdf_lz4 import parallel_lz4
from gpucal.asdf_verify import ArrayReadError, load_arrays, verified_blocks
from gpucal.errors import GpucalError, InputFileError, MissingInputError, NoScienceDataError

__all__ = ["open_model", "check_exposure", "check_wfi_layout", "write_model", "save_model", "exposure_geometry"]

log = logging.getLogger(__name__)

_ASDF_MAGIC = b"#ASDF"


def _sniff(path: Path) -> None:
    if not path.exists():
        raise MissingInputError(f"input file not found: {path}")
    if path.is_dir():
        raise InputFileError(f"input is a directory, not a file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise InputFileError(f"input file is empty: {path}")
    with path.open("rb") as fh:
        head = fh.read(len(_ASDF_MAGIC))
    if head != _ASDF_MAGIC:
        raise InputFileError(f"not an ASDF file (no '#ASDF' header): {path}")


def open_model(path: str | os.PathLike[str]) -> Any:
    """Open a Roman datamodel from an ASDF file, with one-line errors.

    Arrays are read into memory now, so a truncated or corrupt file fails here and not
    half-way through the pipeline.  The file is opened read-only and never modified.

    Raises
    ------
    InputFileError
        Missing, empty, non-ASDF, truncated or corrupt file, or an ASDF file that is not a
        Roman datamodel.
    """
    import asdf
    import roman_datamodels.datamodels as rdm

    path = Path(path)
    _sniff(path)
    try:
        with asdf.config_context() as cfg:
            cfg.validate_on_read = False
            with asdf.open(path, lazy_load=True, memmap=False, lazy_tree=True) as af:
                has_roman = "roman" in af.tree
    except Exception as exc:  # asdf raises many types for broken files
        raise InputFileError(f"cannot read ASDF file {path}: {_reason(exc)}") from None
    if not has_roman:
        raise InputFileError(f"{path} is an ASDF file but not a Roman datamodel (no 'roman' node)")
    try:
        # our own checks come first (a missing science array is "no science data", exit
        # 64, not a schema error); the schema is validated explicitly below
        with parallel_lz4(reading=True), asdf.config_context() as cfg:
            cfg.validate_on_read = False
            model = rdm.open(path)
    except Exception as exc:
        raise InputFileError(f"{path} is not a readable Roman datamodel: {_reason(exc)}") from None
    if not isinstance(model, rdm.DataModel):
        raise InputFileError(f"{path} is not a Roman datamodel")
    try:
        with parallel_lz4(), verified_blocks():
            _load_arrays(model)
    except ArrayReadError as exc:
        model.close()
        raise InputFileError(f"{path}: {exc}") from None
    except Exception as exc:
        model.close()
        raise InputFileError(f"cannot read the arrays of {path} (truncated or corrupt?): {_reason(exc)}") from None
    data = model._instance.get("data")
    if data is not None and np.size(data) == 0:
        raise NoScienceDataError(f"{path} has an empty science data array {np.shape(data)}")
    if data is None and type(model).__name__ in ("ScienceRawModel", "RampModel", "ImageModel"):
        raise NoScienceDataError(f"{path} has no science data array")
    try:
        model.validate()
    except Exception as exc:
        raise InputFileError(f"{path} does not follow its schema: {_reason(exc)}") from None
    return model


def _load_arrays(model: Any) -> None:
    """Read every array now, so a damaged block fails here (top-level ones become ndarrays)."""
    loaded = load_arrays(model._instance)
    for key in list(model._instance.keys()):
        if key in loaded:
            model._instance[key] = loaded[key]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def exposure_geometry(data_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(K, ny, nx, amp33 width) of a ramp ``(K, ny, nx)``; 32 channels of nx // 32 columns."""
    k, ny, nx = data_shape
    return k, ny, nx, nx // 32


def check_exposure(model: Any, source: str, *, layout: bool = True, timing: bool = True) -> None:
    """Check a Level 1 or ramp model before calibration.

    Parameters
    ----------
    model : ScienceRawModel or RampModel
        The exposure.
    source : str
        How errors name it (its file name).
    layout : bool
        Also require the WFI channel layout (32 channels, amp33 of ``nx // 32`` columns):
        only refpix needs it, so a small synthetic model passes the other steps.
    timing : bool
        Also require a read pattern (and frame time) matching the data: only the steps
        that use read times need it (see :func:`gpucal.readpattern.exposure_timing`).

    Raises
    ------
    NoScienceDataError
        No science array, an empty one, or no usable resultant (exit status 64).
    InputFileError
        Wrong shapes or dtypes, or missing metadata the pipeline needs.
    """
    inst = model._instance
    data = inst.get("data") if hasattr(inst, "get") else None
    if data is None:
        raise NoScienceDataError(f"{source} has no science data array")
    data = np.asarray(data)
    if data.size == 0:
        raise NoScienceDataError(f"{source} has an empty science data array {data.shape}")
    kind = type(model).__name__
    raw = kind == "ScienceRawModel"
    want = np.uint16 if raw else np.float32
    if data.ndim != 3:
        raise InputFileError(f"{source}: science data must be 3-D (resultants, rows, columns), got shape {data.shape}")
    if data.dtype != want:
        raise InputFileError(f"{source}: science data must be {np.dtype(want).name}, got {data.dtype}")
    k, ny, nx = data.shape
    if ny < 9 or nx < 9:
        raise InputFileError(f"{source}: frame {ny}x{nx} is smaller than its 4-pixel reference border allows")
    if inst.get("amp33") is None:
        raise InputFileError(f"{source}: missing the amp33 reference-output array")
    if layout:
        check_wfi_layout(model, source)
    if timing:
        from gpucal.readpattern import exposure_timing

        exposure_timing(model, source)
    meta = model.meta
    try:
        detector = str(meta.instrument.detector)
    except (AttributeError, KeyError):
        raise InputFileError(f"{source}: missing meta.instrument.detector") from None
    if not (detector.startswith("WFI") and detector[3:].isdigit() and 1 <= int(detector[3:]) <= 18):
        raise InputFileError(f"{source}: meta.instrument.detector {detector!r} is not WFI01..WFI18")
    for name in ("resultantdq", "groupdq"):
        gdq = inst.get(name)
        if gdq is None:
            continue
        gdq = np.asarray(gdq)
        if gdq.shape != data.shape or gdq.dtype != np.uint8:
            raise InputFileError(f"{source}: {name} must be uint8 {data.shape}, got {gdq.dtype} {gdq.shape}")
        if np.all(gdq & 1):
            raise NoScienceDataError(f"{source}: every resultant of every pixel is flagged DO_NOT_USE")
    if not raw:
        pdq = inst.get("pixeldq")
        if pdq is None or np.asarray(pdq).shape != (ny, nx):
            raise InputFileError(f"{source}: a ramp model needs pixeldq of shape {(ny, nx)}")
        if not np.isfinite(data).all():
            raise InputFileError(f"{source}: ramp data contain NaN or infinite values")


def check_wfi_layout(model: Any, source: str) -> None:
    """Require the WFI channel layout refpix works on: 32 channels of ``nx // 32`` columns
    (at least 8) and amp33 ``(K, ny, nx // 32)`` uint16.

    Raises
    ------
    InputFileError
        A frame or amp33 that is not a WFI layout (a small synthetic model, say).
    """
    data_shape = np.shape(model.data)
    k, ny, nx, w = exposure_geometry(data_shape)
    if ny < 16 or nx < 16 or nx % 32 or w < 8:
        raise InputFileError(
            f"{source}: frame {ny}x{nx} is not a WFI layout (needs >= 16 rows, columns a multiple of 32, >= 256); "
            "refpix needs it: skip refpix for a synthetic model"
        )
    amp33 = model._instance.get("amp33")
    if amp33 is None:
        raise InputFileError(f"{source}: missing the amp33 reference-output array")
    amp33 = np.asarray(amp33)
    if amp33.shape != (k, ny, w) or amp33.dtype != np.uint16:
        raise InputFileError(
            f"{source}: amp33 must be uint16 {(k, ny, w)} for refpix, got {amp33.dtype} {amp33.shape}"
        )


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``model`` to ``path`` (lz4-compressed blocks, as romancal), in place.

    For files that are not yet visible under a final name: ``path`` is
    ``<folder>/<set folder>/<name>`` and errors name ``<folder>/<name>``.  A failed write
    removes what it wrote.

    Raises
    ------
    GpucalError
        If the model does not validate or the file cannot be written.
    """
    path = Path(path)
    try:
        with parallel_lz4():
            model.save(path)
    except Exception as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise GpucalError(f"cannot write {path.parent.parent / path.name}: {_reason(exc)}") from None
    return path


def write_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``model`` to ``path`` atomically (lz4-compressed blocks, as romancal).

    The model is written under its final basename inside a hidden temporary directory
    next to ``path`` (so ``meta.filename`` is right; named after this process, so a later
    run can remove it if this one dies) and renamed into place.  Products of a run go
    through :class:`gpucal.products.ProductSet` instead, which commits them together.

    Raises
    ------
    GpucalError
        If the model does not validate or the file cannot be written; nothing is left
        under ``path`` (an older file there is kept).
    """
    from gpucal.products import owned_tempdir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = owned_tempdir(path.parent)
    try:
        tmp = tmpdir / path.name
        save_model(model, tmp)  # its error names ``path``: tmp is <folder>/<set>/<name>
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmpdir)
    log.info("Saved model in %s", path)
    return path
