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
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..fileio import atomic_path
from .errors import ExportError
from .native_logs import LITERT_LOGS, native_stderr_without

INSTALL_HINT = 'pip install "mobilevt[tflite]"  (litert-torch, ai-edge-litert)'


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


def export_tflite(
    model: nn.Module, output: Path, height: int, width: int, notes: list[str]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], str, dict[str, Any]]:
    """Convert ``model`` (eval mode, input ``[1, 3, height, width]``) to ``output``, load it
    in the LiteRT interpreter and return ``(run, runtime description, report details)``;
    ``run`` takes a ``[1, 3, height, width]`` float tensor."""
    try:
        import litert_torch
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ExportError(f"the tflite export needs {exc.name}: {INSTALL_HINT}") from None
    example = torch.rand(1, 3, height, width)
    with _quiet_converter(), native_stderr_without(LITERT_LOGS):
        # model_content() reports its own stage: inside the quiet block too
        flatbuffer = litert_torch.convert(model.eval(), (example,)).model_content()
    op_names = check_builtin_ops(flatbuffer)  # before writing: no file that cannot run
    with atomic_path(output) as tmp:
        tmp.write_bytes(flatbuffer)

    with native_stderr_without(LITERT_LOGS):
        interpreter = Interpreter(model_path=str(output), num_threads=torch.get_num_threads())
        interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    if list(input_detail["shape"]) != [1, 3, height, width] or input_detail["dtype"] != np.float32:
        raise ExportError(
            f"the written .tflite takes {input_detail['dtype'].__name__} {list(input_detail['shape'])}, "
            f"expected float32 [1, 3, {height}, {width}]"
        )
    input_index, output_index = input_detail["index"], output_detail["index"]

    def run(x: torch.Tensor) -> torch.Tensor:
        interpreter.set_tensor(input_index, x.detach().to(torch.float32).contiguous().numpy())
        interpreter.invoke()
        return torch.from_numpy(interpreter.get_tensor(output_index))

    notes.append(
        f"input: float32 NCHW [1, 3, {height}, {width}] as in PyTorch (the converter transposes to NHWC inside); "
        "output: logits [1, classes]"
    )
    notes.append(
        "batch 1 only: litert-torch cannot lower MobileViT's patch reshape with a symbolic batch size; "
        "invoke once per image"
    )
    versions = f"litert-torch {litert_torch.__version__}, ai-edge-litert {importlib.metadata.version('ai-edge-litert')}"
    runtime = f"LiteRT interpreter ({versions}, XNNPACK delegate, {torch.get_num_threads()} threads)"
    return run, runtime, {"tflite_ops": op_names, "input_layout": "NCHW"}
