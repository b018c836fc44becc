"""``mobilevt bench``: latency table of variants x backends, as markdown, JSON and a PNG plot."""

from __future__ import annotations

import sys


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_bench_parser(sub) -> None:
    from mobilevt.benchmark import BACKENDS

    p = sub.add_parser(
        "bench",
        help="latency of variants x backends (eager, fused, TorchScript, ONNX Runtime, ExecuTorch, TFLite) vs timm",
        description=(
            "Times every backend of each (model, batch) interleaved, one call each per round, with random weights "
            "(latency does not depend on them; nothing is downloaded). Writes bench.md, bench.json and bench.png "
            "(latency vs published top-1) to --output-dir."
        ),
    )
    p.add_argument(
        "models", nargs="*", help="names or shell patterns, e.g. mobilevit_xxs 'mobilevitv2_*' (default: every variant)"
    )
    p.add_argument(
        "--backends", type=_csv, default=list(BACKENDS), help=f"comma-separated (default: all): {','.join(BACKENDS)}"
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], metavar="B")
    p.add_argument("--image-size", type=int, default=256, help="square input size (default 256)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads of torch, onnxruntime, ExecuTorch, TFLite (default: the cores available)",
    )
    p.add_argument("--runs", type=int, default=20, help="timed rounds per (model, batch) (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--output-dir", default="bench-results", help="folder for bench.md/json/png (default bench-results)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes (faster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    from mobilevt.benchmark import run_benchmark, write_report

    report = run_benchmark(
        args.models,
        backends=args.backends,
        batch_sizes=args.batch_sizes,
        image_size=args.image_size,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        measure_memory=not args.no_memory,
        progress=not args.no_progress,
    )
    written = write_report(report, args.output_dir)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(path) for path in written.values()), file=sys.stderr)
    return 0
