"""Post-training static int8 quantization with calibration photos.

Two runtimes, each with its own toolchain:

* ExecuTorch: PT2E (``prepare_pt2e`` / ``convert_pt2e`` from torchao) with ExecuTorch's
  ``XNNPACKQuantizer`` (symmetric int8 weights per channel, int8 activations per tensor);
  the quantized graph is lowered to XNNPACK's int8 kernels. Without calibration, the
  quantizer's dynamic configuration: the linears only, each activation quantized per call
  from its own range (XNNPACK's ``QD8`` GEMMs), the int8 of BERT-sized transformers.
* ONNX Runtime: ``onnxruntime.quantization.quantize_static`` on the fp32 ONNX file
  (QOperator format, per-channel weights): convolutions, matrix products with constant
  weights, and the adds, products and sigmoids between them, so that activations stay int8
  from layer to layer. The attention's activation-activation matmuls and softmax stay
  fp32: quantizing them made ONNX Runtime 1.32 slower on x86 (``QLinearSoftmax`` alone
  cost more than the whole fp32 attention).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import atomic_path

METHODS = ("int8",)  # what a user asks for; each family picks the kind of int8 below
STATIC_INT8 = "int8"  # WriteOptions.quantize: int8 activations calibrated on WriteOptions.calibration
DYNAMIC_INT8 = "int8-dynamic"  # the linears only, each activation quantized per call (no calibration)


def quantize_pt2e_xnnpack(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    calibration: Sequence[tuple[torch.Tensor, ...]] | None,
    dynamic_shapes: Any = None,
    only: str | None = None,
) -> nn.Module:
    """The int8 graph module of ``model`` (fp32, eval): static (per-tensor int8 activations
    calibrated on the ``calibration`` input tuples) or, with ``calibration`` None, dynamic
    (linears only). Export it with ``torch.export`` and lower it with the XNNPACK partitioner.
    ``dynamic_shapes`` (``torch.export``'s) keeps dynamic dims through the capture; ``only``
    names the submodule whose operators are quantized (static; None: all of them)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    captured = torch.export.export(model.eval(), example, dynamic_shapes=dynamic_shapes).module()
    if calibration is None:
        # the linears only: the quantizer's dynamic patterns take convolutions too, and the
        # partitioner then refuses a per-tensor dynamic patch embedding (ExecuTorch 1.5)
        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
        quantizer = XNNPACKQuantizer().set_operator_type(torch.ops.aten.linear.default, config)
    else:
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        quantizer = quantizer if only is None else _Within(quantizer, only)
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        # dynamic: one run all the same, for the weight observers (else one scale per tensor)
        for inputs in calibration if calibration is not None else [example]:
            prepared(*inputs)
    return convert_pt2e(prepared)


class _Within:
    """A PT2E quantizer whose annotations are kept on the operators of one submodule only. The
    XNNPACK quantizer's module-name filter is not enough: slices and concatenations after the
    submodule inherit its output's int8 (a detector's box decoding). Everything else is the
    wrapped quantizer's (``prepare_pt2e`` calls its methods by name)."""

    def __init__(self, quantizer: Any, submodule: str) -> None:
        self.quantizer, self.submodule = quantizer, submodule

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        self.quantizer.annotate(model)
        for node in model.graph.nodes:
            paths = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
            if node.op == "call_function" and self.submodule not in paths:
                node.meta.pop("quantization_annotation", None)
        return model

    def __getattr__(self, name: str) -> Any:
        if name == "quantizer":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.quantizer, name)


