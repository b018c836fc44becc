"""The benchmark's results: rows, the report, its markdown table, JSON and plot."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..export.formats import registered_formats
from ..fileio import atomic_path, write_text_atomic
from .profile import BackendProfile

# mobilevt's exported files, one backend per format that runs here, named by its runtime
FILE_BACKENDS = {
    f.bench_backend: f
    for f in registered_formats().values()
    if f.bench_backend is not None and f.bench_backend != "scripted" and f.runs_here
}
BACKENDS = (
    "eager",
    "fused",
    "scripted",
    *FILE_BACKENDS,
    "timm",
    "timm_onnxruntime",
    "timm_executorch",
    "timm_tflite",
    "transformers",
)
# opt-in (--backends): the int8 file of each format that quantizes, calibrated on the bench's
# random photos (speed only: the accuracy cost is measured on a trained model, docs/performance.md)
INT8_BACKENDS = {f"{backend}_int8": f for backend, f in FILE_BACKENDS.items() if "quantize" in f.options}
KNOWN_BACKENDS = (*BACKENDS, *INT8_BACKENDS)
BACKEND_LABELS = {
    "eager": "mobilevt eager",
    "fused": "mobilevt fused + channels_last",
    "scripted": "mobilevt TorchScript",
    **{backend: f.bench_label for backend, f in FILE_BACKENDS.items()},
    **{backend: f"{f.bench_label} int8" for backend, f in INT8_BACKENDS.items()},
    "timm": "timm eager",
    "timm_onnxruntime": "timm -> ONNX Runtime (peer)",
    "timm_executorch": "timm -> ExecuTorch (XNNPACK, peer)",
    "timm_tflite": "timm -> TFLite (LiteRT, peer)",
    "transformers": "transformers eager",
}
# backends that run mobilevt's own model (the "best mobilevt backend" is chosen among them)
MOBILEVT_BACKENDS = ("eager", "fused", "scripted", *FILE_BACKENDS)
REFERENCE_BACKEND = "timm"
# what a user without mobilevt runs: timm's model in eager or taken to a runtime by the
# runtime's own exporter (benchmark/peers.py); the fastest of them is "the best peer path"
PEER_BACKENDS = ("timm", "timm_onnxruntime", "timm_executorch", "timm_tflite")


@dataclass
class KernelPeak:
    """One runtime's GEMM kernel: its best throughput on a ``size`` cube (GFLOP/s, or
    GOP/s for int8: 2 operations per multiply-add)."""

    name: str
    dtype: str  # "fp32" or "int8"
    gops: float
    size: int


@dataclass
class TheoreticalPeak:
    """cores x clock x operations per cycle, from the CPU's instruction set."""

    fp32_gflops: float
    int8_gops: float
    cores: int
    ghz: float
    fp32_flops_per_cycle: int
    how: str


@dataclass
class MatmulPeak:
    """The fastest fp32 GEMM measured on this CPU with ``threads`` threads (``gflops``, the
    floor's divisor), every kernel measured, and the theoretical peak."""

    gflops: float
    threads: int
    sizes: tuple[int, ...]
    gflops_by_size: dict[int, float]  # torch.mm
    repeats: int
    kernels: list[KernelPeak] = field(default_factory=list)
    theoretical: TheoreticalPeak | None = None


@dataclass
class BenchRow:
    model: str
    batch: int
    backend: str
    label: str
    status: str  # "ok", "missing" (package not installed), "failed" or "unsupported" (batch size)
    note: str = ""
    median_ms: float | None = None
    p90_ms: float | None = None
    throughput_ips: float | None = None  # images per second: batch / median
    peak_memory_mb: float | None = None
    ratio_to_timm: float | None = None  # median / timm eager median, same model and batch
    ratio_to_best_peer: float | None = None  # median / the fastest peer path's median, same model and batch
    floor_ms: float | None = None  # 2 * MACs * batch / peak matmul FLOP/s
    ratio_to_floor: float | None = None  # median / floor_ms
    fraction_of_peak: float | None = None  # floor_ms / median: the share of the fastest fp32 GEMM's rate reached
    max_abs_diff: float | None = None  # logits vs mobilevt eager on the timed input (same weights)
    macs_g: float | None = None  # per image
    params_m: float | None = None
    top1: float | None = None  # published ImageNet top-1 of the variant's default weights
    runs: int = 0


