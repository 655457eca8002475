"""Exceptions raised by simgen.

Every error a user can cause (bad parameter, unreadable file, foreign HDF5,
malformed spec string) is raised as a subclass of :class:`SimgenError` with a
one-line, actionable message.  The CLI turns these into ``Error: <message>``
and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["SimgenError", "ParameterError", "SchemaError", "SpecError", "DataError"]


class SimgenError(Exception):
    """Base class of all user-facing simgen errors."""


class ParameterError(SimgenError, ValueError):
    """A parameter is out of range, of the wrong type or inconsistent with another."""


class SchemaError(SimgenError):
    """A file is not a simgen dataset, or has an unsupported schema version or layout."""


class SpecError(SimgenError, ValueError):
    """An augmentation spec string cannot be parsed."""


class DataError(SimgenError):
    """Input data (images, labels, predictions, tracks) is missing or inconsistent."""
