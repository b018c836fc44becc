"""TFLite / LiteRT export through ``litert-torch`` (Google's PyTorch-to-LiteRT converter).

The converter lowers a ``torch.export`` program to TFLite builtin ops and writes a
flatbuffer; the LiteRT interpreter (``ai_edge_litert``, with its default XNNPACK delegate)
runs it back here. Only builtin ops are accepted: a model needing Flex (TensorFlow) or
custom ops would not run in a plain LiteRT runtime on a phone, so the export fails instead.

Layout: litert-torch keeps PyTorch's interface, so the ``.tflite`` input is NCHW float32
``[1, 3, H, W]`` (it transposes to NHWC inside, where TFLite's convolutions want it).
Batch: 1, static. litert-torch 0.10 cannot lower MobileViT's patch-unfolding reshape with a
symbolic batch size (its ``aten.view`` lowering goes through JAX, which needs concrete
shapes), and a batch-1 model cannot be resized in the interpreter (the reshapes are fixed).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ...fileio import atomic_path
from ..errors import ExportError
from ..native_logs import LITERT_LOGS, native_stderr_without
from .base import ExportFormat, Graph, Runner, WriteOptions, Written, get_format


class TfliteFormat(ExportFormat):
    name = "tflite"
    order = 4
    suffixes = (".tflite",)
    extra = "tflite"
    packages = ("litert_torch", "ai_edge_litert.interpreter")
    runtime_packages = ("ai_edge_litert.interpreter",)
    options = frozenset({"dynamic_batch"})  # static batch 1 is what it writes
    bench_backend = "tflite"
    bench_label = "TFLite (LiteRT)"

    def write(self, graph: Graph, path: Path, options: WriteOptions) -> Written:
        options.stage("converting to LiteRT (litert-torch), then running the file on the check images")
        self.require()
        graph = graph.static()
        with _quiet_converter(), native_stderr_without(LITERT_LOGS):
            import litert_torch  # its import starts TensorFlow's logging: inside the quiet block

            # model_content() reports its own stage: inside the quiet block too
            flatbuffer = litert_torch.convert(graph.module.eval(), graph.example).model_content()
        op_names = check_builtin_ops(flatbuffer)  # before writing: no file that cannot run
        with atomic_path(path, needed=len(flatbuffer)) as tmp:
            tmp.write_bytes(flatbuffer)
        run = self.runner(path)
        shape = "x".join(str(s) for s in graph.example[0].shape)
        notes = [
            f"input: float32 NCHW [{shape.replace('x', ', ')}] as in PyTorch (the converter transposes to NHWC "
            "inside); output: logits [1, classes]",
            "batch 1 only: litert-torch cannot lower MobileViT's patch reshape with a symbolic batch size; "
            "invoke once per image",
        ]
        versions = (
            f"litert-torch {litert_torch.__version__}, ai-edge-litert {importlib.metadata.version('ai-edge-litert')}"
        )
        runtime = f"LiteRT interpreter ({versions}, XNNPACK delegate, {torch.get_num_threads()} threads)"
        return Written(
            path,
            run,
            runtime,
            False,
            max_batch=1,
            notes=notes,
            details={"tflite_ops": op_names, "input_layout": "NCHW"},
        )

    def runner(self, path: Path, threads: int = 0) -> Runner:
        """Run a ``.tflite`` in the LiteRT interpreter (XNNPACK delegate); an NHWC input (a
        file from another converter) is fed the NCHW tensor transposed."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ExportError(f"running a .tflite needs {exc.name}: {self.install_hint}") from None

        with native_stderr_without(LITERT_LOGS):
            interpreter = Interpreter(model_path=str(path), num_threads=threads or torch.get_num_threads())
            interpreter.allocate_tensors()
        (input_detail,) = interpreter.get_input_details()
        output_index = interpreter.get_output_details()[0]["index"]
        shape = [int(s) for s in input_detail["shape"]]
        if input_detail["dtype"] != np.float32:
            raise ExportError(f"{Path(path).name} takes {input_detail['dtype'].__name__} input, not float32")
        nhwc = shape[-1] == 3 and shape[1] != 3
        allocated = [shape[0]]

        def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if x.shape[0] != allocated[0]:  # the interpreter is resized to the batch given
                interpreter.resize_tensor_input(input_detail["index"], [x.shape[0]] + shape[1:])
                interpreter.allocate_tensors()
                allocated[0] = x.shape[0]
            array = (x.permute(0, 2, 3, 1) if nhwc else x).detach().to(torch.float32).contiguous().numpy()
            interpreter.set_tensor(input_detail["index"], array)
            interpreter.invoke()
            return (torch.from_numpy(interpreter.get_tensor(output_index).copy()),)

        return run


def tflite_op_names(flatbuffer: bytes) -> list[str]:
    """Names of the operator codes a ``.tflite`` flatbuffer uses: builtin op names
    (``CONV_2D`` ...) and, for custom ops, ``CUSTOM:<custom_code>`` (Flex ops are custom
    ops whose code starts with ``Flex``)."""
    from ai_edge_litert import schema_py_generated as schema

    builtin_names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.Model.GetRootAs(flatbuffer, 0)
    names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # the int8 field holds codes < 127; newer codes live in the int32 field
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            names.append(f"CUSTOM:{custom.decode() if custom else '?'}")
        else:
            names.append(builtin_names.get(builtin, f"BUILTIN_{builtin}"))
    return names


def check_builtin_ops(flatbuffer: bytes) -> list[str]:
    """Return the sorted op names of ``flatbuffer``; raise if any is a Flex or custom op."""
    names = sorted(set(tflite_op_names(flatbuffer)))
    custom = [name.split(":", 1)[1] for name in names if name.startswith("CUSTOM:")]
    if custom:
        flex = [code for code in custom if code.startswith("Flex")]
        kind = "Flex (TensorFlow select) ops" if flex else "custom ops"
        raise ExportError(
            f"the converted model needs {kind} {', '.join(custom)}, which a plain LiteRT runtime cannot run; "
            "only builtin TFLite ops are accepted"
        )
    return names


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    # litert-torch prints a progress line per conversion stage unless this is off
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


TFLITE = get_format("tflite")
