"""Evaluation preprocessing as an ONNX graph, put in front of an exported model.

``ImagePreprocess`` reproduces PIL's resize with index arithmetic that does not trace to
ONNX with dynamic sizes, so the same steps are written here directly in ONNX ops, for
one uint8 ``[height, width, 3]`` RGB image of any size:

* resize the shorter side to ``resize_size``: ``sizes = resize_size * [h, w] // min(h, w)``
  (the longer side truncated, as every reference does), ONNX ``Resize`` on the uint8
  image with ``antialias=1`` (opset 18), PIL's kernels (bicubic ``a = -0.5``), half-pixel
  centres and ``exclude_outside=1`` (PIL's border handling). onnxruntime's uint8
  antialiased resize is PIL's two-pass algorithm in its own fixed-point arithmetic: values
  near a rounding tie can land one step away. Measured on 100 ImageNet photos at 288: at
  most 2/255 from PIL on 0.26% (bilinear) / 0.01% (bicubic) of the values, and from
  ``ImagePreprocess`` on 0.46% / 0.02% (which itself is 0.31% / 0.02% from PIL); each
  export report gives the difference on its check photos. Without antialiasing (OpenCV's
  resize) it runs in float and rounds, as ``ImagePreprocess`` does.
* center crop with the configured margin rounding (zero padding first if the crop is
  larger than the resized image, as torchvision does);
* scale to [0, 1], normalise and order the channels: ``[1, 3, h, w]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.preprocess import ImagePreprocess
from ..errors import InvalidInputError
from ..weights.entries import PreprocessConfig

if TYPE_CHECKING:
    import onnx

MIN_OPSET = 18  # Resize's antialias attribute
IMAGE_INPUT = "image"
PIXELS_OUTPUT = "pixel_values"


class _GraphBuilder:
    """Appends nodes with unique output names; constants become initializers."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.nodes = []
        self.initializers = []
        self._count = 0

    def const(self, name: str, value, dtype=np.int64) -> str:
        tensor = self._numpy_helper.from_array(np.asarray(value, dtype=dtype), name=self._fresh(name))
        self.initializers.append(tensor)
        return tensor.name

    def op(self, op_type: str, inputs: list[str], name: str, output: str | None = None, **attributes) -> str:
        result = output or self._fresh(name)
        self.nodes.append(self._helper.make_node(op_type, inputs, [result], name=result, **attributes))
        return result

    def _fresh(self, name: str) -> str:
        self._count += 1
        return f"preprocess/{name}_{self._count}"


def preprocessing_model(
    config: PreprocessConfig, opset: int = MIN_OPSET, ir_version: int | None = None
) -> onnx.ModelProto:
    """An ONNX model taking ``image`` (uint8 ``[height, width, 3]`` RGB, any size) and
    returning ``pixel_values`` (float32 ``[1, 3, crop_h, crop_w]``), the model's input."""
    from onnx import TensorProto, helper

    if opset < MIN_OPSET:
        raise InvalidInputError(f"preprocessing in ONNX needs opset >= {MIN_OPSET} (antialiased Resize), got {opset}")
    g = _GraphBuilder()
    crop_h, crop_w = (int(s) for s in config.input_size)
    x, resized_hw, is_uint8 = _resize(g, config)
    x = _center_crop(g, x, resized_hw, config)
    _to_pixel_values(g, x, is_uint8, config)
    graph = helper.make_graph(
        g.nodes,
        "mobilevt_preprocessing",
        [helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.UINT8, ["height", "width", 3])],
        [helper.make_tensor_value_info(PIXELS_OUTPUT, TensorProto.FLOAT, [1, 3, crop_h, crop_w])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="mobilevt")
    if ir_version is not None:
        model.ir_version = ir_version
    return model