def quantize_onnx_static(
    fp32_path: Path, output: Path, calibration: Sequence[torch.Tensor], input_name: str, only: str | None = None
) -> None:
    """Write the int8 version of the ONNX file ``fp32_path`` to ``output`` (atomically);
    ``only`` names the submodule whose operators are quantized (None: all of them): the
    exporter names each node after the module that made it (``/model/backbone/...``)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch.numpy()}

    with atomic_path(output) as tmp:
        prepared = tmp.with_name(tmp.name + ".pre.onnx")
        try:
            quant_pre_process(str(fp32_path), str(prepared))  # shape inference + graph cleanup
            graph = _unshared_initializers(onnx.load(str(prepared)))
            onnx.save(graph, str(prepared))
            outside = _not_float(graph) + ([] if only is None else _nodes_outside(graph, only))
            quantize_static(
                str(prepared),
                str(tmp),
                Reader(),
                quant_format=QuantFormat.QOperator,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                # the residual adds and SiLU's sigmoid and product too: left fp32, each one is
                # wrapped in a DequantizeLinear / QuantizeLinear pair, and those pairs cost more
                # than the int8 kernels save (mobilevit_s: 0.89x of fp32 with convs and matmuls
                # only, 1.12x with these; docs/performance.md)
                op_types_to_quantize=["Conv", "MatMul", "Gemm", "Add", "Mul", "Sigmoid"],
                nodes_to_exclude=outside,
                extra_options={"MatMulConstBOnly": True},
                # 7-bit weights: on x86 CPUs without VNNI (AVX2, AVX-512F) onnxruntime's u8s8
                # kernels sum pairs of products in int16 (VPMADDUBSW), which saturates with
                # full-range weights (measured: top-1 agreement 0.89 -> >= 0.97 on the trained
                # digits model, AVX2); on VNNI CPUs it costs one bit of weight precision
                reduce_range=True,
            )
        finally:
            prepared.unlink(missing_ok=True)
        quantized = _compact_names(onnx.load(str(tmp)))
        onnx.checker.check_model(quantized)
        onnx.save(quantized, str(tmp))


def _unshared_initializers(model):
    """Each node its own copy of a weight that several nodes share. The exporter stores equal
    tensors once (a fresh model's zero biases: LayerNorm's, a convolution's), and the quantizer
    then writes one shared copy as a convolution's int32 bias and as an add's uint8 input: an
    invalid graph."""
    initializers = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            if name not in initializers:
                continue
            if name in seen:
                copy = type(initializers[name])()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}_{node.name or len(model.graph.initializer)}_{position}"
                model.graph.initializer.append(copy)
                node.input[position] = copy.name
            seen.add(name)
    return model


def _not_float(model) -> list[str]:
    """The Add and Mul nodes of shape arithmetic (int64 inputs): onnxruntime's quantizer would
    skip them anyway, with a warning of several lines each."""
    import onnx

    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.value_info]}
    types |= {t.name: t.data_type for t in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in ("Add", "Mul")
        and any(types.get(name, onnx.TensorProto.FLOAT) != onnx.TensorProto.FLOAT for name in node.input)
    ]


def _nodes_outside(model, submodule: str) -> list[str]:
    prefix = f"/{submodule}/"
    inside = [node.name for node in model.graph.node if node.name.startswith(prefix)]
    if not inside:
        raise ValueError(f"no node of the ONNX graph comes from the submodule {submodule!r}")
    return [node.name for node in model.graph.node if not node.name.startswith(prefix)]


def quantize_onnx_dynamic(fp32_path: Path, output: Path) -> None:
    """Write ``fp32_path`` with its matrix products dynamically quantized to ``output``
    (atomically): per-channel int8 weights, activations quantized per call from their own range
    (no calibration). The usual int8 for BERT-sized transformers, whose time is in the linears."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    root.addFilter(_PRE_PROCESSING_ADVICE)
    try:
        with atomic_path(output) as tmp:
            quantize_dynamic(
                str(fp32_path),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"],
                extra_options={"MatMulConstBOnly": True},  # the weights; attention's two products stay fp32
            )
            onnx.checker.check_model(str(tmp))
    finally:
        root.removeFilter(_PRE_PROCESSING_ADVICE)


class _DropPreProcessingAdvice(logging.Filter):
    """The quantizer advises its shape-inference pre-pass on every call (a root-logger
    warning): dynamic quantization of the linears needs no shapes, and onnxruntime optimises
    the graph when it loads the file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "consider to run pre-processing before quantization" not in record.getMessage()


_PRE_PROCESSING_ADVICE = _DropPreProcessingAdvice()


def _compact_names(model):
    """Short tensor names and no value_info: the quantizer's long generated names were a
    quarter of the int8 file. Graph inputs and outputs keep their names."""
    keep = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        return short.setdefault(name, f"t{len(short)}")

    del model.graph.value_info[:]
    for tensor in model.graph.initializer:
        tensor.name = rename(tensor.name)
    for node in model.graph.node:
        node.name = ""
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    return model
