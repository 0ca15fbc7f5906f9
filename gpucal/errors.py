"""gpucal's exceptions; each maps to one exit status of ``strun``."""

from __future__ import annotations

__all__ = [
    "GpucalError",
    "InputFileError",
    "NoScienceDataError",
    "ReferenceFileError",
    "BackendUnavailableError",
    "ParameterError",
    "ReadPatternError",
    "MissingInputError",
    "MissingReferenceError",
]


class GpucalError(Exception):
    """A domain error: one clear line for the user, exit status 1."""

    exit_code = 1


class InputFileError(GpucalError):
    """The input file is missing, unreadable, not ASDF, not a Roman model or malformed."""


class ReadPatternError(InputFileError, RuntimeError):
    """The read pattern is missing or does not match the data (romancal raises
    ``RuntimeError`` for a mismatch, so code catching that keeps working)."""


class NoScienceDataError(GpucalError):
    """The input holds no usable science data (exit status 64)."""

    exit_code = 64


class ReferenceFileError(GpucalError):
    """A reference file is missing, unreadable or does not match the exposure."""


class BackendUnavailableError(GpucalError):
    """An explicitly requested backend cannot run here."""


class ParameterError(GpucalError):
    """A parameter value or parameter file is invalid."""


class MissingInputError(InputFileError, FileNotFoundError):
    """The input file does not exist (a ``FileNotFoundError``, as romancal raises)."""


class MissingReferenceError(ReferenceFileError, FileNotFoundError):
    """An ``override_<reftype>`` file does not exist (a ``FileNotFoundError``, as romancal raises)."""
