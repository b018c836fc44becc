"""mobilevt ViLT-B/32 VQA latency in eager, TorchScript, ONNX Runtime and ExecuTorch, against
transformers' ViltForQuestionAnswering eager measured in the same run.

Both models get the same random weights (transformers' initialisation, converted to
mobilevt's layout); inputs are one image and a full-length question (40 tokens), as
``ViltProcessor`` pads them. Runs alternate between all candidates (interleaved, the first
one rotating) so that machine noise hits them alike. Prints a markdown table: setting,
runtime, median latency, ratio to transformers eager (below 1 = faster) and the max-abs
logit difference from mobilevt eager in the same setting.

``--runtimes`` picks mobilevt's runtimes (default: eager):

- ``eager``: the PyTorch module;
- ``scripted``: ``torch.jit.script`` of it;
- ``onnx``: the file of :func:`mobilevt.export.vilt.export_vilt_onnx` in onnxruntime (CPU
  execution provider, ``intra_op_num_threads`` = ``--threads``);
- ``executorch``: the ``.pte`` of :func:`mobilevt.export.vilt.export_vilt_executorch`
  (XNNPACK delegate, its thread pool set to ``--threads``).

With ``--mobivqa`` every runtime is also timed with the MobiVQA optimisations switched on:
half the image tokens pruned after layer ``--prune-layer`` (question-guided) and a fixed
early exit after layer ``--exit-layer`` (exit heads after ``--exit-layers``, random like
the rest: the speed does not depend on the weights). All four runtimes take this setting.

Export of ViLT-B/32 is heavy: ~450 MB per fp32 file, ExecuTorch lowering takes minutes and
several GB of memory; files go to ``--workdir`` (default: a temporary folder, removed).

    python benchmarks/bench_vilt.py [--threads 2] [--sizes 384x384 384x576] [--runs 15] \\
        [--runtimes eager scripted onnx executorch] [--mobivqa] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import mobilevt
from mobilevt.weights.vilt_layouts import vilt_options_from_hf_config

RUNTIMES = ("eager", "scripted", "onnx", "executorch")
RUNTIME_NAMES = {
    "eager": "mobilevt eager",
    "scripted": "mobilevt TorchScript",
    "onnx": "ONNX Runtime (CPU EP)",
    "executorch": "ExecuTorch (XNNPACK)",
    "transformers": "transformers eager",
}
# What the issue asks of full ViLT-B/32 (ratio to transformers eager)
TARGETS = {("full", "eager"): 0.8, ("mobivqa", "eager"): 0.5}

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class Candidate:
    setting: str  # "full" or "mobivqa"
    runtime: str  # a RUNTIMES name or "transformers"
    run: Callable[[], torch.Tensor]
    export_s: float | None = None


def _time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build_models(hf_overrides: dict[str, Any] | None = None, num_answers: int = 3129):
    """transformers' ViltForQuestionAnswering with its random initialisation (``hf_overrides``:
    ViltConfig fields, for a small model) and mobilevt's with the same weights."""
    from transformers import ViltConfig, ViltForQuestionAnswering

    reference = ViltForQuestionAnswering(ViltConfig(num_labels=num_answers, **(hf_overrides or {}))).eval()
    arch, _ = vilt_options_from_hf_config(reference.config.to_dict())
    with torch.device("meta"):  # every tensor is assigned from the reference: skip the initialisation
        ours = mobilevt.create_model("vilt_b32_vqa", num_classes=num_answers, **arch).eval()
    ours.load_state_dict(mobilevt.convert_state_dict(reference.state_dict(), ours), assign=True)
    return reference, ours


def _set_executorch_threads(threads: int) -> None:
    from mobilevt.export.formats.executorch import set_executorch_threads as set_threads  # the one implementation

    if not set_threads(threads):
        print(f"note: could not set ExecuTorch's thread pool to {threads} threads")


