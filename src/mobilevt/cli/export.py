"""``mobilevt export``."""

from __future__ import annotations

from mobilevt.export.formats import FORMAT_NAMES
from mobilevt.export.report import PACKAGED_PHOTOS_SOURCE
from mobilevt.model_kind import ModelKind

from ..errors import InvalidInputError
from ..registry import get_model_entry
from .common import create_model_from_args, stage_printer
from .values import ONNX_OPSET, existing_dir, existing_file, positive_int, writable_target
from .vqa import add_mobivqa_arguments, mobivqa_requested, pipeline_for_export


def configure_export_parser(p) -> None:
    p.add_argument("model", help="model name, e.g. mobilevit_xxs or mobilevit_s.timm_in1k")
    p.add_argument("--weights", default="DEFAULT", help="weights tag, file, URL or hf-hub:<repo>; 'none' = random")
    p.add_argument("--format", required=True, choices=FORMAT_NAMES)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=writable_target,
        help="output file (.pt/.ptl torchscript, .onnx, .pte executorch, .mlpackage coreml, .tflite LiteRT)",
    )
    p.add_argument(
        "--image-size", type=positive_int, nargs=2, metavar=("H", "W"), help="input size (default: the weights')"
    )
    p.add_argument(
        "--static-batch", action="store_true", help="fix the batch size to 1 (ONNX; tflite is always batch 1)"
    )
    p.add_argument("--dynamic-size", action="store_true", help="ONNX: height and width may vary too")
    p.add_argument(
        "--include-preprocessing",
        action="store_true",
        help="the exported model takes a uint8 HxWx3 RGB image of any size (torchscript, onnx at opset 18+)",
    )
    p.add_argument("--lite", action="store_true", help="torchscript: optimize_for_mobile + lite-interpreter .ptl")
    p.add_argument("--opset", type=ONNX_OPSET, default=17, help="ONNX opset (default 17; 18+ uses the dynamo exporter)")
    p.add_argument(
        "--check-images", type=existing_dir, help="folder of photos to verify the export on (default: packaged photos)"
    )
    p.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (default: folded into convs)")
    p.add_argument("--max-batch", type=positive_int, default=32, help="executorch: largest batch the program accepts")
    p.add_argument("--coreml-precision", choices=("float16", "float32"), default="float16")
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="post-training int8 quantization (onnx, executorch). Image models: static, needs --calibration "
        "(executorch is where it runs faster than fp32); ViLT: dynamic int8 linears, no calibration",
    )
    p.add_argument(
        "--calibration", type=existing_dir, metavar="DIR", help="folder of representative photos to calibrate int8 on"
    )
    p.add_argument("--vocab", type=existing_file, help="ViLT: the BERT vocab.txt (default: the one beside the weights)")

    add_mobivqa_arguments(p)
    p.set_defaults(func=run_export)


def export_options(args) -> dict:
    """Every export option of the command line, as ``export_model`` keywords: all of them
    are passed on, and the export refuses those that the format or the model cannot honour."""
    return dict(
        image_size=args.image_size,
        dynamic_batch=not args.static_batch,
        dynamic_size=args.dynamic_size,
        include_preprocessing=args.include_preprocessing,
        lite=args.lite,
        opset=args.opset,
        check_images=args.check_images,
        fuse=not args.no_fuse,
        max_batch=args.max_batch,
        coreml_precision=args.coreml_precision,
        quantize=args.quantize,
        calibration=args.calibration,
        progress=stage_printer(args.model),
    )


def run_export(args) -> int:
    from mobilevt.export import export_model

    if get_model_entry(args.model).kind == ModelKind.VQA:
        model = pipeline_for_export(args)  # ViLT: the pipeline with its tokenizer
    elif mobivqa_requested(args):
        raise InvalidInputError("--prune-layer and the --exit-* options apply to ViLT models (vilt_b32_vqa) only")
    else:
        model = create_model_from_args(args.model, args.weights)
    report = export_model(model, args.output, args.format, **export_options(args))
    print_export_result(report)
    return 0


