"""mobilevt eager vs timm eager latency for every variant, measured in the same run.

Both models get the same random weights; runs alternate between the two (interleaved)
so that machine noise hits both alike. Prints a markdown table of median latency and the
ratio mobilevt / timm (below 1 = mobilevt faster).

    python benchmarks/bench_eager_vs_timm.py [--threads 2] [--batches 1 8] [--runs 15] [--json out.json]
"""
from __future__ import annotations

import argparse
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
    x = torch.rand(batch, 3, size, size)
    times: dict[str, list[float]] = {"mobilevt": [], "timm": []}
    with torch.inference_mode():
        diff = (ours(x) - reference(x)).abs().max().item()
        for _ in range(warmup):
            _time_once(ours, x)
            _time_once(reference, x)
        for i in range(runs):
            # alternate which goes first so neither always runs on a warmer cache
            pair = [("mobilevt", ours), ("timm", reference)]
            for label, model in pair if i % 2 == 0 else reversed(pair):
                times[label].append(_time_once(model, x))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "model": name,
        "batch": batch,
        "mobilevt_ms": med["mobilevt"],
        "timm_ms": med["timm"],
        "ratio": med["mobilevt"] / med["timm"],
        "max_abs_diff": diff,
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
    print(f"torch {torch.__version__}, {args.threads} threads, fp32, {args.size}x{args.size}, median of {args.runs} runs")
    print("| model | batch | mobilevt eager (ms) | timm eager (ms) | ratio mobilevt/timm | max-abs logit diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models or mobilevt.list_models():
        for batch in args.batches:
            runs = args.runs if batch == 1 else max(5, args.runs // 2)
            row = bench(name, batch, runs, args.warmup, args.size)
            rows.append(row)
            print(
                f"| {name} | {batch} | {row['mobilevt_ms']:.1f} | {row['timm_ms']:.1f} | {row['ratio']:.2f} "
                f"| {row['max_abs_diff']:.1e} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
