"""``mobilevt bench``: latency table of variants x backends, as markdown, JSON and a PNG plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..console import native_output_to
from ..errors import InvalidInputError
from ..model_kind import ModelKind
from ..registry import get_model_entry
from .common import stage_printer
from .values import comma_list, folder_target, json_object, non_negative_int, positive_int
from .vqa import add_mobivqa_arguments, mobivqa_requested


def configure_bench_parser(p) -> None:
    from mobilevt.benchmark import BACKENDS
    from mobilevt.benchmark.report import INT8_BACKENDS
    from mobilevt.benchmark.vilt import VQA_BACKENDS, VQA_INT8_BACKENDS

    p.description = (
        "Times every backend of each (model, batch) interleaved, one call each per round, with random weights "
        "(latency does not depend on them; nothing is downloaded). Writes bench.md, bench.json and bench.png "
        "(latency vs published top-1) to --output-dir. `mobilevt bench vilt_b32_vqa` times ViLT at 384x384 + 40 "
        "tokens against transformers eager instead, full and with the MobiVQA flags given, and writes "
        "vilt-bench.md and vilt-bench.json. `mobilevt bench deeplabv3_mobilevit_s ssdlite_mobilevit_s` times the "
        "task models, eager and fused, against transformers' DeepLabV3 (same weights, 512x512) and torchvision's "
        "SSDLite network (320x320), and writes tasks-bench.md and tasks-bench.json."
    )
    p.add_argument(
        "models", nargs="*", help="names or shell patterns, e.g. mobilevit_xxs 'mobilevitv2_*' (default: every variant)"
    )
    p.add_argument(
        "--backends",
        type=comma_list,
        default=None,
        help=f"comma-separated (default: all): {','.join(BACKENDS)}; on request: {','.join(INT8_BACKENDS)} "
        f"(int8 files, calibrated on random photos: speed only); ViLT: {','.join(VQA_BACKENDS)}, on request "
        f"{','.join(VQA_INT8_BACKENDS)}",
    )
    p.add_argument(
        "--batch-sizes", type=positive_int, nargs="+", default=None, metavar="B", help="default: 1 8 (ViLT: 1)"
    )
    p.add_argument("--image-size", type=positive_int, default=None, help="square input size (default 256; ViLT 384)")
    p.add_argument(
        "--text-length", type=positive_int, default=40, help="ViLT: question tokens (default 40, ViLT's padding)"
    )
    p.add_argument(
        "--hf-config", type=json_object, help="ViLT: JSON of ViltConfig fields replacing ViLT-B/32's (a small model)"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="threads of torch, onnxruntime, ExecuTorch, TFLite (default: the cores available)",
    )
    p.add_argument("--runs", type=positive_int, default=20, help="timed rounds per (model, batch) (default 20)")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed rounds first (default 3)")
    p.add_argument(
        "--output-dir",
        type=folder_target,
        default="bench-results",
        help="folder for bench.md/json/png (default bench-results)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier report in --output-dir (default: refuse)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes (faster)")
    p.add_argument(
        "--grid",
        action="store_true",
        help="ViLT: also the MobiVQA grid (prune after layer 2 or 4 keeping 0.75/0.5/0.25 of the image tokens, "
        "exit after layer 4/6/8/12), each setting timed beside the full model on the first --backends runtime "
        "(default onnxruntime)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also each backend's time by operator (torch.profiler, onnxruntime's profiler, ExecuTorch's ETDump): "
        "the top operators and kernel vs glue time, at the first batch size",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_mobivqa_arguments(p)
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    from mobilevt.benchmark import BACKENDS, run_benchmark, write_report

    kinds = {_kind(name) for name in args.models}
    if ModelKind.VQA in kinds:
        return run_vilt_bench(args)
    if kinds & {ModelKind.SEGMENTATION, ModelKind.DETECTION}:
        return run_task_bench(args)
    if mobivqa_requested(args) or args.hf_config or args.grid:
        raise InvalidInputError(
            "--prune-layer, the --exit-* options, --grid and --hf-config apply to vilt_b32_vqa only"
        )
    return _run_and_report(
        args,
        "bench",
        lambda: run_benchmark(
            args.models,
            backends=args.backends or list(BACKENDS),
            batch_sizes=args.batch_sizes or [1, 8],
            image_size=args.image_size or 256,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            measure_memory=not args.no_memory,
            progress=not args.no_progress,
            profile=args.profile,
        ),
        write_report,
        lambda report: report.summary_markdown(),
    )


def _run_and_report(args, stem: str, run: Callable[[], Any], write: Callable[[Any, Path], dict], shown) -> int:
    """Run a bench with the runtimes' output in ``<stem>.log``, write its report into
    ``--output-dir`` (refusing an earlier one without ``--overwrite``), print ``shown(report)``
    and where the files are."""
    out = claim_output_dir(args.output_dir, stem, args.overwrite)
    with native_output_to(out / f"{stem}.log"):
        report = run()
        written = write(report, out)
    print(shown(report))
    others = ", ".join(str(path) for kind, path in written.items() if kind != "markdown")
    print(f"full report: {written['markdown']} (also {others}); runtime logs: {out / f'{stem}.log'}")
    return 0


def _kind(name: str) -> ModelKind | None:
    """The kind of a model name (None for a pattern: patterns select classifiers)."""
    return None if any(c in name for c in "*?[") else get_model_entry(name).kind


def run_task_bench(args) -> int:
    """``mobilevt bench deeplabv3_* ssdlite_*``: segmenters against transformers, detectors
    against torchvision's SSDLite, eager and fused."""
    from mobilevt.benchmark.tasks import run_task_benchmark, write_task_report

    if args.backends is not None or args.batch_sizes not in (None, [1]):
        raise InvalidInputError(
            "the task-model bench times mobilevt eager and fused against the reference at batch 1: "
            "--backends and --batch-sizes apply to classifiers"
        )
    if mobivqa_requested(args) or args.hf_config or args.grid:
        raise InvalidInputError(
            "--prune-layer, the --exit-* options, --grid and --hf-config apply to vilt_b32_vqa only"
        )
    if args.profile:
        raise InvalidInputError("--profile applies to the classifier bench")
    return _run_and_report(
        args,
        "tasks-bench",
        lambda: run_task_benchmark(
            args.models,
            image_size=args.image_size,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            progress=(lambda stage: None) if args.no_progress else stage_printer("bench"),
        ),
        write_task_report,
        lambda report: report.to_markdown(),
    )


