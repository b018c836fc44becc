"""int8 vs fp32 on a trained model: size, latency and accuracy cost, per runtime.

Trains mobilevit_xxs on scikit-learn's digits with the built-in recipe (or takes
``--weights`` from an earlier ``mobilevt train``), writes calibration and validation
images, then exports fp32 and int8 files for ONNX Runtime and ExecuTorch with
``mobilevt.export.export_model`` and reports, for each runtime:

* file sizes and their ratio,
* batch-1 latency of fp32 and int8 measured interleaved in the same process, at the
  training resolution (64x64) and at 256x256 (the model runs at any size; latency does not
  depend on the task),
* top-1 agreement of int8 with fp32 and the validation accuracy of both.

    python studies/bench_int8.py [--weights runs/digits/best.safetensors] [--output-dir runs/int8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import mobilevt
from mobilevt.export import export_model
from mobilevt.fileio import write_text_atomic


def _write_digits(folder: Path, split: str, limit: int) -> list[int]:
    from PIL import Image

    from mobilevt.training.data import DigitsDataset

    data = DigitsDataset(split)
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for i in range(min(limit, len(data))):
        image, target = data[i]
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
        labels.append(target)
    return labels


def _interleaved_ms(runs: dict, inputs: torch.Tensor, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run(inputs)
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(inputs)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _loader(path: Path, fmt: str):
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return lambda x: method.execute([x.contiguous()])[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="a digits run's best.safetensors (default: train one now, ~1 min)")
    parser.add_argument("--output-dir", default="runs/int8")
    parser.add_argument("--formats", nargs="+", default=["onnx", "executorch"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calibration-images", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    weights = args.weights
    if weights is None:
        from mobilevt.training import load_config, train

        weights = train(load_config("digits", [f"output_dir={out / 'digits'}"])).best_path
    model = mobilevt.create_model("mobilevit_xxs", weights=weights).eval()
    _write_digits(out / "calibration", "train", args.calibration_images)
    labels = torch.tensor(_write_digits(out / "val", "val", 10_000))

    from mobilevt.data import ImagePreprocess, list_images, load_image

    preprocess = ImagePreprocess(model.preprocess)
    val = torch.stack([preprocess(load_image(p)) for p in list_images(out / "val")])
    rows = []
    for fmt in args.formats:
        suffix = {"onnx": ".onnx", "executorch": ".pte"}[fmt]
        runs_small, runs_large, sizes = {}, {}, {}
        for precision in ("fp32", "int8"):
            quantize = None if precision == "fp32" else "int8"
            path = out / f"digits_{precision}{suffix}"
            sizes[precision] = export_model(
                model,
                path,
                fmt,
                dynamic_batch=False,
                check_images=out / "val",
                latency_runs=0,
                quantize=quantize,
                calibration=out / "calibration",
            ).file_bytes
            runs_small[precision] = _loader(path, fmt)
            large = out / f"digits_{precision}_256{suffix}"
            export_model(
                model,
                large,
                fmt,
                image_size=(256, 256),
                dynamic_batch=False,
                max_check_images=4,
                latency_runs=0,
                quantize=quantize,
                calibration=out / "calibration",
            )
            runs_large[precision] = _loader(large, fmt)
        predictions = {
            precision: torch.stack([run(val[i : i + 1])[0] for i in range(len(val))]).argmax(-1)
            for precision, run in runs_small.items()
        }
        ms_small = _interleaved_ms(runs_small, val[:1], args.rounds)
        ms_large = _interleaved_ms(runs_large, torch.rand(1, 3, 256, 256), args.rounds)
        rows.append(
            {
                "format": fmt,
                "fp32_bytes": sizes["fp32"],
                "int8_bytes": sizes["int8"],
                "size_ratio": sizes["fp32"] / sizes["int8"],
                "fp32_ms_64": ms_small["fp32"],
                "int8_ms_64": ms_small["int8"],
                "fp32_ms_256": ms_large["fp32"],
                "int8_ms_256": ms_large["int8"],
                "int8_top1_agreement_with_fp32": (predictions["int8"] == predictions["fp32"]).float().mean().item(),
                "fp32_accuracy": (predictions["fp32"] == labels).float().mean().item(),
                "int8_accuracy": (predictions["int8"] == labels).float().mean().item(),
                "validation_images": len(labels),
            }
        )
    table = [
        "| runtime | fp32 MB | int8 MB | smaller | fp32 ms (64) | int8 ms (64) | fp32 ms (256) | int8 ms (256) "
        "| int8 top-1 = fp32 | fp32 acc | int8 acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['format']} | {r['fp32_bytes'] / 1e6:.2f} | {r['int8_bytes'] / 1e6:.2f} | {r['size_ratio']:.2f}x "
            f"| {r['fp32_ms_64']:.2f} | {r['int8_ms_64']:.2f} | {r['fp32_ms_256']:.2f} | {r['int8_ms_256']:.2f} "
            f"| {100 * r['int8_top1_agreement_with_fp32']:.2f}% | {100 * r['fp32_accuracy']:.2f}% "
            f"| {100 * r['int8_accuracy']:.2f}% |"
        )
    text = "\n".join(table)
    print(
        f"mobilevit_xxs trained on digits ({weights}); {len(labels)} validation images; batch 1, "
        f"{args.threads} threads, medians of {args.rounds} interleaved runs\n{text}"
    )
    write_text_atomic(out / "int8.md", text + "\n")
    write_text_atomic(out / "int8.json", json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
