"""Latency benchmark: MobileViT variants x backends, with timm and transformers as references.

For each (model, batch size) every backend is built first, then the backends are timed
round-robin, one call each per round with the starting backend rotating, so machine
noise hits all of them alike. Reported per backend: median and p90 latency, throughput,
peak memory (measured in a fresh child process per backend), the ratio to timm eager
and the ratio to this machine's FLOP floor (the model's FLOPs divided by the peak fp32
matmul throughput measured on the same threads in the same run).

Models get random weights, well scaled so that no activation is denormal (denormal
floats run many times slower on CPUs and would distort the timings); latency does not
depend on the weight values, and nothing is downloaded.

    from mobilevt.benchmark import run_benchmark, write_report
    report = run_benchmark(["mobilevit_xxs"], batch_sizes=[1], runs=10)
    write_report(report, "bench-results")   # bench.md, bench.json, bench.png
"""

from __future__ import annotations

from .floor import measure_matmul_peak
from .models import resolve_models
from .report import (
    BACKEND_LABELS,
    BACKENDS,
    BenchMeta,
    BenchReport,
    BenchRow,
    MatmulPeak,
    plot_latency_vs_top1,
    write_report,
)
from .run import run_benchmark

__all__ = [
    "BACKENDS",
    "BACKEND_LABELS",
    "BenchMeta",
    "BenchReport",
    "BenchRow",
    "MatmulPeak",
    "measure_matmul_peak",
    "plot_latency_vs_top1",
    "resolve_models",
    "run_benchmark",
    "write_report",
]
