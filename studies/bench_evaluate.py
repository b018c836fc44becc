"""Where evaluation time goes on this machine: decoding, preprocessing, the model, and
the end-to-end ``mobilevt.evaluate`` throughput on the 1000 ImageNet sample photos.

    python studies/bench_evaluate.py [--models mobilevit_xxs mobilevit_s] [--images 1000]

Preprocessing is compared with timm's PIL pipeline (``create_transform``) measured in the
same run; all numbers are per image, medians of the run. Random weights (speed does not
depend on them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import mobilevt
from mobilevt.data import load_image

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def _per_item(fn, items) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["mobilevit_xxs", "mobilevit_s"])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        sys.exit(f"{SAMPLE} is absent: this benchmark needs the shared ImageNet sample photos")
    photos = sorted(SAMPLE.glob("*.JPEG"))[: args.images]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(photos)} photos\n")

    decoded = [load_image(p) for p in photos[:200]]
    decode_ms = 1e3 * _per_item(load_image, photos[:200])
    pil_decode_ms = 1e3 * _per_item(lambda p: Image.open(p).convert("RGB"), photos[:200])
    print("| step (per image) | mobilevt ms | reference ms | ratio |\n|---|---:|---:|---:|")
    print(
        f"| decode (Pillow + EXIF + mode handling vs Image.open().convert) | {decode_ms:.2f} | {pil_decode_ms:.2f} "
        f"| {decode_ms / pil_decode_ms:.2f} |"
    )
    try:
        import timm
        from timm.data import create_transform, resolve_data_config
    except ImportError:
        timm = None
    for name, tag in (("mobilevit_s", "timm_in1k"), ("mobilevit_s", "cvnets_in1k")):
        preprocess = mobilevt.transforms_for(f"{name}.{tag}")
        ours = 1e3 * _per_item(preprocess, decoded)
        if timm is not None and tag == "timm_in1k":
            transform = create_transform(**resolve_data_config({}, model=timm.create_model(name)))
            pil_images = [Image.open(p).convert("RGB") for p in photos[:200]]
            theirs = 1e3 * _per_item(transform, pil_images)
            print(
                f"| preprocess {tag} ({preprocess.config.interpolation}) vs timm create_transform | {ours:.2f} "
                f"| {theirs:.2f} | {ours / theirs:.2f} |"
            )
        else:
            print(f"| preprocess {tag} ({preprocess.config.interpolation}) | {ours:.2f} | - | - |")

    print(
        "\n| model | forward ms/image (batch {}) | evaluate images/s ({} workers) | decode+preprocess share |"
        "\n|---|---:|---:|---:|".format(args.batch_size, args.workers)
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for photo in photos:
            wnid = photo.name.split("_")[0]
            (root / wnid).mkdir(exist_ok=True)
            os.symlink(photo, root / wnid / photo.name)
        for name, fast in [(m, f) for m in args.models for f in (False, True)]:
            model = mobilevt.create_model(name).eval()
            if fast:  # what the CLI runs: BatchNorm folded, channels-last
                model = model.fuse().to(memory_format=torch.channels_last)
            x = torch.rand(args.batch_size, 3, 256, 256)
            with torch.inference_mode():
                model(x)
                runs = []
                for _ in range(3):
                    start = time.perf_counter()
                    model(x)
                    runs.append(time.perf_counter() - start)
            forward_ms = 1e3 * statistics.median(runs) / args.batch_size
            result = mobilevt.evaluate(model, root, batch_size=args.batch_size, workers=args.workers, progress=False)
            share = result.data_wait_seconds / result.seconds
            label = f"{name} fused + channels_last" if fast else f"{name} eager"
            print(f"| {label} | {forward_ms:.1f} | {result.images_per_second:.1f} | {share:.0%} waiting for data |")


if __name__ == "__main__":
    main()