def print_export_result(report) -> None:
    """The export's result in one line (and the int8 or check-photo notes)."""
    if report.details.get("task") == "object-detection":
        _print_int8_gain(report)
        print(
            f"wrote {report.path} ({report.file_bytes / 1e6:.1f} MB, {report.runtime}); on {report.check_images} "
            f"photos: max-abs diff {report.max_abs_diff:.2e}, same detections after NMS on "
            f"{100 * report.top1_agreement:.1f}%; batch-1 latency {report.exported_latency_ms:.1f} ms (eager "
            f"{report.eager_latency_ms:.1f} ms); NMS settings and class names: {report.details['metadata']}; "
            f"report: {report.path}.report.json"
        )
        return
    if "mobivqa" in report.details:
        print_vqa_export_result(report)
        return
    _print_int8_gain(report)
    if report.top1_agreement is None:
        print(f"wrote {report.path} ({report.file_bytes / 1e6:.1f} MB, {report.runtime}); " + "; ".join(report.notes))
        return
    print(
        f"wrote {report.path} ({report.file_bytes / 1e6:.1f} MB, {report.runtime}); on {report.check_images} photos: "
        f"max-abs diff {report.max_abs_diff:.2e}, top-1 agreement {100 * report.top1_agreement:.1f}%, "
        f"top-5 {100 * report.top5_agreement:.1f}%; batch-1 latency {report.exported_latency_ms:.1f} ms "
        f"(eager {report.eager_latency_ms:.1f} ms); report: {report.path}.report.json"
    )
    if report.check_source == PACKAGED_PHOTOS_SOURCE:
        print(
            f"note: checked on the {report.check_images} {PACKAGED_PHOTOS_SOURCE} only, which says little about "
            "a model trained on other images: pass --check-images DIR with photos of its own task"
        )


def _print_int8_gain(report) -> None:
    quantization = report.details.get("quantization")
    if quantization and quantization.get("speedup_vs_fp32"):
        print(
            f"int8 vs fp32 on {report.runtime}: {quantization['size_ratio']:.2f}x smaller, "
            f"{quantization['int8_latency_ms']:.1f} vs {quantization['fp32_latency_ms']:.1f} ms "
            f"({quantization['speedup_vs_fp32']:.2f}x)"
        )
        advice = int8_advice(report.format, quantization["speedup_vs_fp32"])
        if advice:
            print(advice)


def print_vqa_export_result(report) -> None:
    side_files = [
        report.details[k]
        for k in (
            "vocab_file",
            "answers_file",
            "tokenizer_torchscript",
            "tokenizer_json",
            "tokenizer_config",
            "preprocessor_config",
        )
        if k in report.details
    ]
    _print_int8_gain(report)
    settings = report.details.get("mobivqa") or {}
    switched = [f"{name.replace('_', ' ')} {value}" for name, value in settings.items() if value]
    print(
        f"wrote {report.path} ({report.file_bytes / 1e6:.1f} MB, {report.runtime})"
        + (f" with {', '.join(side_files)}" if side_files else "")
        + (f"; MobiVQA: {'; '.join(switched)}" if switched else "")
        + f"; on {report.check_images} photos with questions: max-abs logit diff {report.max_abs_diff:.2e}, top-1 "
        f"agreement {100 * report.top1_agreement:.1f}%, top-5 {100 * report.top5_agreement:.1f}%; latency "
        f"{report.exported_latency_ms:.1f} ms (eager {report.eager_latency_ms:.1f} ms); "
        f"report: {report.path}.report.json"
    )


def int8_advice(export_format: str, speedup: float) -> str | None:
    """What to do when the int8 file is no faster than the fp32 one on its runtime."""
    if speedup >= 1.0:
        return None
    if export_format == "onnx":
        return (
            "note: onnxruntime runs this int8 file slower than the fp32 one on this CPU (the quantize / "
            "dequantize steps around the layers that stay fp32 cost more than the int8 kernels save; see "
            "docs/performance.md): for int8, export with --format executorch (XNNPACK's int8 kernels), or keep "
            "the fp32 .onnx"
        )
    return f"note: the int8 file is not faster than the fp32 one on this CPU ({speedup:.2f}x): keep the fp32 file"
