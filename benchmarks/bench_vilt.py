"""mobilevt ViLT-B/32 VQA eager vs transformers' ViltForQuestionAnswering eager latency,
measured in the same run.

Both models get the same random weights (transformers' initialisation, converted to
mobilevt's layout); inputs are one image and a full-length question (40 tokens), as
``ViltProcessor`` pads them. Runs alternate between the two (interleaved, the first one
rotating) so that machine noise hits both alike. Prints median latencies, the ratio
mobilevt / transformers (below 1 = mobilevt faster) and the max-abs logit difference.

With ``--mobivqa`` it also times mobilevt with the MobiVQA optimisations switched on in
the same interleaved runs: half the image tokens pruned after layer ``--prune-layer``
(question-guided) and a fixed early exit after layer 8 (exit heads after layers 4, 6, 8,
10, random like the rest: the speed does not depend on the weights).

    python benchmarks/bench_vilt.py [--threads 2] [--sizes 384x384 384x576] [--runs 15] [--json out.json] [--mobivqa]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import mobilevt
from mobilevt.weights.vilt_convert import convert_vilt_state_dict


def _time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(height: int, width: int, text_length: int, runs: int, warmup: int, mobivqa: bool = False, prune_layer: int = 2) -> dict:
    from transformers import ViltConfig, ViltForQuestionAnswering

    reference = ViltForQuestionAnswering(ViltConfig(num_labels=3129)).eval()
    with torch.device("meta"):
        ours = mobilevt.create_model("vilt_b32_vqa").eval()
    ours.load_state_dict(convert_vilt_state_dict(reference.state_dict(), ours), assign=True)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, 30000, (1, text_length), generator=generator)
    attention_mask = torch.ones(1, text_length, dtype=torch.long)
    pixel_values = torch.randn(1, 3, height, width, generator=generator)
    pixel_mask = torch.ones(1, height, width, dtype=torch.long)
    candidates = {
        "mobilevt": lambda: ours(input_ids, attention_mask, pixel_values, pixel_mask),
        "transformers": lambda: reference(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, pixel_mask=pixel_mask
        ).logits,
    }
    if mobivqa:
        ours.add_early_exits([4, 6, 8, 10], predictor_layer=2)

        def optimised():
            ours.set_token_pruning(prune_layer, 0.5)
            ours.set_early_exit(layer=8)
            try:
                return ours(input_ids, attention_mask, pixel_values, pixel_mask)
            finally:
                ours.set_token_pruning(0)
                ours.set_early_exit()

        candidates["mobilevt_mobivqa"] = optimised
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.inference_mode():
        diff = (candidates["mobilevt"]() - candidates["transformers"]()).abs().max().item()
        for _ in range(warmup):
            for fn in candidates.values():
                fn()
        order = list(candidates.items())
        for i in range(runs):
            shift = i % len(order)  # rotate which goes first so none always runs on a warmer cache
            for name, fn in order[shift:] + order[:shift]:
                times[name].append(_time_once(fn))
    median = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    extra = {}
    if mobivqa:
        extra = {
            "mobivqa_setting": f"prune 0.5 of the image tokens after layer {prune_layer}, exit after layer 8",
            "mobivqa_ms": round(median["mobilevt_mobivqa"], 1),
            "mobivqa_ratio": round(median["mobilevt_mobivqa"] / median["transformers"], 3),
        }
    return {
        "size": f"{height}x{width}",
        "text_tokens": text_length,
        "mobilevt_ms": round(median["mobilevt"], 1),
        "transformers_ms": round(median["transformers"], 1),
        "ratio": round(median["mobilevt"] / median["transformers"], 3),
        "max_abs_diff": diff,
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["384x384"], help="HEIGHTxWIDTH, multiples of 32")
    parser.add_argument("--text-length", type=int, default=40)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--mobivqa", action="store_true", help="also time pruning of half the image tokens + exit at layer 8")
    parser.add_argument("--prune-layer", type=int, default=2, help="with --mobivqa: prune after this layer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, {args.runs} interleaved runs, medians")
    print("| input | mobilevt (ms) | transformers (ms) | mobilevt / transformers | max-abs logit diff |")
    print("|---|---:|---:|---:|---:|")
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        row = bench(height, width, args.text_length, args.runs, args.warmup, args.mobivqa, args.prune_layer)
        rows.append(row)
        print(
            f"| {row['size']} + {row['text_tokens']} tokens | {row['mobilevt_ms']} | {row['transformers_ms']} "
            f"| {row['ratio']} | {row['max_abs_diff']:.2e} |"
        )
        if args.mobivqa:
            print(
                f"| {row['size']} mobilevt, {row['mobivqa_setting']} | {row['mobivqa_ms']} | {row['transformers_ms']} "
                f"| {row['mobivqa_ratio']} | (different model output by design) |"
            )
    if args.json:
        from mobilevt.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
