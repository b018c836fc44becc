"""mobilevt eager (plain, and the inference fast path: BatchNorm folded with ``model.fuse()``
plus channels-last weights) vs timm eager latency for every variant, measured in the same run.

Both models get the same random weights; runs alternate between the two (interleaved)
so that machine noise hits both alike. Prints a markdown table of median latency and the
ratio mobilevt / timm (below 1 = mobilevt faster).

    python benchmarks/bench_eager_vs_timm.py [--threads 2] [--batches 1 8] [--runs 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

import mobilevt


def _time_once(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def bench(name: str, batch: int, runs: int, warmup: int, size: int) -> dict:
    import timm

    reference = timm.create_model(name).eval()
    ours = mobilevt.create_model(name).eval()
    ours.load_state_dict(mobilevt.convert_state_dict(reference.state_dict(), name))
    fused = copy.deepcopy(ours).fuse().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, size, size)
    times: dict[str, list[float]] = {"mobilevt": [], "fused": [], "timm": []}
    with torch.inference_mode():
        diff = (ours(x) - reference(x)).abs().max().item()
        fused_diff = (fused(x) - ours(x)).abs().max().item()
        for _ in range(warmup):
            _time_once(ours, x)
            _time_once(fused, x)
            _time_once(reference, x)
        for i in range(runs):
            # rotate which goes first so none always runs on a warmer cache
            trio = [("mobilevt", ours), ("fused", fused), ("timm", reference)]
            shift = i % 3
            for label, model in trio[shift:] + trio[:shift]:
                times[label].append(_time_once(model, x))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "model": name,
        "batch": batch,
        "mobilevt_ms": med["mobilevt"],
        "timm_ms": med["timm"],
        "fused_ms": med["fused"],
        "ratio": med["mobilevt"] / med["timm"],
        "fused_ratio": med["fused"] / med["timm"],
        "max_abs_diff": diff,
        "fused_max_abs_diff": fused_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    print(
        f"torch {torch.__version__}, {args.threads} threads, fp32, {args.size}x{args.size}, median of {args.runs} runs"
    )
    print(
        "| model | batch | mobilevt eager (ms) | mobilevt fused + channels_last (ms) | timm eager (ms) "
        "| ratio eager/timm | ratio fast/timm | logit diff vs timm | fast vs eager |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models or mobilevt.list_models(kind="image-classification"):
        for batch in args.batches:
            runs = args.runs if batch == 1 else max(5, args.runs // 2)
            row = bench(name, batch, runs, args.warmup, args.size)
            rows.append(row)
            print(
                f"| {name} | {batch} | {row['mobilevt_ms']:.1f} | {row['fused_ms']:.1f} | {row['timm_ms']:.1f} "
                f"| {row['ratio']:.2f} | {row['fused_ratio']:.2f} | {row['max_abs_diff']:.1e} "
                f"| {row['fused_max_abs_diff']:.1e} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