def run_vilt_bench(args) -> int:
    """``mobilevt bench vilt_b32_vqa``: ViLT against transformers, full and in the MobiVQA setting."""
    from mobilevt.benchmark.vilt import (
        VQA_BACKENDS,
        MobiVqaSetting,
        mobivqa_grid,
        run_vilt_benchmark,
        write_vilt_report,
    )

    if len(args.models) != 1:
        raise InvalidInputError("bench ViLT on its own: mobilevt bench vilt_b32_vqa")
    if args.batch_sizes not in (None, [1]):
        raise InvalidInputError("the ViLT bench runs batch 1 (one question about one photo)")
    if args.exit_threshold is not None or args.exit_predictor:
        raise InvalidInputError("the ViLT bench times fixed settings: --prune-layer N and --exit-layer N")
    size = args.image_size or 384
    depth = (args.hf_config or {}).get("num_hidden_layers", 12)
    backends = args.backends or (["onnxruntime"] if args.grid else list(VQA_BACKENDS))
    return _run_and_report(
        args,
        "vilt-bench",
        lambda: run_vilt_benchmark(
            image_size=(size, size),
            text_length=args.text_length,
            backends=backends,
            mobivqa=MobiVqaSetting(args.prune_layer, args.keep_ratio, args.exit_layer),
            grid=mobivqa_grid(depth=depth) if args.grid else (),
            profile=args.profile,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            hf_overrides=args.hf_config,
            progress=(lambda stage: None) if args.no_progress else stage_printer(args.models[0]),
        ),
        write_vilt_report,
        lambda report: report.to_markdown(),
    )


def claim_output_dir(folder: str, stem: str, overwrite: bool) -> Path:
    """The report folder, refused when it holds an earlier ``stem`` report and ``overwrite`` is off."""
    out = Path(folder)
    earlier = [out / f"{stem}.{suffix}" for suffix in ("md", "json") if (out / f"{stem}.{suffix}").exists()]
    if earlier and not overwrite:
        raise InvalidInputError(
            f"{earlier[0]} holds an earlier report: pass --overwrite to replace it, or --output-dir DIR"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.log").unlink(missing_ok=True)
    return out
