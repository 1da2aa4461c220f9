"""The errors the backend reports to a user.

Every error a user can cause (a bad file, a bad option, a model that does not fit)
is a :class:`BackendError`; its ``str()`` is one line that names the file and says
what is wrong. The CLI prints it as ``error: ...`` (or a JSON ``error`` event) and
exits 1; anything else escaping the backend is a bug.
"""
from __future__ import annotations


class BackendError(Exception):
    """Base class: a one-line message for the user."""

    def __str__(self) -> str:
        # a message must stay on one line whatever a library put into it
        return " ".join(super().__str__().split())


class InputError(BackendError):
    """An input raster is missing, unreadable, or unusable (bands, grid, extent)."""


class OutputError(BackendError):
    """An output cannot be written (folder, permissions, exists, clashes with an input)."""


class UsageError(BackendError):
    """An option has an invalid value (threshold, tile size, device, ...)."""


class CardError(BackendError, ValueError):
    """A model card is missing, malformed, or does not fit the graph or the input."""


class ModelError(BackendError, RuntimeError):
    """The model file cannot be used (unreadable, corrupt, wrong tensors, no device)."""


# the command line's exit codes for a one-line error and for a cancel (Ctrl-C, SIGTERM)
EXIT_ERROR, EXIT_CANCELLED = 1, 130


class Cancelled(BackendError):
    """The run was cancelled (Ctrl-C, SIGTERM, or the caller's cancel event)."""


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first line of a library's exception message, to quote in ours; ``default``
    (else the exception's type name) when it has none. rasterio's "See previous
    exception for details" gives way to that exception (GDAL's own message)."""
    text = str(exc).strip()
    if "See previous exception" in text and exc.__cause__ is not None:
        return first_line(exc.__cause__, default)
    return text.splitlines()[0] if text else (default or type(exc).__name__)


__all__ = ["BackendError", "InputError", "OutputError", "UsageError", "CardError",
           "ModelError", "Cancelled", "first_line"]
