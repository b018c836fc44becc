"""What every family adapter shares: the options of ``export_model`` and how a family
declares which formats and options it takes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from torch import nn

from .errors import ExportError
from .formats import ExportFormat, registered_formats
from .report import ExportReport


@dataclass(frozen=True)
class ExportOptions:
    """What ``export_model`` was asked for, in one value the family adapters share."""

    format: str
    image_size: Sequence[int] | None = None
    dynamic_batch: bool = True
    dynamic_size: bool = False
    include_preprocessing: bool = False
    lite: bool = False
    opset: int = 17
    check_images: str | os.PathLike | None = None
    max_check_images: int | None = None  # default: the family's
    latency_runs: int = 20
    fuse: bool = True
    max_batch: int = 32
    coreml_precision: str = "float16"
    quantize: str | None = None
    calibration: str | os.PathLike | None = None
    max_calibration_images: int = 128
    progress: Callable[[str], None] | None = None  # told each stage as it starts ("lowering to XNNPACK")

    def stage(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def changed(self) -> list[str]:
        """The options set away from their defaults, by name."""
        defaults = ExportOptions(format=self.format)
        return [
            f.name for f in fields(self) if f.name != "format" and getattr(self, f.name) != getattr(defaults, f.name)
        ]


# options every format and family takes
COMMON_OPTIONS = frozenset({"check_images", "max_check_images", "latency_runs", "progress"})
# options that belong to another one: checked with it
_GOES_WITH = {"calibration": "quantize", "max_calibration_images": "quantize"}


def flag(option: str) -> str:
    """The command-line flag of an export option."""
    return {"dynamic_batch": "--static-batch", "fuse": "--no-fuse"}.get(option, "--" + option.replace("_", "-"))


@dataclass(frozen=True)
class FamilyAdapter:
    """A model family's export: which formats and options it takes, and the function that
    says what to export and how to compare the written file with eager."""

    plural: str  # "detectors": they "export to" its formats
    what: str  # "detector exports": they "take no" other options
    options: frozenset[str]  # options beyond COMMON_OPTIONS it honours
    why: str  # why it takes no other options
    export: Callable[[nn.Module, Path, ExportFormat, ExportOptions], ExportReport]
    formats: tuple[str, ...] | None = None  # None: every format

    def refuse_unsupported(self, options: ExportOptions, export_format: ExportFormat) -> None:
        """One ExportError naming the first option that the format or the family cannot
        honour, before any work."""
        if self.formats is not None and export_format.name not in self.formats:
            raise ExportError(f"{self.plural} export to {', '.join(self.formats)}, not {export_format.name!r}")
        for name, partner in _GOES_WITH.items():
            if name in options.changed() and partner not in options.changed():
                raise ExportError(f"{flag(name)} goes with {flag(partner)}: it has no effect alone")
        changed = [_GOES_WITH.get(name, name) for name in options.changed() if name not in COMMON_OPTIONS]
        refused = [name for name in dict.fromkeys(changed) if name not in self.options]
        if refused:
            flags = [flag(name) for name in refused]
            listed = flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} or {flags[-1]}"
            raise ExportError(f"{self.what} take no {listed}: {self.why}")
        format_level = set().union(*(f.options for f in registered_formats().values()))
        for name in dict.fromkeys(changed):
            if name in format_level and name not in export_format.options:
                able = [f.name for f in registered_formats().values() if name in f.options]
                raise ExportError(f"{flag(name)} is available for {_listed(able)} exports, not {export_format.name}")


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
