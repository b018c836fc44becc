"""Export formats: one :class:`ExportFormat` object per format, found by name.

Every module of this package defines one format; importing the package imports them all,
so a new format is a new module here and nothing else (see ``base.py``)."""

from __future__ import annotations

import importlib
import pkgutil

from .base import Dim, ExportFormat, Graph, Runner, WriteOptions, Written, get_format, registered_formats

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

FORMAT_NAMES = tuple(registered_formats())

__all__ = [
    "FORMAT_NAMES",
    "Dim",
    "ExportFormat",
    "Graph",
    "Runner",
    "WriteOptions",
    "Written",
    "get_format",
    "registered_formats",
]
