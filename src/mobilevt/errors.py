"""The errors that mean "the user can fix this": a wrong name, value, path or file, or an
optional package that is not installed. The CLI prints their message as one line; any
other exception is a bug and keeps its traceback."""

from __future__ import annotations


class MobilevtError(Exception):
    """Base of every error whose message tells the user what is wrong and how to fix it."""


class InvalidInputError(MobilevtError, ValueError):
    """A value, option, file or data set given by the user that cannot be used as it is."""


class MissingDependencyError(MobilevtError, ImportError):
    """An optional package needed for what was asked is not installed (the message gives
    the pip command)."""
