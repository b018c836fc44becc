"""ONNX, run in onnxruntime (CPU).

Opset 17 and lower go through the TorchScript-based exporter, which writes them natively;
opset 18 and higher through the dynamo exporter (which starts at 18 and cannot down-convert
MobileViT's graph). With ``preprocessing`` the file takes one uint8 ``[H, W, 3]`` photo: the
evaluation preprocessing is an ONNX graph put in front of the model (opset >= 18 for the
antialiased ``Resize``, see ``export/onnx_preprocessing.py``). ``quantize="int8"`` writes
the fp32 file first and quantizes it with onnxruntime's static quantization, ``"int8-dynamic"``
with its dynamic quantization of the matrix products (``export/quantize.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from ...fileio import atomic_path
from ...weights.entries import PreprocessConfig
from ..errors import ExportError
from ..onnx_preprocessing import prepend_preprocessing, preprocessing_difference
from ..quantize import DYNAMIC_INT8, quantize_onnx_dynamic, quantize_onnx_static
from ..report import file_size
from .base import ExportFormat, Graph, Runner, WriteOptions, Written, get_format


class OnnxFormat(ExportFormat):
    name = "onnx"
    runs_data_dependent_branches = True
    order = 1
    suffixes = (".onnx",)
    extra = "onnx"
    packages = ("onnx", "onnxruntime")
    runtime_packages = ("onnxruntime",)
    options = frozenset({"dynamic_batch", "dynamic_size", "include_preprocessing", "opset", "quantize"})
    bench_backend = "onnxruntime"
    bench_label = "ONNX Runtime"
    check_stage = "running the file in onnxruntime"

    def check(self, options: WriteOptions) -> None:
        if options.quantize is not None and options.preprocessing is not None:
            raise ExportError("--quantize does not combine with --include-preprocessing yet; export the model alone")

    def write(self, graph: Graph, path: Path, options: WriteOptions) -> Written:
        onnx = require_onnx()
        if options.preprocessing is not None:
            return self._write_with_preprocessing(graph, path, options)
        if options.quantize is not None:
            return self._write_int8(graph, path, options)
        options.stage(f"exporting to ONNX (opset {options.opset}) and checking the graph")
        with atomic_path(path) as tmp:
            write_onnx_graph(graph, tmp, options.opset)
            onnx.checker.check_model(onnx.load(str(tmp)))
        return Written(path, self.runner(path), runtime_name(), graph.is_dynamic)

    def runner(self, path: Path, threads: int = 0) -> Runner:
        session = onnx_session(path, threads)
        names = [i.name for i in session.get_inputs()]

        def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            feeds = {name: tensor.detach().contiguous().numpy() for name, tensor in zip(names, inputs)}
            return tuple(torch.from_numpy(out) for out in session.run(None, feeds))

        return run

    def _write_with_preprocessing(self, graph: Graph, path: Path, options: WriteOptions) -> Written:

        onnx = require_onnx()
        opset = max(options.opset, 18)  # the antialiased Resize needs opset 18
        options.stage(f"exporting preprocessing and model to ONNX (opset {opset}), then running it on the check photos")
        # the dynamo exporter writes opset 18+ natively (static [1, 3, crop_h, crop_w] input)
        program = torch.onnx.export(
            graph.module,
            graph.example,
            dynamo=True,
            opset_version=opset,
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            verbose=False,
        )
        _drop_exporter_traces(program)
        full = prepend_preprocessing(program.model_proto, options.preprocessing, graph.input_names[0])
        onnx.checker.check_model(full)
        with atomic_path(path) as tmp:
            onnx.save(full, str(tmp))
        return Written(path, self.runner(path), runtime_name(), False, details={"opset": opset})

    def _write_int8(self, graph: Graph, path: Path, options: WriteOptions) -> Written:

        with tempfile.TemporaryDirectory() as folder:
            fp32_path = Path(folder) / "fp32.onnx"
            options.stage(f"exporting the fp32 model to ONNX (opset {options.opset})")
            fp32 = self.write(graph, fp32_path, WriteOptions(opset=options.opset))
            if options.quantize == DYNAMIC_INT8:
                options.stage("quantizing the matrix products to int8 (onnxruntime dynamic)")
                quantize_onnx_dynamic(fp32_path, path)
                note = (
                    "int8: onnxruntime dynamic quantization (per-channel int8 weights of the matrix products, "
                    "activations quantized per call); attention's products, softmax and norms stay fp32"
                )
            else:
                options.stage(
                    f"quantizing to int8 (onnxruntime static), calibrating on {len(options.calibration)} photos"
                )
                calibration = [inputs[0] for inputs in options.calibration]
                quantize_onnx_static(fp32_path, path, calibration, graph.input_names[0], options.quantize_only)
                note = (
                    "int8: onnxruntime static quantization (QOperator, per-channel int8 weights, uint8 activations) "
                    "of convolutions, weight matmuls, adds, products and sigmoids; attention matmuls, softmax and "
                    "norms stay fp32"
                )
            written = Written(path, self.runner(path), fp32.runtime, fp32.dynamic, notes=fp32.notes + [note])
            # the fp32 session holds its model in memory once the folder is gone
            written.fp32 = (fp32.run, file_size(fp32_path))
        return written

    def preprocessing_difference(self, config: PreprocessConfig, images: list[torch.Tensor]) -> dict | None:

        return preprocessing_difference(config, images)


def write_onnx_graph(graph: Graph, path: Path, opset: int) -> None:
    """``torch.onnx.export`` of ``graph`` to ``path`` with the exporter that writes ``opset``."""
    common: dict[str, Any] = {
        "opset_version": opset,
        "input_names": list(graph.input_names),
        "output_names": list(graph.output_names),
    }
    if opset <= 17:
        torch.onnx.export(
            graph.module, graph.example, str(path), dynamo=False, dynamic_axes=_onnx_axes(graph), **common
        )
    else:
        program = torch.onnx.export(
            graph.module,
            graph.example,
            dynamo=True,
            dynamic_shapes=graph.torch_export_shapes(),
            verbose=False,
            **common,
        )
        _drop_exporter_traces(program)
        program.save(str(path))


def _drop_exporter_traces(program) -> None:
    """Removes what the dynamo exporter records on each node for debugging (the Python stack
    trace, FX node and module path): 5 MB in a 4-layer ViLT with exits, 65% of its file, and
    the exporting machine's paths, which a shipped file should not carry."""
    try:
        from onnx_ir.traversal import RecursiveGraphIterator
    except ImportError:  # onnxscript before onnx_ir: the file is right, only larger
        return
    for graph in (program.model.graph, *program.model.functions.values()):
        for node in RecursiveGraphIterator(graph):
            node.metadata_props.clear()


def _onnx_axes(graph: Graph) -> dict[str, dict[int, str]] | None:
    if not graph.is_dynamic:
        return None
    axes = {
        name: {axis: dim.name for axis, dim in dims.items()}
        for name, dims in zip(graph.input_names + graph.output_names, graph.dynamic + graph.output_dynamic)
    }
    return axes


def require_onnx():
    """The ``onnx`` module, after checking that onnx and onnxruntime are installed."""
    ONNX.require()
    import onnx

    return onnx


def onnx_session(path, threads: int = 0):
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads (0: as
    many as torch uses, so that a comparison with eager runs on equal terms)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads > 0 else torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle onnxruntime threads spin for a while after each run and would slow the torch
    # code timed right after them; without spinning both latencies are fair.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runtime_name() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} (CPUExecutionProvider)"


ONNX = get_format("onnx")