@dataclass
class BenchMeta:
    image_size: int
    threads: int
    runs: int
    warmup: int
    batch_sizes: list[int]
    backends: list[str]
    models: list[str]
    matmul_peak: MatmulPeak
    cpu: str
    cpu_count: int | None
    versions: dict[str, str]
    weights: str
    timing_method: str
    backend_method: str
    memory_method: str
    floor_method: str
    started: str
    seconds: float = 0.0


@dataclass
class BenchReport:
    meta: BenchMeta
    rows: list[BenchRow]
    notes: list[str] = field(default_factory=list)
    profiles: list[BackendProfile] = field(default_factory=list)  # with --profile

    def row(self, model: str, batch: int, backend: str) -> BenchRow | None:
        for row in self.rows:
            if (row.model, row.batch, row.backend) == (model, batch, backend):
                return row
        return None

    def summary(self) -> list[dict]:
        """Per model at batch 1 (or the smallest batch): the ratios the issue's targets name."""
        batch = 1 if 1 in self.meta.batch_sizes else min(self.meta.batch_sizes)
        out = []
        for model in self.meta.models:
            eager = self.row(model, batch, "eager")
            candidates = [
                r
                for r in self.rows
                if r.model == model and r.batch == batch and r.backend in MOBILEVT_BACKENDS and r.status == "ok"
            ]
            best = min(candidates, key=lambda r: r.median_ms) if candidates else None
            peers = [
                r
                for r in self.rows
                if r.model == model and r.batch == batch and r.backend in PEER_BACKENDS and r.status == "ok"
            ]
            peer = min(peers, key=lambda r: r.median_ms) if peers else None
            out.append(
                {
                    "model": model,
                    "batch": batch,
                    "eager_ratio_to_timm": eager.ratio_to_timm if eager and eager.status == "ok" else None,
                    "best_backend": best.backend if best else None,
                    "best_ms": best.median_ms if best else None,
                    "best_ratio_to_timm": best.ratio_to_timm if best else None,
                    "best_peer": peer.backend if peer else None,
                    "best_peer_ms": peer.median_ms if peer else None,
                    "best_ratio_to_peer": best.ratio_to_best_peer if best else None,
                    "best_ratio_to_floor": best.ratio_to_floor if best else None,
                }
            )
        return out

    def to_json(self) -> str:
        payload = {
            "meta": asdict(self.meta),
            "rows": [asdict(r) for r in self.rows],
            "summary": self.summary(),
            "notes": self.notes,
            "profiles": [p.to_dict() for p in self.profiles],
        }
        return json.dumps(payload, indent=2)

    def to_markdown(self) -> str:
        lines = self._markdown_header() + self._markdown_models()
        for batch in self.meta.batch_sizes:
            lines += self._markdown_batch(batch)
        lines += self._markdown_summary()
        lines += self._markdown_profiles()
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def _markdown_header(self) -> list[str]:
        m = self.meta
        peak = m.matmul_peak
        versions = ", ".join(f"{k} {v}" for k, v in m.versions.items())
        return [
            "# mobilevt bench",
            "",
            f"fp32, {m.image_size}x{m.image_size}, {m.threads} threads, CPU: {m.cpu} ({m.cpu_count} logical cores); "
            f"{versions}.",
            "",
            f"- Weights: {m.weights}",
            f"- Timing: {m.timing_method}",
            f"- Backends: {m.backend_method}",
            f"- Peak memory: {m.memory_method}",
            f"- FLOP floor: {m.floor_method} Measured peak: {peak.gflops:.1f} GFLOP/s.",
        ] + _markdown_peaks(peak)

    def _markdown_models(self) -> list[str]:
        lines = [
            "",
            "| model | params (M) | MACs (G) | ImageNet top-1 (published) | FLOP floor, batch 1 (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
        for model in self.meta.models:
            first = next((r for r in self.rows if r.model == model), None)
            if first is None:
                continue
            floor = 2 * first.macs_g * 1e9 / (self.meta.matmul_peak.gflops * 1e9) * 1e3 if first.macs_g else None
            lines.append(
                f"| {model} | {_fmt(first.params_m, 2)} | {_fmt(first.macs_g, 3)} | {_fmt(first.top1, 2)} "
                f"| {_fmt(floor, 1)} |"
            )
        return lines

    def _markdown_batch(self, batch: int) -> list[str]:
        lines = [
            "",
            f"## Batch {batch}",
            "",
            "| model | backend | median (ms) | p90 (ms) | images/s | peak memory (MB) | x timm eager "
            "| x best peer | x FLOP floor | % of fp32 peak | max abs diff vs eager | note |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in (r for r in self.rows if r.batch == batch):
            median = _fmt(row.median_ms, 1) if row.status == "ok" else row.status
            lines.append(
                f"| {row.model} | {row.label} | {median} | {_fmt(row.p90_ms, 1)} | {_fmt(row.throughput_ips, 1)} "
                f"| {_fmt(row.peak_memory_mb, 0)} | {_fmt(row.ratio_to_timm, 2)} | {_fmt(row.ratio_to_best_peer, 2)} "
                f"| {_fmt(row.ratio_to_floor, 2)} | {_percent(row.fraction_of_peak)} "
                f"| {_fmt_diff(row.max_abs_diff)} | {_cell(row.note)} |"
            )
        return lines

    def _markdown_summary(self) -> list[str]:
        summary = self.summary()
        if not summary:
            return []
        lines = [
            "",
            f"## Summary (batch {summary[0]['batch']})",
            "",
            "Ratios of latency: below 1 is faster. The best peer path is the fastest way to run timm's model "
            "without mobilevt (eager, or exported by the runtime's own tool); the FLOP floor is 2 x MACs over "
            "this run's fastest fp32 GEMM.",
            "",
            "| model | eager / timm | best mobilevt backend | best (ms) | best / timm | best peer path | peer (ms) "
            "| best / best peer | best / FLOP floor |",
            "|---|---:|---|---:|---:|---|---:|---:|---:|",
        ]
        for s in summary:
            lines.append(
                f"| {s['model']} | {_versus(s['eager_ratio_to_timm'])} "
                f"| {BACKEND_LABELS.get(s['best_backend'], '-') if s['best_backend'] else '-'} "
                f"| {_fmt(s['best_ms'], 1)} | {_versus(s['best_ratio_to_timm'])} "
                f"| {BACKEND_LABELS.get(s['best_peer'], '-') if s['best_peer'] else '-'} "
                f"| {_fmt(s['best_peer_ms'], 1)} | {_versus(s['best_ratio_to_peer'])} "
                f"| {_fmt(s['best_ratio_to_floor'], 2)} |"
            )
        return lines

    def _markdown_profiles(self) -> list[str]:
        lines = []
        for model in dict.fromkeys(p.model for p in self.profiles):
            batch = next(p.batch for p in self.profiles if p.model == model)
            lines += ["", f"## Where the time goes: {model}, batch {batch}"]
            lines += [line for p in self.profiles if p.model == model for line in p.to_markdown()]
        return lines

    def summary_markdown(self) -> str:
        """What ``mobilevt bench`` prints: the run's conditions in one line and the summary table."""
        m = self.meta
        head = (
            f"mobilevt bench: fp32, {m.image_size}x{m.image_size}, {m.threads} threads, "
            f"{len(m.models)} model(s), medians of interleaved rounds"
        )
        profiles = [f"- {p.model}: {p.summary_line()}" for p in self.profiles]
        return "\n".join([head, *self._markdown_summary(), *(["", "Profiles:", *profiles] if profiles else [])]) + "\n"


def _markdown_peaks(peak: MatmulPeak) -> list[str]:
    """The kernels behind the floor, and the CPU's theoretical peak."""
    lines = [
        "",
        "| GEMM kernel (this CPU, same threads) | dtype | size | GFLOP/s (int8: GOP/s) | % of theoretical |",
        "|---|---|---:|---:|---:|",
    ]
    theory = peak.theoretical
    for kernel in sorted(peak.kernels, key=lambda k: (k.dtype, -k.gops)):
        bound = None if theory is None else theory.fp32_gflops if kernel.dtype == "fp32" else theory.int8_gops
        lines.append(
            f"| {kernel.name} | {kernel.dtype} | {kernel.size} | {kernel.gops:.0f} "
            f"| {_percent(kernel.gops / bound if bound else None)} |"
        )
    if theory is not None:
        lines += [
            "",
            f"Theoretical peak: {theory.fp32_gflops:.0f} GFLOP/s fp32, {theory.int8_gops:.0f} GOP/s int8: "
            f"{theory.how}.",
        ]
        if peak.gflops > theory.fp32_gflops:
            implied = peak.gflops / (theory.cores * theory.fp32_flops_per_cycle)
            lines[-1] += (
                f" The fastest fp32 kernel exceeds it: the cores ran above the reported clock, at "
                f"{implied:.2f} GHz or more."
            )
    return lines


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _versus(ratio: float | None) -> str:
    """A latency ratio with the words a reader wants: how much faster or slower."""
    if ratio is None:
        return "-"
    if ratio < 1:
        return f"{ratio:.2f} ({1 / ratio:.2f}x faster)"
    return f"{ratio:.2f} (slower)" if ratio > 1 else f"{ratio:.2f} (same)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_MARKERS = {
    "eager": "o",
    "fused": "s",
    "scripted": "D",
    "onnxruntime": "^",
    "executorch": "v",
    "tflite": "P",
    "timm": "x",
    "timm_onnxruntime": "1",
    "timm_executorch": "2",
    "timm_tflite": "3",
    "transformers": "+",
}


def plot_latency_vs_top1(report: BenchReport, path: str | os.PathLike) -> str | None:
    """PNG: batch-1 median latency (x) vs published ImageNet top-1 (y), one marker per
    backend, one point per variant. Returns a note instead when it cannot be drawn."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return 'no bench.png: matplotlib is not installed (pip install "mobilevt[train]")'
    batch = 1 if 1 in report.meta.batch_sizes else min(report.meta.batch_sizes)
    points = [r for r in report.rows if r.batch == batch and r.status == "ok" and r.top1 is not None]
    if not points:
        return "no bench.png: no timed row with a published top-1"
    figure = Figure(figsize=(8, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for backend in report.meta.backends:
        mine = sorted((r for r in points if r.backend == backend), key=lambda r: r.median_ms)
        if mine:
            axes.plot(
                [r.median_ms for r in mine],
                [r.top1 for r in mine],
                marker=_MARKERS.get(backend, "o"),
                linestyle="-",
                linewidth=0.8,
                label=BACKEND_LABELS[backend],
            )
    for model in report.meta.models:
        mine = [r for r in points if r.model == model]
        if mine:
            leftmost = min(mine, key=lambda r: r.median_ms)
            axes.annotate(
                model,
                (leftmost.median_ms, leftmost.top1),
                textcoords="offset points",
                xytext=(0, 7),
                ha="left",
                fontsize=7,
            )
    latencies = [r.median_ms for r in points]
    if max(latencies) > 4 * min(latencies):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 20, not 2x10^1
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel(f"median latency, batch {batch} (ms)")
    axes.set_ylabel("ImageNet top-1, published (%)")
    m = report.meta
    axes.set_title(
        f"latency vs accuracy: fp32, {m.image_size}x{m.image_size}, {m.threads} threads, {m.cpu}", fontsize=9
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return None


def write_report(report: BenchReport, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``bench.md``, ``bench.json`` and ``bench.png`` (when matplotlib is installed)
    atomically into ``output_dir``; returns the paths written."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    png_note = plot_latency_vs_top1(report, out / "bench.png")
    if png_note is None:
        written["png"] = out / "bench.png"
    elif png_note not in report.notes:
        report.notes.append(png_note)
    written["json"] = write_text_atomic(out / "bench.json", report.to_json() + "\n")
    written["markdown"] = write_text_atomic(out / "bench.md", report.to_markdown())
    return written
