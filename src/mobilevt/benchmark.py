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

import copy
import gc
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .fileio import atomic_path, write_text_atomic
from .errors import InvalidInputError, MissingDependencyError

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

BACKENDS = ("eager", "fused", "scripted", "onnxruntime", "executorch", "tflite", "timm", "transformers")
BACKEND_LABELS = {
    "eager": "mobilevt eager",
    "fused": "mobilevt fused + channels_last",
    "scripted": "mobilevt TorchScript",
    "onnxruntime": "ONNX Runtime",
    "executorch": "ExecuTorch (XNNPACK)",
    "tflite": "TFLite (LiteRT)",
    "timm": "timm eager",
    "transformers": "transformers eager",
}
# backends that run mobilevt's own model (the "best mobilevt backend" is chosen among them)
MOBILEVT_BACKENDS = ("eager", "fused", "scripted", "onnxruntime", "executorch", "tflite")
REFERENCE_BACKEND = "timm"

# The targets (fp32, batch 1, 256x256, 2 threads), shown in the summary table.
EAGER_TARGET = 0.8  # mobilevt eager / timm eager, every variant
BEST_TARGET = 0.4  # best mobilevt backend / timm eager
FLOOR_TARGET = 1.5  # best mobilevt backend / FLOP floor
BEST_TARGET_MODELS = ("mobilevit_s", "mobilevitv2_100")

_INSTALL = {
    "onnxruntime": 'pip install "mobilevt[onnx]"',
    "executorch": 'pip install "mobilevt[executorch]"',
    "timm": 'pip install "mobilevt[reference]"',
    "transformers": 'pip install "mobilevt[reference]"',
    "tflite": "pip install ai-edge-litert",
}
_REQUIRED_MODULES = {
    "onnxruntime": ("onnx", "onnxruntime"),
    "executorch": ("executorch.runtime",),
    "timm": ("timm",),
    "transformers": ("transformers",),
}
_EXPORT_FORMAT = {"onnxruntime": "onnx", "executorch": "executorch", "tflite": "tflite"}
_ARTIFACT_SUFFIX = {"scripted": ".pt", "onnxruntime": ".onnx", "executorch": ".pte", "tflite": ".tflite"}

# transformers' configs for ml-cvnets' v1 variants (its defaults are mobilevit_s); v2 variants
# differ only by width.
_TRANSFORMERS_V1 = {
    "mobilevit_xxs": dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0),
    "mobilevit_xs": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
    "mobilevit_s": dict(hidden_sizes=[144, 192, 240], neck_hidden_sizes=[16, 32, 64, 96, 128, 160, 640]),
}

Run = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- results


@dataclass
class MatmulPeak:
    """Best fp32 ``torch.mm`` throughput measured on this CPU with ``threads`` threads."""

    gflops: float
    threads: int
    sizes: tuple[int, ...]
    gflops_by_size: dict[int, float]
    repeats: int


