"""TorchScript (``.pt``) and the lite-interpreter format (``.ptl``), run in the TorchScript
interpreter: files that an app loads with libtorch alone.

A phone app (PyTorch Mobile's lite interpreter) or a C++ program links libtorch, which
registers ATen's and the interpreter's operators only. Code that calls an extension's
operator (torchvision's ``image::decode_image``, ``torchvision::nms``, ...) is compiled into
the file with it, and such a file fails to load there ("Unknown builtin op"). Every file
:func:`save_torchscript` writes is read back and refused if its code names an operator
outside core libtorch.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import torch
from torch import nn
from torch.jit.mobile import _load_for_lite_interpreter
from torch.utils.mobile_optimizer import optimize_for_mobile

from ...data.preprocess import ImagePreprocess
from ...fileio import atomic_path
from ..errors import ExportError
from .base import ExportFormat, Graph, Runner, WithPreprocessing, WriteOptions, Written

# Operator namespaces that libtorch itself registers: ATen, the interpreter's primitives,
# the quantized kernels and the prepacked XNNPACK ops that optimize_for_mobile inserts.
CORE_OPERATOR_NAMESPACES = frozenset({"aten", "prim", "quantized", "_quantized", "prepacked"})
# serialized TorchScript code calls operators as ops.<namespace>.<name>(...); the lite
# interpreter's bytecode names them "<namespace>::<name>"
_CODE_CALL = re.compile(r"\bops\.(\w+)\.(\w+)\(")
_BYTECODE_NAME = re.compile(rb"\b([A-Za-z_]\w*)::([A-Za-z_]\w*)")


def extension_operators(path: str | os.PathLike) -> list[str]:
    """The operators outside core libtorch that a saved TorchScript file (``.pt`` or lite
    ``.ptl``) calls, as ``namespace::name``, sorted; empty when libtorch alone can load it."""
    found = set()
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if "/code/" in name and name.endswith(".py"):
                found.update(_CODE_CALL.findall(archive.read(name).decode("utf-8")))
            elif name.endswith("/bytecode.pkl"):
                found.update((ns.decode(), op.decode()) for ns, op in _BYTECODE_NAME.findall(archive.read(name)))
    return sorted(f"{ns}::{op}" for ns, op in found if ns not in CORE_OPERATOR_NAMESPACES)


def save_torchscript(module: nn.Module, output: str | os.PathLike, lite: bool = False) -> list[str]:
    """Script ``module`` (unless it is scripted already) and write it atomically to
    ``output``: a TorchScript file, or with ``lite`` a lite-interpreter file optimised for
    mobile. Returns notes for the export report.

    Raises:
        ExportError: the code calls operators that core libtorch lacks (nothing is written).
    """
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module.eval())
    notes: list[str] = []
    output = Path(output)
    with atomic_path(output) as tmp:
        if lite:
            try:
                scripted = optimize_for_mobile(scripted)
            except RuntimeError as exc:
                if "XNNPACK" not in str(exc):
                    raise
                # CPU wheels without XNNPACK cannot run the mobile rewrite passes; the
                # lite-interpreter file is still valid, only not pre-optimised.
                notes.append("optimize_for_mobile skipped: this torch build has no XNNPACK")
            scripted._save_for_lite_interpreter(str(tmp))
        else:
            torch.jit.save(scripted, str(tmp))
        extra = extension_operators(tmp)
        if extra:
            raise ExportError(
                f"{output.name}: the scripted code calls {', '.join(extra)}, operators that core libtorch does "
                "not have, so an app linking libtorch or PyTorch Mobile alone could not load the file; keep such "
                "calls out of the exported module (decode images in the app and pass uint8 [H, W, 3] pixels)"
            )
    return notes


class TorchscriptFormat(ExportFormat):
    name = "torchscript"
    runs_data_dependent_branches = True
    order = 0
    suffixes = (".pt", ".ptl")
    extra = ""  # torch itself
    packages = ()
    options = frozenset({"include_preprocessing", "lite"})
    bench_backend = "scripted"
    keeps_scripted_methods = True

    @property
    def install_hint(self) -> str:
        return "part of torch"

    def write(self, graph: Graph, path: Path, options: WriteOptions) -> Written:
        options.stage(
            "scripting the model and saving the TorchScript file"
            + (" (optimize_for_mobile, lite interpreter)" if options.lite else "")
        )
        module = graph.module
        if options.preprocessing is not None:
            module = WithPreprocessing(ImagePreprocess(options.preprocessing, channels_last_input=True), module)
        notes = save_torchscript(module, path, options.lite)
        runtime = "PyTorch lite interpreter" if options.lite else "TorchScript interpreter"
        return Written(path, self.runner(path), runtime, True, notes=notes)

    def runner(self, path: Path, threads: int = 0) -> Runner:
        with zipfile.ZipFile(path) as archive:  # the lite format carries the mobile bytecode
            lite = any(name.endswith("/bytecode.pkl") for name in archive.namelist())
        if lite:
            loaded = _load_for_lite_interpreter(str(path))
        else:
            loaded = torch.jit.load(str(path))

        def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with torch.inference_mode():
                out = loaded(*inputs)
            return tuple(out) if isinstance(out, (tuple, list)) else (out,)

        return run
