"""The one interface every export format implements, and the registry that finds them.

A family adapter (classifier, segmenter, detector, ViLT) describes *what* to export as a
:class:`Graph`: the module, example inputs, tensor names and which dimensions may vary.
A format (:class:`ExportFormat`) knows *how* to write such a graph to a file, which
options it honours, what to install for it, and how to run the written file
(:meth:`ExportFormat.runner`, used by the export checks and by ``mobilevt bench``).

A new format is one module in this package defining one ``ExportFormat`` subclass: it is
registered when the class is defined, and the package imports every module in it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ...data.preprocess import ImagePreprocess
from ...weights.entries import PreprocessConfig
from ..errors import ExportError

# A written file run in its runtime: the graph's inputs positionally, its outputs as a tuple.
Runner = Callable[..., tuple[torch.Tensor, ...]]


def _quiet(stage: str) -> None:
    pass


@dataclass(frozen=True)
class Dim:
    """A dimension that may vary in the written file: sizes ``min`` to ``max`` in steps of
    ``multiple_of`` (``None``: no bound given to the exporter)."""

    name: str
    min: int | None = None
    max: int | None = None
    multiple_of: int = 1


@dataclass
class Graph:
    """What a family asks a format to write.

    ``dynamic[i]`` maps axes of input ``i`` to the :class:`Dim` that may vary there (a Dim
    used by several inputs is one size); ``output_dynamic`` does the same for outputs (ONNX
    names those axes). An empty mapping is a static input."""

    module: nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic: tuple[dict[int, Dim], ...] = ()
    output_dynamic: tuple[dict[int, Dim], ...] = ()

    def __post_init__(self) -> None:
        self.dynamic = self.dynamic or tuple({} for _ in self.example)
        self.output_dynamic = self.output_dynamic or tuple({} for _ in self.output_names)

    @property
    def is_dynamic(self) -> bool:
        return any(self.dynamic)

    def static(self) -> Graph:
        """The same graph with every dimension fixed: at the example's sizes, and batch 1
        where the batch was dynamic."""
        example = tuple(t[:1] if 0 in dims else t for t, dims in zip(self.example, self.dynamic))
        return Graph(self.module, example, self.input_names, self.output_names)

    def torch_export_shapes(self) -> tuple[dict[int, Any] | None, ...] | None:
        """``dynamic_shapes`` for ``torch.export`` (one ``torch.export.Dim`` per name)."""
        if not self.is_dynamic:
            return None
        dims: dict[str, Any] = {}

        def dim(spec: Dim) -> Any:
            if spec.name not in dims:
                step = spec.multiple_of
                low = None if spec.min is None else spec.min // step
                high = None if spec.max is None else spec.max // step
                factor = (
                    torch.export.Dim(spec.name, min=low, max=high)
                    if (low, high) != (None, None)
                    else (torch.export.Dim(spec.name))
                )
                dims[spec.name] = factor if step == 1 else step * factor
            return dims[spec.name]

        return tuple({axis: dim(spec) for axis, spec in axes.items()} or None for axes in self.dynamic)


@dataclass(frozen=True)
class WriteOptions:
    """How a format writes a graph. Each format reads the fields it supports; the export
    refuses a set field that the chosen format does not list in ``ExportFormat.options``."""

    opset: int = 17
    lite: bool = False
    # one uint8 [H, W, 3] photo in: the evaluation preprocessing goes into the file
    preprocessing: PreprocessConfig | None = None
    # "int8": static, calibrated on ``calibration`` (input tuples); "int8-dynamic": the linears,
    # activations quantized per call (export/quantize.py)
    quantize: str | None = None
    calibration: Sequence[tuple[torch.Tensor, ...]] = ()
    # static int8: the submodule (by attribute name) whose operators are quantized; the rest of
    # the graph stays fp32 (a detector's box decoding); None: all of it
    quantize_only: str | None = None
    # an int8 file: also write the fp32 one (Written.fp32), to compare size and speed with
    int8_baseline: bool = True
    # ExecuTorch: rewrite attention and norms into ops XNNPACK delegates (export/rewrite.py)
    delegate_rewrite: bool = True
    # ExecuTorch: inputs a program with dynamic dims must run, else it is written static
    probes: Sequence[tuple[torch.Tensor, ...]] = ()
    precision: str = "float16"  # Core ML compute precision
    stage: Callable[[str], None] = _quiet


@dataclass
class Written:
    """A written file: how to run it, in which runtime, and what the report should say."""

    path: Path
    run: Runner
    runtime: str
    dynamic: bool  # the file kept the graph's dynamic dims
    max_batch: int | None = None  # the largest batch it runs, where the format bounds it
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    # an int8 file: the same graph in fp32 on the same runtime (its runner and file size)
    fp32: tuple[Runner, int] | None = None


class ExportFormat:
    """One export format. Subclasses set the class attributes and implement :meth:`write`
    and :meth:`runner`."""

    name: ClassVar[str]
    order: ClassVar[int] = 100  # where it is listed (choices, messages)
    suffixes: ClassVar[tuple[str, ...]]
    extra: ClassVar[str]  # the pip extra that brings its tools: mobilevt[<extra>]
    packages: ClassVar[tuple[str, ...]]  # the modules it needs, the first missing one is named
    runtime_packages: ClassVar[tuple[str, ...]] = ()  # the modules that run a written file
    # export_model options it honours beyond the common ones (see core.ExportOptions)
    options: ClassVar[frozenset[str]] = frozenset()
    # the runtime name under which ``mobilevt bench`` times its files (None: not timed)
    bench_backend: ClassVar[str | None] = None
    bench_label: ClassVar[str] = ""  # its rows' label in the bench report
    # the family's stage line before it runs the file on the check inputs (None: the
    # format's own write stage says it)
    check_stage: ClassVar[str | None] = None
    runs_here: ClassVar[bool] = True  # False: the file cannot run on this system (Core ML off macOS)
    # the file keeps a scripted module's methods and non-tensor inputs: a whole pipeline
    # (question string and photo in, answers out) goes in as one file
    keeps_scripted_methods: ClassVar[bool] = False
    # the runtime plans its memory for fixed shapes (ExecuTorch): a family exports batch 1,
    # pads variable-length inputs (a question) to their longest and probes the other sizes
    plans_fixed_shapes: ClassVar[bool] = False
    # data-dependent branches (torch.cond: MobiVQA's confidence and predictor exits) run in
    # the file and skip the work not taken (ONNX If)
    runs_data_dependent_branches: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _register(cls())

    @property
    def install_hint(self) -> str:
        return f'pip install "mobilevt[{self.extra}]"  ({", ".join(_distributions(self.packages))})'

    def missing(self) -> str | None:
        """The first module this format needs that is not installed, else None."""
        return _first_missing(self.packages)

    def runner_missing(self) -> str | None:
        """The first module that running a written file needs and that is not installed."""
        return _first_missing(self.runtime_packages)

    def require(self) -> None:
        """Raise a one-line ExportError naming the pip command when a tool is missing."""
        module = self.missing()
        if module is not None:
            raise ExportError(f"the {self.name} export needs {module}: {self.install_hint}")

    def check(self, options: WriteOptions) -> None:
        """Refuse, before any work, a combination of options this format cannot honour."""

    def write(self, graph: Graph, path: Path, options: WriteOptions) -> Written:
        raise NotImplementedError

    def runner(self, path: Path, threads: int = 0) -> Runner:
        """Run a written file in this format's runtime with ``threads`` threads (0: as many
        as torch uses)."""
        raise NotImplementedError

    def preprocessing_difference(self, config: PreprocessConfig, images: list[torch.Tensor]) -> dict | None:
        """How far the file's own preprocessing is from :class:`ImagePreprocess` on
        ``images``, where the format writes it in its own ops (None: it runs the same code)."""
        return None


class WithPreprocessing(nn.Module):
    """Preprocessing + model in one scriptable module: uint8 ``[H, W, 3]`` in, outputs out."""

    def __init__(self, preprocess: ImagePreprocess, model: nn.Module):
        super().__init__()
        self.preprocess = preprocess
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(image).unsqueeze(0))


_FORMATS: dict[str, ExportFormat] = {}


def _register(export_format: ExportFormat) -> None:
    if export_format.name in _FORMATS:
        raise ValueError(f"export format {export_format.name!r} is defined twice")
    _FORMATS[export_format.name] = export_format


def registered_formats() -> dict[str, ExportFormat]:
    """Every format by name, in listing order."""
    return dict(sorted(_FORMATS.items(), key=lambda item: item[1].order))


def get_format(name: str) -> ExportFormat:
    """The registered format ``name``; an unknown name is one ExportError listing them."""
    try:
        return _FORMATS[name]
    except KeyError:
        raise ExportError(f"unknown export format {name!r}; choose one of {', '.join(registered_formats())}") from None


def _first_missing(modules: Sequence[str]) -> str | None:
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent missing, or a module blocked in sys.modules
            found = False
        if not found:
            return module
    return None


def _distributions(modules: Sequence[str]) -> list[str]:
    # import name -> what pip installs
    renamed = {"ai_edge_litert": "ai-edge-litert", "litert_torch": "litert-torch"}
    names: list[str] = []
    for module in modules:
        top = module.split(".", 1)[0]
        name = renamed.get(top, top)
        if name not in names:
            names.append(name)
    return names
