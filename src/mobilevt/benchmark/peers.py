"""The peer paths: timm's own model taken to a runtime the way a user without mobilevt
would take it, with each tool's documented call and no rewrite of the model.

- ONNX Runtime: ``torch.onnx.export`` at opset 17 with a dynamic batch axis, run with
  onnxruntime's default (all) graph optimisations.
- ExecuTorch: ``torch.export`` with a dynamic batch, ``to_edge_transform_and_lower`` with
  the ``XnnpackPartitioner``, ``to_executorch``; batch 1 where the batch cannot be
  symbolic or the dynamic program fails in the runtime (as mobilevt's export does).
- LiteRT: ``litert_torch.convert`` of the model at batch 1 (the ``tflite`` extra).

The files are timed by the same runners as mobilevt's own files, so a ratio between the
two is a ratio between the files.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..export.formats.executorch import executorch_runner, outside_delegate, write_xnnpack_program
from ..export.native_logs import RESIZE_ERRORS, native_stderr_without
from ..fileio import atomic_path

# peer backend -> the runtime that runs its file
PEER_RUNTIMES = {"timm_onnxruntime": "onnxruntime", "timm_executorch": "executorch", "timm_tflite": "tflite"}
PEER_SUFFIX = {"timm_onnxruntime": ".onnx", "timm_executorch": ".pte", "timm_tflite": ".tflite"}


@dataclass
class PeerFile:
    path: Path
    note: str
    max_batch: int | None  # largest batch the file runs; None: any


def export_peer(backend: str, model: nn.Module, size: int, max_batch: int, output: str | os.PathLike) -> PeerFile:
    """Write timm's ``model`` for the peer ``backend`` to ``output``."""
    output = Path(output)
    if backend == "timm_onnxruntime":
        return _onnx(model, size, output)
    if backend == "timm_executorch":
        return _executorch(model, size, max_batch, output)
    if backend == "timm_tflite":
        return _tflite(model, size, output)
    raise ValueError(f"{backend} is not a peer path; peer paths: {', '.join(PEER_RUNTIMES)}")


def _onnx(model: nn.Module, size: int, output: Path) -> PeerFile:
    with atomic_path(output) as tmp:
        torch.onnx.export(
            model,
            (torch.rand(2, 3, size, size),),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    return PeerFile(output, "torch.onnx.export(opset 17, dynamic batch); onnxruntime's default optimisations", None)


def _executorch(model: nn.Module, size: int, max_batch: int, output: Path) -> PeerFile:

    how = "torch.export + XnnpackPartitioner"
    if max_batch > 1:
        try:
            batch = torch.export.Dim("batch", min=1, max=max_batch)
            program = torch.export.export(model, (torch.rand(2, 3, size, size),), dynamic_shapes={"x": {0: batch}})
            outside = sum(outside_delegate(write_xnnpack_program(program, output)).values())
            largest = _largest_batch_that_runs(output, size)
            if largest is not None:
                return PeerFile(
                    output,
                    f"{how}, batch 1 to {largest}; {outside} operators left to ExecuTorch's portable kernels",
                    largest,
                )
            how += ", batch 1 (the dynamic-batch program fails in the runtime)"
        except Exception:  # noqa: BLE001 - a symbolic batch that does not export: batch 1, as a user would
            how += ", batch 1 (the batch does not export as symbolic)"
    program = torch.export.export(model, (torch.rand(1, 3, size, size),))
    outside = sum(outside_delegate(write_xnnpack_program(program, output)).values())
    return PeerFile(output, f"{how}; {outside} operators left to ExecuTorch's portable kernels", 1)


def _largest_batch_that_runs(path: Path, size: int) -> int | None:
    """The batch the runtime planned memory for, if the program runs at 1 and at it (the
    XNNPACK delegate can keep a tensor at the example's batch); else None."""

    run, program = executorch_runner(path)
    planned = program.metadata("forward").input_tensor_meta(0).sizes()[0]
    with native_stderr_without(RESIZE_ERRORS):  # the runtime's C++ lines of an expected failure
        for batch in (1, planned):
            try:
                if run(torch.zeros(batch, 3, size, size))[0].shape[0] != batch:
                    return None
            except RuntimeError:
                return None
    return planned


def _tflite(model: nn.Module, size: int, output: Path) -> PeerFile:
    import litert_torch

    with contextlib.redirect_stdout(io.StringIO()):  # the converter's per-stage progress lines
        flatbuffer = litert_torch.convert(model.eval(), (torch.rand(1, 3, size, size),)).model_content()
    with atomic_path(output) as tmp:
        tmp.write_bytes(flatbuffer)
    return PeerFile(output, "litert_torch.convert, batch 1", 1)