@dataclass
class BenchRow:
    model: str
    batch: int
    backend: str
    label: str
    status: str  # "ok", "missing" (package not installed), "failed" or "unsupported" (batch size)
    note: str = ""
    median_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    throughput_ips: Optional[float] = None  # images per second: batch / median
    peak_memory_mb: Optional[float] = None
    ratio_to_timm: Optional[float] = None  # median / timm eager median, same model and batch
    floor_ms: Optional[float] = None  # 2 * MACs * batch / peak matmul FLOP/s
    ratio_to_floor: Optional[float] = None  # median / floor_ms
    max_abs_diff: Optional[float] = None  # logits vs mobilevt eager on the timed input (same weights)
    macs_g: Optional[float] = None  # per image
    params_m: Optional[float] = None
    top1: Optional[float] = None  # published ImageNet top-1 of the variant's default weights
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
    cpu_count: Optional[int]
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

    def row(self, model: str, batch: int, backend: str) -> Optional[BenchRow]:
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
                r for r in self.rows
                if r.model == model and r.batch == batch and r.backend in MOBILEVT_BACKENDS and r.status == "ok"
            ]
            best = min(candidates, key=lambda r: r.median_ms) if candidates else None
            out.append({
                "model": model,
                "batch": batch,
                "eager_ratio_to_timm": eager.ratio_to_timm if eager and eager.status == "ok" else None,
                "best_backend": best.backend if best else None,
                "best_ms": best.median_ms if best else None,
                "best_ratio_to_timm": best.ratio_to_timm if best else None,
                "best_ratio_to_floor": best.ratio_to_floor if best else None,
            })
        return out

    def to_json(self) -> str:
        payload = {"meta": asdict(self.meta), "rows": [asdict(r) for r in self.rows],
                   "summary": self.summary(), "notes": self.notes}
        return json.dumps(payload, indent=2)

    def to_markdown(self) -> str:
        m = self.meta
        peak = m.matmul_peak
        versions = ", ".join(f"{k} {v}" for k, v in m.versions.items())
        lines = [
            "# mobilevt bench",
            "",
            f"fp32, {m.image_size}x{m.image_size}, {m.threads} threads, CPU: {m.cpu} ({m.cpu_count} logical cores); "
            f"{versions}.",
            "",
            f"- Weights: {m.weights}",
            f"- Timing: {m.timing_method}",
            f"- Backends: {m.backend_method}",
            f"- Peak memory: {m.memory_method}",
            f"- FLOP floor: {m.floor_method} Measured peak: {peak.gflops:.1f} GFLOP/s "
            f"({', '.join(f'{s}x{s}: {g:.1f}' for s, g in peak.gflops_by_size.items())}).",
            "",
            "| model | params (M) | MACs (G) | ImageNet top-1 (published) | FLOP floor, batch 1 (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
        for model in m.models:
            first = next((r for r in self.rows if r.model == model), None)
            if first is None:
                continue
            floor = 2 * first.macs_g * 1e9 / (peak.gflops * 1e9) * 1e3 if first.macs_g else None
            lines.append(
                f"| {model} | {_fmt(first.params_m, 2)} | {_fmt(first.macs_g, 3)} | {_fmt(first.top1, 2)} | {_fmt(floor, 1)} |"
            )
        for batch in m.batch_sizes:
            lines += [
                "",
                f"## Batch {batch}",
                "",
                "| model | backend | median (ms) | p90 (ms) | images/s | peak memory (MB) | x timm eager "
                "| x FLOP floor | max abs diff vs eager | note |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
            ]
            for row in (r for r in self.rows if r.batch == batch):
                median = _fmt(row.median_ms, 1) if row.status == "ok" else row.status
                lines.append(
                    f"| {row.model} | {row.label} | {median} | {_fmt(row.p90_ms, 1)} | {_fmt(row.throughput_ips, 1)} "
                    f"| {_fmt(row.peak_memory_mb, 0)} | {_fmt(row.ratio_to_timm, 2)} | {_fmt(row.ratio_to_floor, 2)} "
                    f"| {_fmt_diff(row.max_abs_diff)} | {_cell(row.note)} |"
                )
        summary = self.summary()
        if summary:
            batch = summary[0]["batch"]
            lines += [
                "",
                f"## Summary against the targets (batch {batch})",
                "",
                f"Targets: mobilevt eager <= {EAGER_TARGET}x timm eager for every variant; the best mobilevt backend "
                f"<= {BEST_TARGET}x timm eager and <= {FLOOR_TARGET}x the FLOP floor for "
                f"{' and '.join(BEST_TARGET_MODELS)}.",
                "",
                "| model | eager / timm | best mobilevt backend | best (ms) | best / timm | best / FLOP floor |",
                "|---|---:|---|---:|---:|---:|",
            ]
            for s in summary:
                targeted = s["model"] in BEST_TARGET_MODELS
                lines.append(
                    f"| {s['model']} | {_mark(s['eager_ratio_to_timm'], EAGER_TARGET)} "
                    f"| {BACKEND_LABELS.get(s['best_backend'], '-') if s['best_backend'] else '-'} "
                    f"| {_fmt(s['best_ms'], 1)} "
                    f"| {_mark(s['best_ratio_to_timm'], BEST_TARGET if targeted else None)} "
                    f"| {_mark(s['best_ratio_to_floor'], FLOOR_TARGET if targeted else None)} |"
                )
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(value: Optional[float], digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_diff(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1e}"


def _mark(value: Optional[float], target: Optional[float]) -> str:
    if value is None:
        return "-"
    if target is None:
        return f"{value:.2f}"
    return f"{value:.2f} {'(met)' if value <= target else '(missed)'}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- FLOP floor


def measure_matmul_peak(threads: int, sizes: Sequence[int] = (1024, 2048), repeats: int = 5) -> MatmulPeak:
    """Peak fp32 matmul GFLOP/s of this CPU on ``threads`` threads: the best of ``repeats``
    ``torch.mm`` calls at each square size (2 * n^3 FLOPs each)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        by_size: dict[int, float] = {}
        generator = torch.Generator().manual_seed(0)
        for n in sizes:
            a = torch.rand(n, n, generator=generator)
            b = torch.rand(n, n, generator=generator)
            out = torch.empty(n, n)
            torch.mm(a, b, out=out)  # warm-up: thread pool, page faults
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(a, b, out=out)
                best = min(best, time.perf_counter() - start)
            by_size[int(n)] = 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)
    return MatmulPeak(max(by_size.values()), threads, tuple(int(s) for s in sizes), by_size, repeats)


# --------------------------------------------------------------------------- models


_TASK = "image-classification"


def resolve_models(patterns: Sequence[str] | None) -> list[str]:
    """Image classifiers from names or shell patterns (``'mobilevitv2_*'``); every registered
    image classifier when empty."""
    import mobilevt

    if not patterns:
        return mobilevt.list_models(task=_TASK)
    names: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matched = mobilevt.list_models(pattern, task=_TASK)
            if not matched:
                raise InvalidInputError(f"no image classifier matches {pattern!r}; `mobilevt models` lists them")
        else:
            # a weights tag (name.tag) does not matter here: the benchmark uses random weights
            entry = mobilevt.get_model_entry(pattern)
            if entry.task != _TASK:
                raise InvalidInputError(f"mobilevt bench times image classifiers; {entry.name} is a {entry.task} model")
            matched = [entry.name]
        names += [n for n in matched if n not in names]
    return names


def _well_scaled_random_(model: nn.Module, seed: int) -> nn.Module:
    """Random weights whose activations stay in a normal float range: default
    initialisations of some references (transformers' MobileViT) decay activations to
    denormals, which CPUs process many times slower."""
    generator = torch.Generator().manual_seed(seed)
    norms = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    with torch.no_grad():
        for module in model.modules():
            own = list(module.named_parameters(recurse=False))
            if isinstance(module, norms):
                for name, param in own:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05 + (1.0 if name == "weight" else 0.0))
                if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
                    module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                    module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            else:
                for _, param in own:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def _mobilevt_model(name: str, seed: int) -> nn.Module:
    import mobilevt

    return _well_scaled_random_(mobilevt.create_model(name), seed)


def _fast_path(model: nn.Module) -> nn.Module:
    return model.eval().fuse().to(memory_format=torch.channels_last)


def _timm_model(name: str, seed: int) -> nn.Module:
    import timm

    return _well_scaled_random_(timm.create_model(name), seed)


class _TransformersLogits(nn.Module):
    """transformers' classifier as images in, logits out (it returns an output object)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def _transformers_model(name: str, seed: int) -> nn.Module:
    import transformers

    if name in _TRANSFORMERS_V1:
        config = transformers.MobileViTConfig(num_labels=1000, **_TRANSFORMERS_V1[name])
        model = transformers.MobileViTForImageClassification(config)
    else:
        match = re.fullmatch(r"mobilevitv2_(\d{3})", name)
        if match is None:
            raise InvalidInputError(f"transformers has no counterpart of {name}")
        config = transformers.MobileViTV2Config(num_labels=1000, width_multiplier=int(match.group(1)) / 100)
        model = transformers.MobileViTV2ForImageClassification(config)
    return _TransformersLogits(_well_scaled_random_(model, seed)).eval()


# --------------------------------------------------------------------------- runtimes


def _executorch_threads(threads: int) -> bool:
    from .export.backends import set_executorch_threads

    return set_executorch_threads(threads)


def _onnxruntime_runner(path: Path, threads: int) -> Callable[[int], Run]:
    from .export.backends import onnx_runner

    run_file = onnx_runner(path, threads)
    return lambda batch: (lambda x: run_file(x)[0])


def _executorch_runner(path: Path, threads: int) -> Callable[[int], Run]:
    from .export.backends import executorch_runner, set_executorch_threads

    set_executorch_threads(threads)
    run_file, _ = executorch_runner(path)
    return lambda batch: (lambda x: run_file(x)[0])


def _tflite_interpreter_class():
    for module_name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(module_name).Interpreter
        except ImportError:
            continue
    return None


def _tflite_runner(path: Path, threads: int) -> Callable[[int], Run]:
    interpreter_class = _tflite_interpreter_class()
    if interpreter_class is None:
        raise MissingDependencyError(f"no TFLite interpreter: {_INSTALL['tflite']}")

    def runner_for(batch: int) -> Run:
        interpreter = interpreter_class(model_path=str(path), num_threads=threads)
        detail = interpreter.get_input_details()[0]
        output_index = interpreter.get_output_details()[0]["index"]
        shape = [int(s) for s in detail["shape"]]
        nhwc = shape[-1] == 3 and shape[1] != 3  # converters often move channels last
        if shape[0] != batch:
            interpreter.resize_tensor_input(detail["index"], [batch] + shape[1:])
        interpreter.allocate_tensors()

        def run(x: torch.Tensor) -> torch.Tensor:
            array = (x.permute(0, 2, 3, 1) if nhwc else x).contiguous().numpy()
            interpreter.set_tensor(detail["index"], array)
            interpreter.invoke()
            return torch.from_numpy(interpreter.get_tensor(output_index).copy())

        return run

    return runner_for


def _scripted_runner(path: Path) -> Callable[[int], Run]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(path)).eval()
    return lambda batch: module


def _torch_runner(model: nn.Module) -> Callable[[int], Run]:
    return lambda batch: model


def _file_runner(backend: str, path: Path, threads: int) -> Callable[[int], Run]:
    if backend == "scripted":
        return _scripted_runner(path)
    if backend == "onnxruntime":
        return _onnxruntime_runner(path, threads)
    if backend == "executorch":
        return _executorch_runner(path, threads)
    if backend == "tflite":
        return _tflite_runner(path, threads)
    raise InvalidInputError(f"{backend} does not run from a file")


# --------------------------------------------------------------------------- building backends


@dataclass
class _Backend:
    name: str
    status: str  # ok / missing / failed
    note: str = ""
    runner_for: Optional[Callable[[int], Run]] = None
    max_batch: Optional[int] = None  # largest batch it runs (an ExecuTorch static-batch fallback)
    same_weights: bool = True  # logits comparable with mobilevt eager
    artifact: Optional[Path] = None  # the file a memory child loads


def _missing_package(backend: str) -> Optional[str]:
    if backend == "tflite":
        from .export.core import FORMATS
        from .export.report import EXTRAS as _EXTRAS

        if "tflite" not in FORMATS:
            return "missing: this mobilevt has no TFLite export yet"
        if _tflite_interpreter_class() is None:
            return f"missing: a TFLite interpreter ({_EXTRAS.get('tflite', _INSTALL['tflite'])})"
        return None
    for module in _REQUIRED_MODULES.get(backend, ()):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"missing: {module} ({_INSTALL[backend]})"
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _choose_script_or_trace(fused: nn.Module, size: int, path: Path) -> str:
    """TorchScript of the fast path: scripted, or traced when tracing gives a faster
    program that still matches at another batch size; the chosen one is saved to ``path``."""
    example = torch.rand(1, 3, size, size)
    check = torch.rand(2, 3, size, size)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
        expected = fused(check)
        candidates = {"torch.jit.script + freeze": torch.jit.freeze(torch.jit.script(fused))}
        try:
            traced = torch.jit.freeze(torch.jit.trace(fused, example))
            if (traced(check) - expected).abs().max().item() <= 1e-4:
                candidates["torch.jit.trace + freeze"] = traced
        except RuntimeError:
            pass
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for round_index in range(9):
            for name, module in candidates.items():
                start = time.perf_counter()
                module(example)
                if round_index >= 4:  # TorchScript's profiling executor optimises the graph in the first runs
                    times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        chosen = min(medians, key=medians.get)
        with atomic_path(path) as tmp:
            torch.jit.save(candidates[chosen], str(tmp))
    others = ", ".join(f"{n}: {ms:.1f} ms" for n, ms in medians.items() if n != chosen)
    return chosen + (f" (quick check, batch 1: {medians[chosen]:.1f} ms vs {others})" if others else "")


def _check_image_folder(workdir: Path) -> Path:
    """Two small random photos-to-be for export_model's verification step (the bench times
    the files; whether they agree with eager is checked again on the timed input)."""
    from PIL import Image

    folder = workdir / "check-images"
    folder.mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for i in range(2):
        pixels = torch.randint(0, 256, (300, 320, 3), dtype=torch.uint8, generator=generator)
        Image.fromarray(pixels.numpy()).save(folder / f"random{i}.png")
    return folder


def _build_backends(
    name: str, backends: Sequence[str], size: int, threads: int, max_batch: int, seed: int, workdir: Path,
    advance: Callable[[str], None],
) -> dict[str, _Backend]:
    from .export.core import ExportError

    built: dict[str, _Backend] = {}
    missing = {b: _missing_package(b) for b in backends}
    reference: Optional[nn.Module] = None
    if "timm" in backends and missing["timm"] is None:
        # mobilevt loads timm's weights: the two are then checked against each other too
        import mobilevt

        reference = _timm_model(name, seed)
        base = mobilevt.create_model(name).eval()
        base.load_state_dict(mobilevt.convert_state_dict(reference.state_dict(), name))
    else:
        base = _mobilevt_model(name, seed)
    fused = _fast_path(copy.deepcopy(base))
    check_dir: Optional[Path] = None
    for backend in backends:
        advance(f"{name}: building {backend}")
        if missing[backend]:
            built[backend] = _Backend(backend, "missing", missing[backend])
            continue
        try:
            if backend == "eager":
                built[backend] = _Backend(backend, "ok", "", _torch_runner(base))
            elif backend == "fused":
                built[backend] = _Backend(backend, "ok", "model.fuse() + channels_last", _torch_runner(fused))
            elif backend == "timm":
                built[backend] = _Backend(backend, "ok", "same weights as mobilevt", _torch_runner(reference))
            elif backend == "transformers":
                model = _transformers_model(name, seed)
                built[backend] = _Backend(backend, "ok", "own random weights", _torch_runner(model), same_weights=False)
            elif backend == "scripted":
                path = workdir / f"{name}.scripted.pt"
                note = _choose_script_or_trace(fused, size, path)
                built[backend] = _Backend(backend, "ok", note, _file_runner(backend, path, threads), artifact=path)
            else:
                from .export.core import export_model

                check_dir = check_dir or _check_image_folder(workdir)
                path = workdir / f"{name}{_ARTIFACT_SUFFIX[backend]}"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer / exporter chatter
                    report = export_model(
                        # a batch-1-only run gets a static program (ExecuTorch needs max > min for a dynamic one)
                        base, path, _EXPORT_FORMAT[backend], image_size=(size, size), dynamic_batch=max_batch > 1,
                        max_batch=max_batch, check_images=check_dir, max_check_images=2, latency_runs=0,
                    )
                notes = [report.runtime]
                if backend == "executorch" and not _executorch_threads(threads):
                    notes.append("its thread pool could not be resized: default thread count")
                static = not report.dynamic_batch
                if static and max_batch > 1:
                    # the export's own explanation (a converter that cannot lower a symbolic batch ...)
                    why = next((n for n in report.notes if "batch" in n), "the exported program has a static batch")
                    notes.append(why[:160] if why.lower().startswith("batch 1 only") else f"batch 1 only ({why[:160]})")
                elif backend == "executorch":
                    notes.append(f"memory planned for batch <= {report.details['max_batch']}")
                planned = report.details.get("max_batch") if backend == "executorch" else None
                built[backend] = _Backend(
                    backend, "ok", "; ".join(notes), _file_runner(backend, path, threads),
                    max_batch=1 if static else planned, artifact=path,
                )
        except ImportError as exc:
            built[backend] = _Backend(backend, "missing", f"missing: {exc.name or exc} ({_INSTALL.get(backend, '')})")
        except ExportError as exc:
            # export_model names a missing converter package with its pip command
            status = "missing" if "pip install" in str(exc) else "failed"
            built[backend] = _Backend(backend, status, f"{status}: {_one_line(exc)}")
        except Exception as exc:  # a backend that cannot be built is a table row, not a crash
            built[backend] = _Backend(backend, "failed", f"failed: {_one_line(exc)}")
    return built


# --------------------------------------------------------------------------- timing


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _time_interleaved(
    runs: dict[str, Run], x: torch.Tensor, rounds: int, warmup: int, advance: Callable[[str], None], label: str
) -> dict[str, list[float]]:
    """One call of each backend per round, the first backend rotating; seconds per call."""
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one timed call would land on whichever backend runs then
    try:
        with torch.inference_mode():
            for round_index in range(warmup + rounds):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    start = time.perf_counter()
                    runs[name](x)
                    elapsed = time.perf_counter() - start
                    if round_index >= warmup:
                        times[name].append(elapsed)
                if round_index < warmup:
                    advance(f"{label}: warm-up {round_index + 1}/{warmup}")
                else:
                    advance(f"{label}: round {round_index + 1 - warmup}/{rounds}")
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


# --------------------------------------------------------------------------- peak memory

_MEMORY_RUNS = 3


def _status_kb(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            match = re.search(rf"^{field_name}:\s+(\d+) kB", fh.read(), re.M)
        return int(match.group(1)) if match else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM) to its current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_kb() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def _peak_memory_in_this_process(spec: dict) -> dict:
    """Load one backend, run each batch size; peak RSS growth (MB) per batch size."""
    backend, name, size, threads = spec["backend"], spec["model"], spec["image_size"], spec["threads"]
    torch.set_num_threads(threads)
    # everything imported before the baseline: only what loading and running adds is counted
    for module in _REQUIRED_MODULES.get(backend, ()):
        importlib.import_module(module)
    if backend == "transformers":
        import transformers

        transformers.MobileViTForImageClassification, transformers.MobileViTV2ForImageClassification  # lazy modules
    baseline = _status_kb("VmRSS")
    precise = baseline is not None
    if not precise:
        baseline = _maxrss_kb()
    if backend in ("eager", "fused", "timm", "transformers"):
        builders = {
            "eager": lambda: _mobilevt_model(name, 0),
            "fused": lambda: _fast_path(_mobilevt_model(name, 0)),
            "timm": lambda: _timm_model(name, 0),
            "transformers": lambda: _transformers_model(name, 0),
        }
        runner_for = _torch_runner(builders[backend]())
    else:
        runner_for = _file_runner(backend, Path(spec["artifact"]), threads)
    peaks: dict[str, float] = {}
    for batch in spec["batches"]:
        run = runner_for(batch)
        x = torch.rand(batch, 3, size, size)
        with torch.inference_mode():
            run(x)  # first call: lazy initialisation outside the window, as in the timed runs
            precise = precise and _reset_peak_rss()
            for _ in range(_MEMORY_RUNS):
                run(x)
        peak = _status_kb("VmHWM") if precise else _maxrss_kb()
        peaks[str(batch)] = (peak - baseline) / 1024
    return {"peak_mb": peaks, "precise": precise}


_CHILD_TIMEOUT_S = 900


def _memory_helper_main(preload: Sequence[str]) -> None:
    """Helper process: import torch, mobilevt (and ``preload``) once, then fork one fresh
    child per request read from stdin, so that each backend is measured in a process of
    its own without paying the imports again. It runs no computation itself: the thread
    pools of torch and the runtimes start in each child."""
    import signal

    for module in preload:
        importlib.import_module(module)
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_fd)
            os.dup2(2, 1)  # stray prints of libraries must not reach the result channel
            signal.alarm(_CHILD_TIMEOUT_S)  # a hung runtime ends the child, not the run
            try:
                result = _peak_memory_in_this_process(json.loads(line))
            except BaseException as exc:  # noqa: BLE001 - reported back as one line
                result = {"error": _one_line(exc)}
            with os.fdopen(write_fd, "w") as channel:
                channel.write(json.dumps(result))
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd) as channel:
            text = channel.read()
        _, status = os.waitpid(pid, 0)
        if not text:
            text = json.dumps({"error": f"the measuring process died (wait status {status})"})
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class _MemoryHelper:
    """The parent's end of :func:`_memory_helper_main`."""

    def __init__(self, preload: Sequence[str]):
        self._stderr = tempfile.TemporaryFile(mode="w+")
        code = "import sys; from mobilevt.benchmark import _memory_helper_main; _memory_helper_main(sys.argv[1:])"
        self._process = subprocess.Popen(
            [sys.executable, "-c", code, *preload], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, env=_child_env(),
        )

    def measure(self, spec: dict) -> dict[int, float] | str:
        try:
            self._process.stdin.write(json.dumps(spec) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self._stderr.seek(0)
            tail = [text for text in self._stderr.read().splitlines() if text.strip()][-1:] or ["no output"]
            return f"memory not measured: the helper process failed ({tail[0][:200]})"
        result = json.loads(line)
        if "error" in result:
            return f"memory not measured: {result['error']}"
        return {int(b): float(mb) for b, mb in result["peak_mb"].items()}

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stderr.close()


def _measure_memory(
    name: str, built: dict[str, _Backend], batch_sizes: Sequence[int], size: int, threads: int,
    helper: _MemoryHelper, advance: Callable[[str], None],
) -> dict[str, dict[int, float] | str]:
    """Peak RSS growth per backend and batch size, each backend in a fresh process."""
    results: dict[str, dict[int, float] | str] = {}
    for backend, state in built.items():
        if state.status == "ok":
            batches = [b for b in sorted(batch_sizes) if state.max_batch is None or b <= state.max_batch]
            results[backend] = helper.measure({
                "backend": backend, "model": name, "image_size": size, "threads": threads, "batches": batches,
                "artifact": str(state.artifact) if state.artifact else None,
            })
        advance(f"{name}: memory of {backend}")
    return results


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # the child must import this very mobilevt, also when it runs from a source tree
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


# --------------------------------------------------------------------------- the run


def _versions() -> dict[str, str]:
    import mobilevt

    versions = {"mobilevt": mobilevt.__version__, "torch": torch.__version__}
    for package in ("onnxruntime", "executorch", "timm", "transformers", "ai_edge_litert"):
        try:
            from importlib.metadata import version

            versions[package] = version(package.replace("_", "-"))
        except Exception:  # noqa: BLE001 - not installed
            continue
    return versions


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            match = re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_benchmark(
    models: Sequence[str] | None = None,
    *,
    backends: Sequence[str] = BACKENDS,
    batch_sizes: Sequence[int] = (1, 8),
    image_size: int = 256,
    threads: Optional[int] = None,
    runs: int = 20,
    warmup: int = 3,
    measure_memory: bool = True,
    progress: bool = True,
    seed: int = 0,
) -> BenchReport:
    """Time every (model, batch, backend) interleaved and return the report.

    Args:
        models: names or shell patterns; default: every registered variant.
        backends: any of ``BACKENDS``; ``timm`` is the reference of the ratio column.
        threads: torch, onnxruntime, ExecuTorch (and TFLite) threads; default: the cores
            this process may use.
        runs: timed rounds per (model, batch), one call of each backend per round.
        warmup: untimed rounds before them.
        measure_memory: peak RSS of each backend, in a process of its own (Linux and macOS).
    """
    from tqdm.auto import tqdm

    import mobilevt
    from .profiling import count_macs

    names = resolve_models(models)
    backends = list(dict.fromkeys(backends))
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise InvalidInputError(f"unknown backend(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(BACKENDS)}")
    batch_sizes = sorted(set(int(b) for b in batch_sizes))
    if not batch_sizes or batch_sizes[0] < 1:
        raise InvalidInputError("batch sizes must be positive integers, e.g. --batch-sizes 1 8")
    threads = threads or _available_cores()
    memory_note = None
    if measure_memory and not hasattr(os, "fork"):
        measure_memory = False  # the measuring processes are forked
        memory_note = "peak memory not measured: it needs os.fork (Linux, macOS)"
    if threads < 1 or runs < 1 or warmup < 0 or image_size < 32:
        raise InvalidInputError("need threads >= 1, runs >= 1, warmup >= 0 and image size >= 32")

    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    clock = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    steps_per_model = len(backends) * (2 if measure_memory else 1) + len(batch_sizes) * (warmup + runs)
    bar = tqdm(total=steps_per_model * len(names), unit="step", disable=not progress, file=sys.stderr,
               desc="mobilevt bench")

    def advance(text: str) -> None:
        bar.set_description_str(text, refresh=False)
        bar.update(1)

    rows: list[BenchRow] = []
    helper: Optional[_MemoryHelper] = None
    notes: list[str] = [memory_note] if memory_note else []
    try:
        peak = measure_matmul_peak(threads)
        with tempfile.TemporaryDirectory(prefix="mobilevt-bench-") as tmp:
            workdir = Path(tmp)
            for name in names:
                entry = mobilevt.get_model_entry(name)
                top1 = entry.default_weights.top1 if entry.default_weights else None  # classifiers' ImageNet top-1
                cost = count_macs(mobilevt.create_model(name).eval(), (image_size, image_size))
                built = _build_backends(name, backends, image_size, threads, batch_sizes[-1], seed, workdir, advance)
                model_rows: list[BenchRow] = []
                for batch in batch_sizes:
                    model_rows += _bench_batch(name, batch, built, image_size, runs, warmup, seed, advance)
                floor_per_image_ms = 2 * cost.macs / (peak.gflops * 1e9) * 1e3
                for row in model_rows:
                    row.macs_g = cost.macs / 1e9
                    row.params_m = cost.params / 1e6
                    row.top1 = top1
                    row.floor_ms = floor_per_image_ms * row.batch
                    if row.status == "ok":
                        row.ratio_to_floor = row.median_ms / row.floor_ms
                if measure_memory:
                    if helper is None:
                        # timm is imported by the helper once; onnxruntime, ExecuTorch and transformers start
                        # threads on import, so each measuring process imports them after the fork
                        timm_ok = "timm" in backends and _missing_package("timm") is None
                        helper = _MemoryHelper(["mobilevt.benchmark"] + (["timm"] if timm_ok else []))
                    memory = _measure_memory(name, built, batch_sizes, image_size, threads, helper, advance)
                    for row in model_rows:
                        measured = memory.get(row.backend)
                        if isinstance(measured, dict):
                            row.peak_memory_mb = measured.get(row.batch)
                        elif isinstance(measured, str):
                            row.note = "; ".join(filter(None, [row.note, measured]))
                rows += model_rows
                del built
                gc.collect()
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
        if helper is not None:
            helper.close()

    if not measure_memory:
        memory_method = "not measured (--no-memory)"
    elif os.path.exists("/proc/self/clear_refs"):
        memory_method = (
            "peak resident set size of a process of its own per backend (forked from a helper that imported torch "
            f"and mobilevt) while it runs {_MEMORY_RUNS} calls at each batch size after one untimed call, minus its "
            "RSS before loading the model: weights, runtime arenas, activations and the input. Linux VmHWM, reset "
            "through /proc/self/clear_refs before each batch size"
        )
    else:
        memory_method = (
            "peak resident set size (getrusage ru_maxrss) of a process of its own per backend, minus its peak "
            "before loading the model; the peak cannot be reset here, so larger batches include smaller ones'"
        )
    meta = BenchMeta(
        image_size=image_size, threads=threads, runs=runs, warmup=warmup, batch_sizes=batch_sizes,
        backends=backends, models=names, matmul_peak=peak, cpu=_cpu_name(), cpu_count=os.cpu_count(),
        versions=_versions(),
        weights=("random (well scaled, no denormals); mobilevt and timm share the same values, transformers has its "
                 "own; latency does not depend on weight values and nothing is downloaded"),
        timing_method=(f"all backends of a (model, batch) built first, then {warmup} warm-up and {runs} timed rounds, "
                       "one call of each backend per round with the first backend rotating; median and p90 of the "
                       "timed calls; images/s = batch / median; same random fp32 input for all"),
        backend_method=("ONNX Runtime, ExecuTorch and TFLite run files written by mobilevt.export.export_model (BatchNorm "
                        "folded) to a temporary folder, with the same thread count as torch; TorchScript is the fused "
                        "channels-last model scripted or traced (whichever ran faster in a quick check; its note "
                        "says which) and frozen"),
        memory_method=memory_method,
        floor_method=("2 x MACs (mobilevt.profiling.count_macs: convolutions, linear layers, attention matmuls) x "
                      "batch / peak fp32 matmul throughput (best torch.mm on the same threads, same run)."),
        started=started,
        seconds=time.perf_counter() - clock,
    )
    return BenchReport(meta, rows, notes)


def _bench_batch(
    name: str, batch: int, built: dict[str, _Backend], size: int, runs: int, warmup: int, seed: int,
    advance: Callable[[str], None],
) -> list[BenchRow]:
    rows = {backend: BenchRow(name, batch, backend, BACKEND_LABELS[backend], state.status, state.note)
            for backend, state in built.items()}
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + batch))
    runners: dict[str, Run] = {}
    expected: Optional[torch.Tensor] = None
    with torch.inference_mode():
        if built.get("eager") and built["eager"].status == "ok":
            expected = built["eager"].runner_for(batch)(x)
        for backend, state in built.items():
            if state.status != "ok":
                continue
            row = rows[backend]
            if state.max_batch is not None and batch > state.max_batch:
                row.status = "unsupported"
                row.note = f"the exported program runs batch <= {state.max_batch}; {state.note}"
                continue
            try:
                run = state.runner_for(batch)
                out = run(x)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                row.status, row.note = "failed", f"failed at batch {batch}: {_one_line(exc)}"
                continue
            if not torch.isfinite(out).all() or out.abs().max() < 1e-6:
                row.note = "; ".join(filter(None, [row.note, "warning: logits not finite or ~0 (denormal timings?)"]))
            if expected is not None and state.same_weights:
                row.max_abs_diff = (out.float() - expected.float()).abs().max().item()
                if row.max_abs_diff > 1e-3:
                    row.note = "; ".join(filter(None, [row.note, "warning: logits differ from eager"]))
            runners[backend] = run
    if runners:
        times = _time_interleaved(runners, x, runs, warmup, advance, f"{name} batch {batch}")
    else:
        times = {}
        for _ in range(warmup + runs):
            advance(f"{name} batch {batch}")
    for backend, samples in times.items():
        row = rows[backend]
        row.median_ms = statistics.median(samples) * 1e3
        row.p90_ms = _percentile(samples, 0.9) * 1e3
        row.throughput_ips = batch / (row.median_ms / 1e3)
        row.runs = len(samples)
    reference = rows.get(REFERENCE_BACKEND)
    for row in rows.values():
        if reference is not None and reference.status == "ok" and row.status == "ok":
            row.ratio_to_timm = row.median_ms / reference.median_ms
    return list(rows.values())


# --------------------------------------------------------------------------- outputs

_MARKERS = {"eager": "o", "fused": "s", "scripted": "D", "onnxruntime": "^", "executorch": "v", "tflite": "P",
            "timm": "x", "transformers": "+"}


def plot_latency_vs_top1(report: BenchReport, path: str | os.PathLike) -> Optional[str]:
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
            axes.plot([r.median_ms for r in mine], [r.top1 for r in mine], marker=_MARKERS.get(backend, "o"),
                      linestyle="-", linewidth=0.8, label=BACKEND_LABELS[backend])
    for model in report.meta.models:
        mine = [r for r in points if r.model == model]
        if mine:
            leftmost = min(mine, key=lambda r: r.median_ms)
            axes.annotate(model, (leftmost.median_ms, leftmost.top1), textcoords="offset points", xytext=(0, 7),
                          ha="left", fontsize=7)
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
    axes.set_title(f"latency vs accuracy: fp32, {m.image_size}x{m.image_size}, {m.threads} threads, {m.cpu}",
                   fontsize=9)
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