def _resize(g: _GraphBuilder, config: PreprocessConfig) -> tuple[str, str, bool]:
    """The image as ``[1, 3, h, w]`` with its shorter side resized to ``resize_size`` (the
    longer one keeps the ratio); returns it, its ``(h, w)`` and whether it is still uint8."""
    from onnx import TensorProto

    height_width = g.op(
        "Slice", [g.op("Shape", [IMAGE_INPUT], "shape"), g.const("zero", [0]), g.const("two", [2])], "height_width"
    )
    shorter = g.op("ReduceMin", [height_width], "shorter", keepdims=1)
    resized_hw = g.op(
        "Div",
        [g.op("Mul", [height_width, g.const("resize_size", [int(config.resize_size)])], "scaled"), shorter],
        "resized_hw",
    )
    # NCHW from here: onnxruntime's Resize takes every mode in that layout
    x = g.op(
        "Unsqueeze", [g.op("Transpose", [IMAGE_INPUT], "chw", perm=[2, 0, 1]), g.const("batch_axis", [0])], "batched"
    )
    sizes = g.op("Concat", [g.const("one_three", [1, 3]), resized_hw], "sizes", axis=0)
    no_roi, no_scales = "", ""
    if config.interpolation == "nearest":
        # torch's nearest-exact = PIL / OpenCV nearest: floor((i + 0.5) * in / out); where that
        # is an exact integer, float rounding may pick the neighbouring row or column
        x = g.op(
            "Resize",
            [x, no_roi, no_scales, sizes],
            "resized",
            mode="nearest",
            coordinate_transformation_mode="half_pixel",
            nearest_mode="round_prefer_ceil",
        )
        return x, resized_hw, True
    if config.antialias:
        # exclude_outside: taps beyond the border are dropped and the rest renormalised, as PIL does
        x = g.op(
            "Resize",
            [x, no_roi, no_scales, sizes],
            "resized",
            antialias=1,
            exclude_outside=1,
            mode="linear" if config.interpolation == "bilinear" else "cubic",
            cubic_coeff_a=-0.5,
            coordinate_transformation_mode="half_pixel",
        )
        return x, resized_hw, True
    # OpenCV-style: plain interpolation in float (torch's bicubic a = -0.75), rounded to 8 bits
    x = g.op("Cast", [x], "as_float", to=TensorProto.FLOAT)
    x = g.op(
        "Resize",
        [x, no_roi, no_scales, sizes],
        "resized",
        mode="linear" if config.interpolation == "bilinear" else "cubic",
        cubic_coeff_a=-0.75,
        coordinate_transformation_mode="half_pixel",
    )
    x = g.op(
        "Clip",
        [g.op("Round", [x], "rounded"), g.const("black", 0.0, np.float32), g.const("white", 255.0, np.float32)],
        "clipped",
    )
    return x, resized_hw, False


def _center_crop(g: _GraphBuilder, x: str, resized_hw: str, config: PreprocessConfig) -> str:
    """The ``input_size`` centre of ``x``, zero-padded first where the crop is larger."""
    crop_h, crop_w = (int(s) for s in config.input_size)
    resize_size = int(config.resize_size)
    crop = g.const("crop_size", [crop_h, crop_w])
    padded_hw = resized_hw
    if crop_h > resize_size or crop_w > resize_size:
        # a crop larger than the image: zero padding around it first (torchvision's CenterCrop)
        missing = g.op("Max", [g.op("Sub", [crop, resized_hw], "crop_minus_size"), g.const("zeros", [0, 0])], "missing")
        before = g.op("Div", [missing, g.const("two_two", [2, 2])], "pad_before")
        after = g.op("Sub", [missing, before], "pad_after")
        zero = g.const("zero_pad", [0])
        pads = g.op("Concat", [zero, zero, before, zero, zero, after], "pads", axis=0)
        x = g.op("Pad", [x, pads], "padded", mode="constant")
        padded_hw = g.op("Max", [resized_hw, crop], "padded_hw")
    extra = g.op("Sub", [padded_hw, crop], "extra")
    half = g.op("Div", [extra, g.const("two_two", [2, 2])], "half_extra")
    if config.crop_rounding == "floor":
        top_left = half
    else:
        # torchvision / mmcv: round(extra / 2) rounding half to even, i.e. an odd extra
        # 2k + 1 gives a margin of k + 1 when k is odd, k when k is even
        parity = g.op(
            "Mul",
            [
                g.op("Mod", [extra, g.const("two_two", [2, 2])], "extra_odd"),
                g.op("Mod", [half, g.const("two_two", [2, 2])], "half_odd"),
            ],
            "round_up",
        )
        top_left = g.op("Add", [half, parity], "margin")
    return g.op(
        "Slice", [x, top_left, g.op("Add", [top_left, crop], "crop_end"), g.const("hw_axes", [2, 3])], "cropped"
    )


