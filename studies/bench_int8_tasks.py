"""int8 vs fp32 on the trained segmentation and detection recipes: accuracy cost, size, latency.

Takes the best weights of ``mobilevt train --config shapes_segmentation`` and ``--config
shapes_detection`` (DeepLabV3- and SSDLite-MobileViT-XXS trained from scratch on the synthetic
shapes), calibrates int8 on training images, and scores every file on the 200 validation images
through the library's own evaluation (``evaluate_segmentation``, ``evaluate_detection`` with
pycocotools), each file run in its runtime one image at a time:

* mIoU / mAP@0.5 of eager, the fp32 file and the int8 file, per runtime;
* file sizes, and batch-1 latency of fp32 and int8 measured interleaved at the training size
  (128x128) and, ExecuTorch only, at the model's default size (DeepLabV3 512x512, SSDLite
  320x320), where the weights do not matter for speed.

    OMP_NUM_THREADS=1 mobilevt train --config shapes_segmentation &
    OMP_NUM_THREADS=1 mobilevt train --config shapes_detection; wait
    python studies/bench_int8_tasks.py [--output-dir runs/int8_tasks]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import mobilevt
from mobilevt.export import export_model
from mobilevt.export.formats import get_format
from mobilevt.fileio import write_text_atomic
from mobilevt.ops.ssd import postprocess_detections
from mobilevt.training.segmentation import shapes_cache_dir

SUFFIX = {"onnx": ".onnx", "executorch": ".pte"}
LARGE = {"segmentation": (512, 512), "detection": (320, 320)}
WEIGHTS = {
    "segmentation": ("deeplabv3_mobilevit_xxs", "runs/shapes_segmentation/best.safetensors"),
    "detection": ("ssdlite_mobilevit_xxs", "runs/shapes_detection/best.safetensors"),
}


class _FileModel(nn.Module):
    """An exported file run one image at a time, with the attributes the evaluation functions
    read from a model (preprocessing, classes); a detector's file outputs decoded boxes and
    softmax scores, so its ``postprocess`` is the NMS step alone."""

    def __init__(self, model: nn.Module, run) -> None:
        super().__init__()
        self.run = run
        self.kind = model.kind
        self.num_classes = model.num_classes
        self.class_names = model.class_names
        self.preprocess = model.preprocess
        self.config = getattr(model, "config", None)

    def forward(self, batch: torch.Tensor):
        outputs = [self.run(batch[i : i + 1]) for i in range(batch.shape[0])]
        if len(outputs[0]) == 1:
            return torch.cat([o[0] for o in outputs])
        return tuple(torch.cat([o[k] for o in outputs]) for k in range(len(outputs[0])))

    def postprocess(self, boxes, scores, image_size, score_threshold=None):
        config = self.config
        threshold = config.score_threshold if score_threshold is None else score_threshold
        found = postprocess_detections(
            boxes, scores, threshold, config.nms_iou_threshold, config.top_k, config.max_detections
        )
        return [type(d)(d.boxes.clamp(0.0, 1.0), d.scores, d.labels) for d in found]


def _score(task: str, model: nn.Module) -> float:
    root = shapes_cache_dir()
    if task == "segmentation":
        return mobilevt.evaluate_segmentation(model, root, split="val").miou
    evaluated = mobilevt.evaluate_detection(model, root / "JPEGImages", root / "annotations" / "instances_val.json")
    return evaluated.metrics["map50"]


def _calibration(folder: Path, count: int) -> Path:
    images = sorted((shapes_cache_dir() / "JPEGImages").glob("train_*.jpg"))[:: 2000 // count][:count]
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copy(image, folder / image.name)
    return folder


def _interleaved_ms(runs: dict, inputs: torch.Tensor, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run(inputs)
    for _ in range(rounds):
        for name, run in runs.items():
            run(inputs)  # the first call after another runtime wakes its thread pool
            start = time.perf_counter()
            run(inputs)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _export(model, path: Path, fmt: str, size, quantize, calibration: Path) -> tuple[int, object]:
    report = export_model(
        model,
        path,
        fmt,
        image_size=size,
        dynamic_batch=False,
        max_check_images=4,
        latency_runs=0,
        quantize=quantize,
        calibration=calibration if quantize else None,
        check_images=calibration,
    )
    return report.file_bytes, get_format(fmt).runner(path, torch.get_num_threads())


def _measure(task: str, fmt: str, model: nn.Module, out: Path, calibration: Path, rounds: int) -> dict:
    row: dict = {"task": task, "format": fmt}
    runs = {}
    for precision in ("fp32", "int8"):
        path = out / f"{task}_{precision}{SUFFIX[fmt]}"
        row[f"{precision}_bytes"], runs[precision] = _export(
            model, path, fmt, (128, 128), None if precision == "fp32" else "int8", calibration
        )
        row[f"{precision}_metric"] = _score(task, _FileModel(model, runs[precision]))
    ms = _interleaved_ms(runs, torch.rand(1, 3, 128, 128), rounds)
    row |= {"fp32_ms_128": ms["fp32"], "int8_ms_128": ms["int8"]}
    if fmt == "executorch":
        large = {}
        for precision in ("fp32", "int8"):
            path = out / f"{task}_{precision}_large{SUFFIX[fmt]}"
            _, large[precision] = _export(
                model, path, fmt, LARGE[task], None if precision == "fp32" else "int8", calibration
            )
        ms = _interleaved_ms(large, torch.rand(1, 3, *LARGE[task]), rounds)
        row |= {"large_size": LARGE[task][0], "fp32_ms_large": ms["fp32"], "int8_ms_large": ms["int8"]}
    return row


def _table(rows: list[dict], eager: dict[str, float]) -> str:
    lines = [
        "| recipe | runtime | metric: eager / fp32 file / int8 file | int8 cost (points) | fp32 MB | int8 MB "
        "| smaller | ms at 128: fp32 / int8 | ms at the default size: fp32 / int8 |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        metric = "mIoU" if r["task"] == "segmentation" else "mAP@0.5"
        large = (
            f"{r['fp32_ms_large']:.2f} / {r['int8_ms_large']:.2f} ({r['large_size']}px, "
            f"{r['fp32_ms_large'] / r['int8_ms_large']:.2f}x)"
            if "fp32_ms_large" in r
            else "-"
        )
        lines.append(
            f"| {r['task']} | {r['format']} | {metric} {eager[r['task']]:.4f} / {r['fp32_metric']:.4f} / "
            f"{r['int8_metric']:.4f} | {100 * (r['fp32_metric'] - r['int8_metric']):.2f} "
            f"| {r['fp32_bytes'] / 1e6:.2f} | {r['int8_bytes'] / 1e6:.2f} | {r['fp32_bytes'] / r['int8_bytes']:.2f}x "
            f"| {r['fp32_ms_128']:.2f} / {r['int8_ms_128']:.2f} ({r['fp32_ms_128'] / r['int8_ms_128']:.2f}x) "
            f"| {large} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/int8_tasks")
    parser.add_argument("--tasks", nargs="+", default=["segmentation", "detection"], choices=list(WEIGHTS))
    parser.add_argument("--formats", nargs="+", default=["executorch", "onnx"], choices=list(SUFFIX))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calibration-images", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    calibration = _calibration(out / "calibration", args.calibration_images)
    rows, eager = [], {}
    for task in args.tasks:
        name, weights = WEIGHTS[task]
        model = mobilevt.create_model(name, weights=weights).eval()
        eager[task] = _score(task, model)
        for fmt in args.formats:
            rows.append(_measure(task, fmt, model, out, calibration, args.rounds))
            print(_table(rows[-1:], eager), flush=True)
    text = _table(rows, eager)
    print(
        f"the shapes recipes' best weights; 200 validation images; int8 calibrated on "
        f"{args.calibration_images} training images; batch 1, {args.threads} threads, medians of "
        f"{args.rounds} interleaved runs\n{text}"
    )
    write_text_atomic(out / "int8_tasks.md", text + "\n")
    write_text_atomic(out / "int8_tasks.json", json.dumps({"eager": eager, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
