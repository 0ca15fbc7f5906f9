"""Reference files: ``override_<reftype>`` first, else the real CRDS client.

A step asks for a reference type; :func:`resolve` returns the path (or ``"N/A"``) and
the string recorded in ``meta.ref_file``; :func:`open_reference` opens it as the expected
reference model and checks it against the exposure (detector, array shapes and dtypes).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpucal.errors import MissingReferenceError, ReferenceFileError

__all__ = [
    "REFERENCE_MODELS",
    "Resolved",
    "resolve",
    "open_reference",
    "check_array",
    "crds_parameters",
    "reference_key",
    "derived",
]

log = logging.getLogger(__name__)

# reftype -> roman_datamodels model class name
REFERENCE_MODELS: dict[str, str] = {
    "mask": "MaskRefModel",
    "saturation": "SaturationRefModel",
    "refpix": "RefpixRefModel",
    "darkdecaysignal": "DarkdecaysignalRefModel",
    "linearity": "LinearityRefModel",
    "inverselinearity": "InverselinearityRefModel",
    "integralnonlinearity": "IntegralnonlinearityRefModel",
    "readnoise": "ReadnoiseRefModel",
    "gain": "GainRefModel",
    "dark": "DarkRefModel",
    "distortion": "DistortionRefModel",
    "photom": "WfiImgPhotomRefModel",
    "flat": "FlatRefModel",
}


@dataclass(frozen=True)
class Resolved:
    """A resolved reference: ``path`` (``"N/A"`` when none applies) and its record.

    ``model`` is set when the user handed an opened reference model as the override
    (stpipe accepts one): it is used as it is, never written to disk; ``path`` and the
    record are then stpipe's ``override://<ModelClass>`` handle.
    """

    reftype: str
    path: str
    record: str
    model: Any = field(default=None, compare=False)

    @property
    def available(self) -> bool:
        return self.path != "N/A"


def crds_parameters(model: Any) -> dict[str, Any]:
    """The model's CRDS selection parameters (flattened scalar ``roman.meta.*`` keys)."""
    params = dict(model.get_crds_parameters())
    params.setdefault("roman.meta.instrument.detector", "WFI02")
    return params


def resolve(model: Any, reftypes: Iterable[str], overrides: dict[str, Any]) -> dict[str, Resolved]:
    """Resolve each reference type: an override (a path or an opened reference model)
    wins, the rest go to CRDS in one call.

    Raises
    ------
    ReferenceFileError
        When an override names a missing file or CRDS cannot supply a reference.
    """
    out: dict[str, Resolved] = {}
    ask: list[str] = []
    for reftype in reftypes:
        override = overrides.get(reftype)
        if override is None or override == "":
            ask.append(reftype)
            continue
        if not isinstance(override, str | os.PathLike):
            if not hasattr(override, "meta") or not hasattr(override, "_instance"):
                raise ReferenceFileError(
                    f"override_{reftype}: expected a file path or a reference datamodel, got {type(override).__name__}"
                )
            handle = f"override://{type(override).__name__}"
            out[reftype] = Resolved(reftype, handle, handle, model=override)
            continue
        if str(override).strip().upper() == "N/A":
            out[reftype] = Resolved(reftype, "N/A", "N/A")
            continue
        path = Path(os.path.expandvars(os.path.expanduser(str(override)))).resolve()
        if not path.is_file():
            raise MissingReferenceError(f"override_{reftype}: reference file not found: {path}")
        out[reftype] = Resolved(reftype, str(path), str(path))
    if ask:
        from gpucal.crds_local import best_references

        found = best_references(crds_parameters(model), ask)
        for reftype in ask:
            chosen = str(found.get(reftype, "N/A"))
            if "N/A" in chosen.upper():
                out[reftype] = Resolved(reftype, "N/A", "N/A")
            else:
                if not Path(chosen).is_file():
                    raise ReferenceFileError(f"CRDS selected {Path(chosen).name} for {reftype} but it is not readable")
                out[reftype] = Resolved(reftype, chosen, f"crds://{Path(chosen).name}")
        for reftype in ask:
            log.info("Using %s reference file %s", reftype.upper(), out[reftype].record)
    return out


