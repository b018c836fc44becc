"""The export's error type, in a module of its own so that every backend can raise it."""

from ..errors import MobilevtError


class ExportError(MobilevtError, RuntimeError):
    """An export that cannot be made as asked (missing package, unsupported option)."""