def _candidates(
    ours,
    scripted,
    inputs: Inputs,
    runtimes: Sequence[str],
    setting: str,
    workdir: Path,
    threads: int,
    apply: Callable[[Any], None],
    reset: Callable[[Any], None],
) -> list[Candidate]:
    """mobilevt's runtimes for one setting. ``apply(model)`` / ``reset(model)`` switch the
    setting on and off on the eager or scripted model: exports capture it while on, and
    the eager and scripted runs switch it around each call (microseconds)."""
    from mobilevt.export.vilt import export_vilt_executorch, export_vilt_onnx

    def switched(model):
        if setting == "full":  # the settings are off between calls
            return lambda: model(*inputs)

        def run():
            apply(model)
            try:
                return model(*inputs)
            finally:
                reset(model)

        return run

    out: list[Candidate] = []
    for runtime in runtimes:
        start = time.perf_counter()
        apply(ours)
        try:
            if runtime == "eager":
                run = switched(ours)
            elif runtime == "scripted":
                run = switched(scripted)
            elif runtime == "onnx":
                onnx_run, _ = export_vilt_onnx(ours, workdir / f"vilt_{setting}.onnx", inputs, threads=threads)
                run = lambda onnx_run=onnx_run: onnx_run(inputs)  # noqa: E731
            elif runtime == "executorch":
                _set_executorch_threads(threads)
                et_run, _, _ = export_vilt_executorch(ours, workdir / f"vilt_{setting}.pte", [inputs])
                run = lambda et_run=et_run: et_run(inputs)  # noqa: E731
            else:
                raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        finally:
            reset(ours)
        export_s = round(time.perf_counter() - start, 1) if runtime in ("onnx", "executorch") else None
        out.append(Candidate(setting, runtime, run, export_s))
    return out


def _measure(ours, candidates: Sequence[Candidate], inputs: Inputs, runs: int, warmup: int, on, off):
    """Median milliseconds of each candidate (interleaved runs) and its max-abs logit
    difference from mobilevt eager in the same setting."""
    eager_logits = {"full": ours(*inputs)}
    if on is not None:
        on(ours)
        eager_logits["mobivqa"] = ours(*inputs)
        off(ours)
    diffs = [float((c.run() - eager_logits[c.setting]).abs().max()) for c in candidates]
    for _ in range(warmup):
        for candidate in candidates:
            candidate.run()
    times: list[list[float]] = [[] for _ in candidates]
    order = list(range(len(candidates)))
    for i in range(runs):
        shift = i % len(order)  # rotate which goes first so none always runs on a warmer cache
        for index in order[shift:] + order[:shift]:
            times[index].append(_time_once(candidates[index].run))
    return [statistics.median(values) * 1e3 for values in times], diffs


