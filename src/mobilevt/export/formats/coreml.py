"""Core ML export through coremltools: a ``torch.export`` program, decomposed to core ATen
ops, converted to an ML Program package (``.mlpackage``) with an image input. Running it
needs macOS or iOS, so on other systems only the written spec is checked."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ...fileio import atomic_directory
from ..errors import ExportError
from .base import ExportFormat, Graph, Runner, WriteOptions, Written, get_format

# coremltools' progress bars (module, name of its tqdm): one per conversion stage
_PROGRESS_BARS = (
    ("coremltools.converters.mil.frontend.torch.ops", "_tqdm"),
    ("coremltools.converters.mil.mil.passes.pass_pipeline", "tqdm"),
)


@contextlib.contextmanager
def _quiet_coremltools() -> Iterator[None]:
    # Importing coremltools logs the torch and scikit-learn versions it was not tested with
    # and the macOS-only libraries it cannot load (running needs macOS: the report says so);
    # converting draws a progress bar per stage, where mobilevt prints its own status line.
    # Warnings logged during the conversion itself still show.
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import coremltools  # noqa: F401
    except ImportError:
        pass  # export_coreml says which package is missing
    finally:
        logger.setLevel(level)
    restore = []
    for module_name, name in _PROGRESS_BARS:
        bar = getattr(sys.modules.get(module_name), name, None)
        if bar is not None:
            setattr(sys.modules[module_name], name, functools.partial(bar, disable=True))
            restore.append((sys.modules[module_name], name, bar))
    try:
        yield
    finally:
        for module, name, bar in restore:
            setattr(module, name, bar)


class CoremlFormat(ExportFormat):
    """The ML Program package with an image input: the photo's pixel scale and channel
    order (and the normalisation) are inside, so ``options.preprocessing`` says how."""

    name = "coreml"
    order = 3
    suffixes = (".mlpackage",)
    extra = "coreml"
    packages = ("coremltools",)
    options = frozenset({"coreml_precision", "dynamic_batch"})  # static batch 1 is what it writes
    runs_here = False

    def check(self, options: WriteOptions) -> None:
        if options.precision not in ("float16", "float32"):
            raise ExportError(f"coreml precision must be float16 or float32, not {options.precision!r}")

    def write(self, graph: Graph, path: Path, options: WriteOptions) -> Written:
        if path.suffix != ".mlpackage":
            raise ExportError(
                f"a Core ML ML Program is a .mlpackage folder; name the output *.mlpackage, not {path.name}"
            )
        options.stage("converting to a Core ML ML Program, then validating its spec")
        notes: list[str] = []
        height, width = graph.example[0].shape[-2:]
        with _quiet_coremltools():
            runtime = _convert(
                graph.module, path, int(height), int(width), options.preprocessing, options.precision, notes
            )
        return Written(
            path, _cannot_run, runtime, False, max_batch=1, notes=notes, details={"precision": options.precision}
        )

    def runner(self, path: Path, threads: int = 0) -> Runner:
        return _cannot_run


def _cannot_run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    raise ExportError("a Core ML model runs on macOS or iOS only")


def _convert(model: nn.Module, output: Path, height: int, width: int, config, precision: str, notes: list[str]) -> str:
    COREML.require()
    import coremltools as ct

    module: nn.Module = model
    if tuple(config.mean) != (0.0, 0.0, 0.0) or tuple(config.std) != (1.0, 1.0, 1.0):
        # Core ML's image input applies one scale for all channels: normalise in the graph
        module = Normalize(model, config)
    example = torch.rand(1, 3, height, width)
    # coremltools converts torch.export programs once decomposed to core ATen ops (its
    # TorchScript path fails on MobileViT)
    program = torch.export.export(module.eval(), (example,)).run_decompositions({})
    layout = ct.colorlayout.BGR if config.channel_order == "BGR" else ct.colorlayout.RGB
    converted = ct.convert(
        program,
        inputs=[ct.ImageType(name="image", shape=example.shape, scale=1.0 / 255.0, color_layout=layout)],
        outputs=[ct.TensorType(name="logits")],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "float16" else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS16,
    )
    with atomic_directory(output) as tmp:
        converted.save(str(tmp))
    spec = ct.models.MLModel(str(output), skip_model_load=True).get_spec()
    image_input = spec.description.input[0].type
    if image_input.WhichOneof("Type") != "imageType" or [o.name for o in spec.description.output] != ["logits"]:
        raise ExportError("the written Core ML model does not have the expected image input / logits output")
    notes.append(
        f"input 'image': a {width}x{height} {config.channel_order} image, pixels scaled by 1/255 inside; resize "
        "and crop the photo in the app (or with Vision's VNCoreMLRequest)"
    )
    notes.append("spec validated here; running the model needs macOS/iOS, so no output comparison or latency on Linux")
    return f"Core ML (coremltools {ct.__version__}, ML Program, {precision})"


class Normalize(nn.Module):
    """``model`` behind the mean / std normalisation of ``config`` (Core ML's image input
    scales all channels alike)."""

    def __init__(self, model: nn.Module, config):
        super().__init__()
        self.model = model
        order = [2, 1, 0] if config.channel_order == "BGR" else [0, 1, 2]
        self.register_buffer("mean", torch.tensor(config.mean)[order].view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.std)[order].view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


COREML = get_format("coreml")
