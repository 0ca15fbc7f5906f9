"""Before any calibration: where every product of a run will go, and whether it can.

:func:`plan_outputs` names every product of every input exactly as the run will name
them (the steps' own naming rules) and refuses, with one line, a plan in which

* a product would replace an input, a list file, a reference file given as an override,
  a file in the CRDS cache, the log file or the parameter file (:class:`OutputClashError`,
  exit status 2);
* two inputs (or two products of one input) would write the same file (exit status 2);
* an output folder cannot be made or written, or a product's name is taken by a folder
  (:class:`OutputPlaceError`, exit status 1).

Each output folder is checked once per run, by creating (and removing) one of the run's
hidden set folders there, and the temporary folders of dead gpucal runs in it are cleaned
up then (:func:`gpucal.products.recover_folder`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucal.errors import GpucalError

__all__ = [
    "OutputClashError",
    "OutputPlaceError",
    "Plan",
    "plan_outputs",
    "check_side_file",
    "resolve_input",
]

log = logging.getLogger(__name__)


class OutputClashError(GpucalError):
    """Outputs that would replace an input, a reference or each other (a usage error)."""

    exit_code = 2


class OutputPlaceError(GpucalError):
    """An output folder that cannot be written, or a product name taken by a folder."""


@dataclass
class Plan:
    """Every input's planned products (inputs that cannot be read plan none: they fail alone)."""

    outputs: dict[str, list[Path]] = field(default_factory=dict)
    folders: list[Path] = field(default_factory=list)


def resolve_input(path: str, input_dir: str | None) -> str:
    """The file a run reads for ``path`` (``input_dir`` prefixes a relative name)."""
    if input_dir and not Path(path).is_absolute():
        return str(Path(input_dir) / path)
    return path


def _key(path: Path | str) -> str:
    return os.path.realpath(os.path.expandvars(os.path.expanduser(str(path))))


def _same(a: Path | str, b: Path | str) -> bool:
    if _key(a) == _key(b):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def _overrides(step: Any) -> list[tuple[str, Path]]:
    """(``override_<reftype>``, path) of every reference file named on the step and its steps."""
    found = []
    for sub in [step, *getattr(step, "steps", {}).values()]:
        for reftype, value in sub.reference_overrides().items():
            if value and str(value).strip().upper() != "N/A":
                found.append((f"override_{reftype}", Path(str(value))))
    return found


def _in_crds_cache(path: Path) -> bool:
    root = os.environ.get("CRDS_PATH")
    if not root:
        return False
    try:
        return Path(_key(path)).is_relative_to(_key(root))
    except ValueError:
        return False


def check_side_file(path: str, option: str, protected: Sequence[tuple[str, Path]] = ()) -> None:
    """Refuse a ``--log-file`` / ``--save-parameters`` target that cannot be written, or that
    is one of ``protected`` ((description, path): inputs, list files, references) or in the
    CRDS cache.

    Raises
    ------
    OutputClashError
        ``path`` is a protected file or in the CRDS cache.
    OutputPlaceError
        Its folder does not exist, or ``path`` is a folder.
    """
    target = Path(os.path.expanduser(path))
    for what, other in protected:
        if _same(target, other):
            raise OutputClashError(f"{option} {path} is {what}: it would be overwritten")
    if _in_crds_cache(target):
        raise OutputClashError(f"{option} {path} is in the CRDS cache (CRDS_PATH={os.environ['CRDS_PATH']})")
    folder = target.parent
    if not folder.is_dir():
        raise OutputPlaceError(f"{option} {path}: the folder {folder} does not exist")
    if target.is_dir():
        raise OutputPlaceError(f"{option} {path} is a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise OutputPlaceError(f"{option} {path}: not writable")


def plan_outputs(step: Any, inputs: Sequence[str], list_files: Sequence[str] = (),
                 side_files: Sequence[tuple[str, str]] = ()) -> Plan:
    """Name and check every product of a run of ``step`` on ``inputs`` (see the module doc).

    Parameters
    ----------
    step : Step
        The configured top step (as it will run; its result is always saved).
    inputs : sequence of str
        The input files, as given (list files already expanded).
    list_files : sequence of str
        List files the inputs came from (never to be overwritten either).
    side_files : sequence of (str, str)
        (option, path) of other files the run writes: the log file, the parameter file.

    Raises
    ------
    OutputClashError, OutputPlaceError
    """
    input_dir = step.params.input_dir
    files = [resolve_input(p, input_dir) for p in inputs]
    plan = Plan()
    owner: dict[str, tuple[str, Path]] = {}  # real path of a product -> (input, product)
    protected = [(f"the input {f}", Path(f)) for f in files]
    protected += [(f"the list file {f}", Path(f)) for f in list_files]
    protected += [(f"the reference file given as {opt}", p) for opt, p in _overrides(step)]
    for option, side in side_files:
        check_side_file(side, option, protected)
    protected += [(f"the file given as {opt}", Path(p)) for opt, p in side_files]
    for given, path in zip(inputs, files, strict=True):
        # roman_datamodels sets meta.filename to the name of the file it opens
        products = step.planned_outputs(path, Path(path).name)
        plan.outputs[given] = products
        for product in products:
            for what, other in protected:
                if _same(product, other):
                    if _same(other, path):
                        raise OutputClashError(f"the product {product} of {given} would overwrite that input "
                                               "itself: choose another suffix, output file or output folder")
                    raise OutputClashError(f"the product {product} of {given} would overwrite {what}")
            if _in_crds_cache(product):
                raise OutputClashError(f"the product {product} of {given} would be written into the CRDS cache "
                                       f"(CRDS_PATH={os.environ['CRDS_PATH']})")
            key = _key(product)
            if key in owner:
                first, earlier = owner[key]
                if first == given:
                    raise OutputClashError(f"two products of {given} would both be {product}")
                raise OutputClashError(f"{first} and {given} would both write {product}: "
                                       "give them different names or output folders")
            owner[key] = (given, product)
    folders: dict[str, Path] = {}
    for products in plan.outputs.values():
        for product in products:
            folders.setdefault(_key(product.parent), product.parent)
            if product.is_dir():
                raise OutputPlaceError(f"cannot write {product}: a folder has that name")
            if product.exists() and not product.is_file():
                raise OutputPlaceError(f"cannot write {product}: something that is not a file has that name")
    plan.folders = list(folders.values())
    for folder in plan.folders:
        _check_folder(folder)
    return plan


def _check_folder(folder: Path) -> None:
    """Prove ``folder`` writable with a set folder (or, if missing, the nearest existing folder
    above it, where it will be made) and clean up dead runs' temporaries in it."""
    from gpucal.products import folder_lock, owned_tempdir, recover_folder

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPlaceError(f"cannot write into {folder}: {existing} is a file, not a folder")
    try:
        probe = owned_tempdir(existing)
    except OSError as exc:
        raise OutputPlaceError(f"cannot write into {folder}: {exc.strerror or exc}") from None
    shutil.rmtree(probe, ignore_errors=True)
    if existing == folder:
        with folder_lock(folder):
            recover_folder(folder)
