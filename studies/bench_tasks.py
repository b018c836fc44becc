"""Task models (segmentation, detection): parameters, MACs and CPU latency against the
published figures and against the reference implementation, measured in the same run.

Segmentation: every ``deeplabv3_*`` model asked for, at 512x512 (the PASCAL VOC / ADE20K
evaluation size), fp32, batch 1:

- params (M) vs the published count (MobileViT paper Table 5 for v1; ml-cvnets' model
  zoo for v2, PASCAL VOC heads, ADE20K where no VOC model was published);
- MACs (G) counted with ``torch.utils.flop_counter`` (convolutions, linear layers and
  attention matmuls, as ``mobilevt models`` counts them);
- median latency of mobilevt eager, mobilevt fused (BatchNorm folded + channels-last),
  and transformers' ``MobileViT(V2)ForSemanticSegmentation`` eager with the same random
  weights (v2 in transformers' dilation convention so both compute the same function;
  the max-abs logit difference is printed), runs interleaved so that machine noise hits
  all alike; ratio = mobilevt eager / transformers eager (below 1: mobilevt faster).

Detection: every ``ssdlite_*`` model asked for, at 320x320 (ml-cvnets' COCO resolution,
``--detection-size``), fp32, batch 1: params vs ml-cvnets' table, MACs, and the median
latency of mobilevt eager / fused against torchvision's ``ssdlite320_mobilenet_v3_large``
network (backbone + heads, random weights, same input and threads; box decoding and NMS
excluded on both sides), ratio = mobilevt eager / torchvision; the JSON rows add the
published COCO mAP.

Other tasks add a ``<task>_rows(args) -> list[dict]`` function to ``TASK_ROWS`` with the
same columns.

    python studies/bench_tasks.py [--tasks segmentation] [--models deeplabv3_mobilevit_xxs ...]
        [--size 512] [--threads 2] [--runs 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch

import mobilevt
from mobilevt.profiling import count_macs

DEFAULT_SEGMENTERS = [
    "deeplabv3_mobilevit_xxs",
    "deeplabv3_mobilevit_xs",
    "deeplabv3_mobilevit_s",
    "deeplabv3_mobilevitv2_050",
    "deeplabv3_mobilevitv2_100",
]
# transformers MobileViTConfig fields of the v1 variants (their conversion script's table)
_HF_V1 = {
    "mobilevit_xxs": dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0),
    "mobilevit_xs": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
    "mobilevit_s": dict(hidden_sizes=[144, 192, 240], neck_hidden_sizes=[16, 32, 64, 96, 128, 160, 640]),
}


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Well-scaled random weights and BatchNorm statistics (transformers' default init
    drives MobileViT activations to denormals, which would distort its timings)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = 1.0 if param.dim() == 1 and name.endswith("weight") else 0.0
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05 + scale)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=generator) + 0.5)
    return model.eval()


def _transformers_segmenter(name: str, ours: torch.nn.Module) -> torch.nn.Module | None:
    try:
        import transformers
    except ImportError:
        return None
    backbone = name[len("deeplabv3_") :]
    common = dict(
        num_labels=ours.num_classes,
        output_stride=ours.output_stride,
        atrous_rates=list(ours.aspp.atrous_rates),
        aspp_out_channels=ours.classifier.in_channels,
    )
    if backbone in _HF_V1:
        return transformers.MobileViTForSemanticSegmentation(transformers.MobileViTConfig(**_HF_V1[backbone], **common))
    if backbone.startswith("mobilevitv2_"):
        width = int(backbone.split("_")[1]) / 100
        return transformers.MobileViTV2ForSemanticSegmentation(
            transformers.MobileViTV2Config(width_multiplier=width, **common)
        )
    return None  # no transformers implementation (MobileViTv3)


def _time_once(model: Callable, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def segmentation_rows(args) -> list[dict]:
    rows = []
    for name in args.models or DEFAULT_SEGMENTERS:
        entry = mobilevt.get_model_entry(name)
        if entry.kind != "semantic-segmentation":
            continue
        v2 = "mobilevitv2_" in name
        ours = _randomize(mobilevt.create_model(name, transformers_v2_dilation=v2))
        cost = count_macs(ours, (args.size, args.size))
        reference = _transformers_segmenter(name, ours)
        x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
        diff = None
        if reference is not None:
            reference = _randomize(reference)
            mobilevt.load_weights(ours, reference.state_dict())
            with torch.inference_mode():
                diff = (ours(x) - reference(x).logits).abs().max().item()
        fused = copy.deepcopy(ours).fuse().to(memory_format=torch.channels_last)
        runners = [("eager", ours), ("fused", fused)]
        if reference is not None:
            runners.append(("reference", reference))
        times: dict[str, list[float]] = {label: [] for label, _ in runners}
        with torch.inference_mode():
            for _ in range(args.warmup):
                for _, model in runners:
                    model(x)
            for i in range(args.runs):
                shift = i % len(runners)  # rotate the order: none always runs on a warmer cache
                for label, model in runners[shift:] + runners[:shift]:
                    times[label].append(_time_once(model, x))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rows.append(
            {
                "task": "segmentation",
                "model": name,
                "input": f"{args.size}x{args.size}",
                "params_m": cost.params / 1e6,
                "published_params_m": entry.published_params_m,
                "macs_g": cost.macs / 1e9,
                "published_macs_g": entry.published_macs_g,
                "eager_ms": med["eager"],
                "fused_ms": med["fused"],
                "reference": "transformers" if reference is not None else None,
                "reference_ms": med.get("reference"),
                "ratio": med["eager"] / med["reference"] if "reference" in med else None,
                "max_abs_diff": diff,
            }
        )
        _print_row(rows[-1])
    return rows


DEFAULT_DETECTORS = [
    "ssdlite_mobilevit_xxs",
    "ssdlite_mobilevit_xs",
    "ssdlite_mobilevit_s",
    "ssdlite_mobilevitv2_050",
    "ssdlite_mobilevitv2_100",
]


def _torchvision_ssdlite() -> Callable[[torch.Tensor], object]:
    """torchvision's SSDLite320-MobileNetV3-Large network (backbone + heads, random
    weights): the counterpart of an SSDLite forward without resizing and NMS."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()

    def network(x: torch.Tensor):
        return model.head(list(model.backbone(x).values()))

    return network