def open_reference(resolved: Resolved, exposure: Any) -> Any:
    """Open a reference file as its roman_datamodels class and check the detector.

    Every array of the file is read now (through gpucal's lz4 codec, block checksums
    verified unless ``GPUCAL_VERIFY_CHECKSUMS=0``).

    Raises
    ------
    ReferenceFileError
        Unreadable, truncated or corrupt file, wrong model type, or a reference for
        another detector.
    """
    import roman_datamodels.datamodels as rdm

    from gpucal.asdf_lz4 import parallel_lz4
    from gpucal.asdf_verify import ArrayReadError, load_arrays, verified_blocks

    expected = REFERENCE_MODELS[resolved.reftype]
    given = resolved.model is not None
    if given:
        ref = resolved.model  # the user's own model: checked like a file, never closed here
    else:
        try:
            with parallel_lz4(reading=True):
                ref = rdm.open(resolved.path)
        except Exception as exc:
            raise ReferenceFileError(
                f"{resolved.reftype} reference {resolved.path} cannot be opened: {type(exc).__name__}: {exc}"
            ) from None
    if type(ref).__name__ != expected:
        if not given:
            ref.close()
        raise ReferenceFileError(
            f"{resolved.reftype} reference {resolved.path} is a {type(ref).__name__}, expected {expected}"
        )
    detector = str(exposure.meta.instrument.detector)
    try:
        ref_detector = str(ref.meta.instrument.detector)
    except (AttributeError, KeyError):
        ref_detector = "NOT_CONFIGURED"
    if ref_detector not in (detector, "NOT_CONFIGURED") and resolved.reftype != "darkdecaysignal":
        if not given:
            ref.close()
        raise ReferenceFileError(
            f"{resolved.reftype} reference {Path(resolved.path).name} is for detector {ref_detector}, "
            f"but the exposure is {detector}"
        )
    if given:
        return ref  # in memory already: the user's arrays are left as they are
    identity = (*_file_identity(resolved.path), os.stat(resolved.path).st_ino)
    try:
        # every array now, checksums verified: a truncated or damaged reference fails here,
        # naming itself, not later as a bare decoding error inside some step.  A file
        # already verified by this process (same path, size, mtime and inode) is not
        # hashed again: a batch reads each reference once per exposure
        with parallel_lz4(), verified_blocks(None if identity not in _VERIFIED else False) as checked:
            load_arrays(ref._instance)
    except ArrayReadError as exc:
        ref.close()
        raise ReferenceFileError(f"{resolved.reftype} reference {resolved.path}: {exc}") from None
    if checked:
        with _KEYS_LOCK:
            _VERIFIED.add(identity)
    return ref


def check_array(
    reftype: str,
    name: str,
    array: Any,
    shape: tuple[int, ...],
    dtype: Any | None = None,
    *,
    source: Resolved | None = None,
) -> np.ndarray:
    """Return ``array`` as ndarray after checking its shape (and dtype kind).

    With ``source`` (the reference file it was read from) the array is also cast to
    ``dtype`` and tagged with the file's identity (:func:`reference_key`), so a device
    backend can keep one copy of it on the device across exposures.

    Raises
    ------
    ReferenceFileError
        If the shape or dtype does not match the exposure (naming the file when
        ``source`` is given).
    """
    what = f"{reftype} reference {source.path}" if source is not None and source.available else f"{reftype}"
    if array is None:
        raise ReferenceFileError(f"{what} has no {name} array")
    arr = np.asarray(array)
    if arr.shape != tuple(shape):
        raise ReferenceFileError(f"{what}: {name} has shape {arr.shape}, the exposure needs {tuple(shape)}")
    if dtype is not None and np.dtype(arr.dtype).kind != np.dtype(dtype).kind:
        raise ReferenceFileError(f"{what}: {name} has dtype {arr.dtype}, expected {np.dtype(dtype).name}")
    if source is not None and source.available and source.model is None:  # only files have an identity
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        _tag(arr, _file_identity(source.path) + (name, arr.dtype.str, arr.shape))
    return arr


def derived(array: np.ndarray, base: np.ndarray, label: str) -> np.ndarray:
    """Tag ``array``, computed from the reference array ``base`` alone, with base's key + ``label``.

    So a device backend caches a host-side fix-up of a reference (e.g. extra DQ flags)
    like the file's own arrays.  Without a key on ``base``, ``array`` is returned untagged.
    """
    key = reference_key(base)
    if key is not None:
        _tag(array, (*key, "derived", label))
    return array


# id(array) -> (weak reference to it, identity of the file content it holds)
_KEYS: dict[int, tuple[weakref.ref[np.ndarray], tuple[Any, ...]]] = {}
_KEYS_LOCK = threading.Lock()


def _file_identity(path: str) -> tuple[Any, ...]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size)


# reference files whose block checksums this process has verified: identity + inode
_VERIFIED: set[tuple[Any, ...]] = set()


def _tag(array: np.ndarray, key: tuple[Any, ...]) -> None:
    ident = id(array)

    def forget(_: object, ident: int = ident) -> None:
        with _KEYS_LOCK:
            _KEYS.pop(ident, None)

    with _KEYS_LOCK:
        _KEYS[ident] = (weakref.ref(array, forget), key)


def reference_key(array: Any) -> tuple[Any, ...] | None:
    """The identity of a reference array's content, or None for any other array.

    Arrays returned by :func:`check_array` with a ``source`` carry (file path, mtime,
    size, array name, dtype, shape); a view of one (``ref[4:-4, 4:-4]``) carries its
    base's key plus its byte offset, shape and strides.  Equal keys mean equal content,
    so a device copy made for one exposure can serve the next.
    """
    if not isinstance(array, np.ndarray):
        return None
    with _KEYS_LOCK:
        entry = _KEYS.get(id(array))
    if entry is not None and entry[0]() is array:
        return entry[1]
    base = array.base
    if isinstance(base, np.ndarray):
        base_key = reference_key(base)
        if base_key is not None:
            offset = array.__array_interface__["data"][0] - base.__array_interface__["data"][0]
            return (*base_key, "view", offset, array.shape, array.strides, array.dtype.str)
    return None