def bench(
    height: int,
    width: int,
    text_length: int,
    runs: int,
    warmup: int,
    mobivqa: bool = False,
    prune_layer: int = 2,
    runtimes: Sequence[str] = ("eager",),
    threads: int | None = None,
    workdir: str | None = None,
    exit_layers: Sequence[int] = (4, 6, 8, 10),
    exit_layer: int = 8,
    keep_ratio: float = 0.5,
    hf_overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Time every candidate at one input size; one row per (setting, runtime), transformers
    eager first."""
    threads = threads or torch.get_num_threads()
    reference, ours = build_models(hf_overrides)
    generator = torch.Generator().manual_seed(0)
    vocab = reference.config.vocab_size
    inputs: Inputs = (
        torch.randint(min(1000, vocab - 1), vocab, (1, text_length), generator=generator),
        torch.ones(1, text_length, dtype=torch.long),
        torch.randn(1, 3, height, width, generator=generator),
        torch.ones(1, height, width, dtype=torch.long),
    )

    def transformers_run():
        return reference(
            input_ids=inputs[0], attention_mask=inputs[1], pixel_values=inputs[2], pixel_mask=inputs[3]
        ).logits

    def off(model):
        model.set_token_pruning(0)
        model.set_early_exit()

    def on(model):
        model.set_token_pruning(prune_layer, keep_ratio)
        model.set_early_exit(layer=exit_layer)

    if mobivqa:  # exit heads off do not change the full model (bit-identical logits)
        ours.add_early_exits(list(exit_layers), predictor_layer=min(2, min(exit_layers)))
    # one scripted module for both settings, switched by its scripted methods as eager is
    scripted = torch.jit.script(ours) if "scripted" in runtimes else None
    candidates = [Candidate("full", "transformers", transformers_run)]
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        # exports run outside inference mode (torch.export and the ONNX tracer need it off)
        candidates += _candidates(ours, scripted, inputs, runtimes, "full", Path(tmp), threads, off, off)
        if mobivqa:
            candidates += _candidates(ours, scripted, inputs, runtimes, "mobivqa", Path(tmp), threads, on, off)
        with torch.inference_mode():
            medians, diffs = _measure(ours, candidates, inputs, runs, warmup, on if mobivqa else None, off)
    setting_names = {
        "full": "full model",
        "mobivqa": f"MobiVQA: prune {keep_ratio:g} of image tokens after layer {prune_layer}, "
        f"exit after layer {exit_layer}",
    }
    rows = []
    for candidate, median, diff in zip(candidates, medians, diffs):
        rows.append(
            {
                "size": f"{height}x{width}",
                "text_tokens": text_length,
                "setting": candidate.setting,
                "setting_name": setting_names[candidate.setting],
                "runtime": candidate.runtime,
                "runtime_name": RUNTIME_NAMES[candidate.runtime],
                "median_ms": round(median, 2),
                "ratio_to_transformers": round(median / medians[0], 3),
                "max_abs_diff_vs_eager": diff,
                "export_s": candidate.export_s,
                # the targets are for ViLT-B/32 itself
                "target_ratio": None if hf_overrides else TARGETS.get((candidate.setting, candidate.runtime)),
            }
        )
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| input | setting | runtime | median (ms) | / transformers eager | max-abs logit diff vs mobilevt eager |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        ratio = f"{row['ratio_to_transformers']:.3f}"
        if row["target_ratio"] is not None:
            met = "met" if row["ratio_to_transformers"] <= row["target_ratio"] else "missed"
            ratio += f" (target <= {row['target_ratio']}: {met})"
        lines.append(
            f"| {row['size']} + {row['text_tokens']} tokens | {row['setting_name']} | {row['runtime_name']} "
            f"| {row['median_ms']:.1f} | {ratio} | {row['max_abs_diff_vs_eager']:.2e} |"
        )
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("torch", "transformers", "onnxruntime", "executorch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["384x384"], help="HEIGHTxWIDTH, multiples of 32")
    parser.add_argument("--text-length", type=int, default=40)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--runtimes",
        nargs="+",
        default=["eager"],
        choices=RUNTIMES,
        help="mobilevt runtimes to time (transformers eager is always timed)",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--mobivqa",
        action="store_true",
        help="also time every runtime with pruning of half the image tokens + a fixed exit",
    )
    parser.add_argument("--prune-layer", type=int, default=2, help="with --mobivqa: prune after this layer")
    parser.add_argument("--keep-ratio", type=float, default=0.5, help="with --mobivqa: fraction of image tokens kept")
    parser.add_argument("--exit-layer", type=int, default=8, help="with --mobivqa: the fixed exit layer")
    parser.add_argument(
        "--exit-layers",
        type=int,
        nargs="+",
        default=[4, 6, 8, 10],
        help="with --mobivqa: layers with exit heads (--exit-layer among them)",
    )
    parser.add_argument("--workdir", default=None, help="folder for the exported files (a temporary folder in it)")
    parser.add_argument(
        "--hf-config",
        default=None,
        help="JSON of ViltConfig fields replacing ViLT-B/32's (a small model, for a quick check)",
    )
    args = parser.parse_args(argv)
    if args.mobivqa and args.exit_layer not in args.exit_layers:
        parser.error(f"--exit-layer {args.exit_layer} must be one of --exit-layers {args.exit_layers}")
    torch.set_num_threads(args.threads)
    hf_overrides = json.loads(args.hf_config) if args.hf_config else None
    rows: list[dict[str, Any]] = []
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, {args.runs} interleaved runs, medians")
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        rows += bench(
            height,
            width,
            args.text_length,
            args.runs,
            args.warmup,
            args.mobivqa,
            args.prune_layer,
            runtimes=args.runtimes,
            threads=args.threads,
            workdir=args.workdir,
            exit_layers=args.exit_layers,
            exit_layer=args.exit_layer,
            keep_ratio=args.keep_ratio,
            hf_overrides=hf_overrides,
        )
    print(markdown_table(rows))
    exports = [f"{r['runtime_name']} ({r['setting']}) {r['export_s']} s" for r in rows if r["export_s"] is not None]
    if exports:
        print("export time: " + ", ".join(exports))
    if args.json:
        from mobilevt.fileio import write_text_atomic

        report = {
            "threads": args.threads,
            "runs": args.runs,
            "warmup": args.warmup,
            "batch": 1,
            "versions": _versions(),
            "hf_config": hf_overrides,
            "rows": rows,
        }
        write_text_atomic(args.json, json.dumps(report, indent=2))
    return rows


if __name__ == "__main__":
    main()