def detection_rows(args) -> list[dict]:
    """SSDLite at 320x320 (ml-cvnets' COCO resolution), batch 1: params vs ml-cvnets' table,
    MACs, mobilevt eager / fused vs torchvision's SSDLite320-MobileNetV3-Large network in the
    same run (ratio = mobilevt eager / torchvision). The network only: box decoding and NMS
    are excluded on both sides (with random weights NMS time means nothing)."""
    from mobilevt.models.ssdlite import published_map

    size = args.detection_size
    reference = _torchvision_ssdlite()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    rows = []
    for name in args.models or DEFAULT_DETECTORS:
        entry = mobilevt.get_model_entry(name)
        if entry.kind != "object-detection":
            continue
        ours = _randomize(mobilevt.create_model(name))
        cost = count_macs(ours, (size, size))
        fused = copy.deepcopy(ours).fuse().to(memory_format=torch.channels_last)
        runners = [("eager", ours), ("fused", fused), ("reference", reference)]
        times: dict[str, list[float]] = {label: [] for label, _ in runners}
        with torch.inference_mode():
            for _ in range(args.warmup):
                for _, model in runners:
                    model(x)
            for i in range(args.runs):
                shift = i % len(runners)
                for label, model in runners[shift:] + runners[:shift]:
                    times[label].append(_time_once(model, x))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rows.append(
            {
                "task": "detection",
                "model": name,
                "input": f"{size}x{size}",
                "params_m": cost.params / 1e6,
                "published_params_m": entry.published_params_m,
                "macs_g": cost.macs / 1e9,
                "published_macs_g": entry.published_macs_g,
                "published_coco_map": published_map(name),
                "eager_ms": med["eager"],
                "fused_ms": med["fused"],
                "reference": "torchvision ssdlite320_mobilenet_v3_large (network, random weights)",
                "reference_ms": med["reference"],
                "ratio": med["eager"] / med["reference"],
                "max_abs_diff": None,  # another network: no output comparison
            }
        )
        _print_row(rows[-1])
    return rows


TASK_ROWS: dict[str, Callable[..., list[dict]]] = {"segmentation": segmentation_rows, "detection": detection_rows}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_row(r: dict) -> None:
    print(
        f"| {r['model']} | {r['input']} | {r['params_m']:.2f} | {_fmt(r['published_params_m'], '.1f')} "
        f"| {r['macs_g']:.2f} | {_fmt(r['published_macs_g'], '.2f')} | {r['eager_ms']:.1f} | {r['fused_ms']:.1f} "
        f"| {_fmt(r['reference_ms'], '.1f')} | {_fmt(r['ratio'], '.2f')} | {_fmt(r['max_abs_diff'], '.1e')} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASK_ROWS), choices=list(TASK_ROWS))
    parser.add_argument("--models", nargs="*", default=None, help="default: the published variants of each task")
    parser.add_argument("--size", type=int, default=512, help="input side (default 512)")
    parser.add_argument("--detection-size", type=int, default=320, help="detectors' input side (default 320)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, fp32, batch 1, median of {args.runs} interleaved runs")
    print(
        "| model | input | params (M) | published (M) | MACs (G) | published MACs (G) | mobilevt eager (ms) "
        "| mobilevt fused (ms) | reference eager (ms) | eager / reference | max abs diff |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for task in args.tasks:
        rows += TASK_ROWS[task](args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