def _to_pixel_values(g: _GraphBuilder, x: str, is_uint8: bool, config: PreprocessConfig) -> None:
    """Scaled to [0, 1], normalised, in the model's channel order, as ``pixel_values``."""
    from onnx import TensorProto

    if is_uint8:
        x = g.op("Cast", [x], "crop_float", to=TensorProto.FLOAT)
    x = g.op("Div", [x, g.const("max_value", 255.0, np.float32)], "unit")
    if tuple(config.mean) != (0.0, 0.0, 0.0) or tuple(config.std) != (1.0, 1.0, 1.0):
        x = g.op("Sub", [x, g.const("mean", np.reshape(config.mean, (3, 1, 1)), np.float32)], "centred")
        x = g.op("Div", [x, g.const("std", np.reshape(config.std, (3, 1, 1)), np.float32)], "normalized")
    if config.channel_order == "BGR":
        g.op("Gather", [x, g.const("bgr", [2, 1, 0])], "bgr", output=PIXELS_OUTPUT, axis=1)
    else:
        g.op("Identity", [x], "rgb", output=PIXELS_OUTPUT)


def prepend_preprocessing(
    model: onnx.ModelProto, config: PreprocessConfig, model_input: str = "pixel_values"
) -> onnx.ModelProto:
    """``model`` (an ONNX classifier whose input ``model_input`` is ``[1, 3, crop_h,
    crop_w]``, opset >= 18) with the preprocessing graph in front: its input is then
    ``image``, one uint8 ``[height, width, 3]`` RGB image of any size."""
    from onnx import compose

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    preprocess = preprocessing_model(config, opset, model.ir_version)
    merged = compose.merge_models(preprocess, model, io_map=[(PIXELS_OUTPUT, model_input)])
    merged.producer_name = model.producer_name or "mobilevt"
    return merged


def preprocessing_difference(config: PreprocessConfig, images: list[torch.Tensor]) -> dict[str, float]:
    """How far the ONNX preprocessing graph (in onnxruntime) is from ``ImagePreprocess`` on
    ``images`` (uint8 ``[3, H, W]``), in 8-bit steps before normalisation: the largest
    difference and the fraction of output values that differ at all."""
    import onnxruntime as ort

    session = ort.InferenceSession(preprocessing_model(config).SerializeToString(), providers=["CPUExecutionProvider"])
    reference = ImagePreprocess(config)
    order = [2, 1, 0] if config.channel_order == "BGR" else [0, 1, 2]
    steps_per_unit = 255.0 * torch.tensor(config.std)[order].view(1, 3, 1, 1)
    largest, differing, total = 0.0, 0, 0
    for image in images:
        (pixels,) = session.run(None, {IMAGE_INPUT: image.permute(1, 2, 0).contiguous().numpy()})
        steps = (torch.from_numpy(pixels) - reference(image)[None]).abs() * steps_per_unit
        largest = max(largest, steps.max().item())
        differing += int((steps > 0.5).sum())
        total += steps.numel()
    return {"max_steps": round(largest, 3), "fraction_differing": differing / max(total, 1)}
